//! What the ingest routes do: read the body under its caps, decode and
//! validate, write to Kafka, and answer only after Kafka acknowledged.

use std::io::Read;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use futures::{Stream, StreamExt};
use warp::http::StatusCode;
use warp::reply::Reply;

use super::Gateway;
use super::errors::IngestError;
use super::models::{ReadingsQuery, WriteAnswer, WriteQuery};
use crate::auth::{Access, TokenEntry, Tokens};
use crate::decode::{Format, decode_body};
use crate::line_protocol::Precision;

/// Headers the handlers read.
#[derive(Debug, Default)]
pub struct BodyHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Length`.
    pub content_length: Option<u64>,
    /// `Authorization`.
    pub authorization: Option<String>,
}

/// The token a request writes with, when the gateway has tokens: checked,
/// with its write access, before the body is read.
fn authorize(headers: &BodyHeaders, gw: &Gateway) -> Result<Option<Arc<TokenEntry>>, IngestError> {
    match &gw.config.tokens {
        None => Ok(None),
        Some(tokens) => tokens
            .authenticate(headers.authorization.as_deref())
            .and_then(|t| Tokens::check_access(&t, Access::Write).map(|()| Some(t)))
            .map_err(IngestError::Auth),
    }
}

/// `POST /v1/readings`.
pub async fn readings(
    query: ReadingsQuery,
    headers: BodyHeaders,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    gw: Arc<Gateway>,
) -> Result<warp::reply::Response, warp::Rejection> {
    let _held = gw.metrics.begin();
    let answer = async {
        let token = authorize(&headers, &gw)?;
        let format = json_format(headers.content_type.as_deref())?;
        let _room = gw.room(&headers)?;
        let body = read_body(body, &headers, &gw).await?;
        write(format, &body, query.accept_partial, false, token, &gw).await
    }
    .await;
    gw.metrics.answered(&answer);
    answer.map_err(warp::reject::custom)
}

/// `POST /v1/write` (and InfluxDB's `/write`, `/api/v2/write`).
pub async fn line_protocol(
    query: WriteQuery,
    headers: BodyHeaders,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    gw: Arc<Gateway>,
) -> Result<warp::reply::Response, warp::Rejection> {
    let _held = gw.metrics.begin();
    let answer = async {
        let token = authorize(&headers, &gw)?;
        let precision = match query.precision.as_deref() {
            None | Some("") => Precision::default(),
            Some(p) => Precision::parse(p).ok_or_else(|| {
                IngestError::BadBody(format!("precision `{p}` is not one of ns, us, ms, s"))
            })?,
        };
        let _room = gw.room(&headers)?;
        let body = read_body(body, &headers, &gw).await?;
        write(
            Format::LineProtocol(precision),
            &body,
            query.accept_partial,
            true,
            token,
            &gw,
        )
        .await
    }
    .await;
    gw.metrics.answered(&answer);
    answer.map_err(warp::reject::custom)
}

fn json_format(content_type: Option<&str>) -> Result<Format, IngestError> {
    let essence = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match essence.as_str() {
        "" | "application/json" => Ok(Format::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(Format::Ndjson),
        other => Err(IngestError::Unsupported(format!(
            "content type `{other}`: send application/json or application/x-ndjson"
        ))),
    }
}

/// Reads the body, refusing before reading past the limit, and inflates
/// gzip under its own cap.
async fn read_body(
    mut body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    headers: &BodyHeaders,
    gw: &Gateway,
) -> Result<bytes::Bytes, IngestError> {
    let limit = gw.config.max_body_bytes;
    let too_large = || IngestError::TooLarge {
        what: "the body",
        limit,
    };
    if headers.content_length.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut buf =
        BytesMut::with_capacity(headers.content_length.unwrap_or(0).min(limit as u64) as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| IngestError::BadBody(format!("reading the body: {e}")))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(too_large());
        }
        buf.put(chunk);
    }
    let encoding = headers
        .content_encoding
        .as_deref()
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(buf.freeze()),
        "gzip" | "x-gzip" => {
            let cap = gw.config.max_inflated_bytes;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&buf[..])
                .take(cap as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| IngestError::BadBody(format!("bad gzip body: {e}")))?;
            if out.len() > cap {
                return Err(IngestError::TooLarge {
                    what: "the inflated body",
                    limit: cap,
                });
            }
            Ok(out.into())
        }
        other => Err(IngestError::Unsupported(format!(
            "content encoding `{other}`: send identity or gzip"
        ))),
    }
}

async fn write(
    format: Format,
    body: &[u8],
    accept_partial: bool,
    no_content_on_success: bool,
    token: Option<Arc<TokenEntry>>,
    gw: &Gateway,
) -> Result<warp::reply::Response, IngestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::BadBody(
            "the body is empty: send at least one reading".into(),
        ));
    }
    let now = (gw.clock)();
    let decoded = decode_body(format, body, now, &gw.config.limits)
        .map_err(|e| IngestError::BadBody(e.to_string()))?;
    gw.metrics.refused(&decoded.rejected);
    if !decoded.rejected.is_empty() && !accept_partial {
        let count = decoded.rejected.len();
        let first = decoded
            .rejected
            .into_iter()
            .next()
            .ok_or_else(|| IngestError::BadBody("refused".into()))?;
        return Err(IngestError::Rejected { first, count });
    }
    if let (Some(t), Some(tokens)) = (token, &gw.config.tokens) {
        Tokens::check_scope(&t, decoded.readings.iter().map(|r| r.device_id.as_str()))
            .and_then(|()| tokens.take(&t, decoded.readings.len(), std::time::Instant::now()))
            .map_err(IngestError::Auth)?;
    }
    if !decoded.readings.is_empty() {
        gw.sink
            .send(&decoded.readings, now)
            .await
            .map_err(|e| IngestError::Unavailable(e.to_string()))?;
        gw.metrics.accepted(decoded.readings.len());
    }
    let answer = WriteAnswer {
        accepted: decoded.readings.len(),
        rejected: decoded.rejected,
    };
    let status = if !answer.rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else if no_content_on_success {
        return Ok(StatusCode::NO_CONTENT.into_response());
    } else {
        StatusCode::OK
    };
    Ok(warp::reply::with_status(warp::reply::json(&answer), status).into_response())
}
