//! The gateway's one error type, its status mapping, and the `recover` that
//! turns every rejection into a JSON error body.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Reply;

use crate::auth::AuthError;
use crate::decode::Rejected;

/// Every way a write can fail, each with one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body as a whole is not in its format.
    #[error("{0}")]
    BadBody(String),
    /// A record was refused and the request is all or nothing.
    #[error(
        "{first} ({count} record(s) refused; nothing was written; send accept_partial=true to write the valid ones)"
    )]
    Rejected {
        /// The first refused record.
        first: Rejected,
        /// How many were refused.
        count: usize,
    },
    /// The body (or its inflated form) is over the limit.
    #[error("{what} is over the limit of {limit} bytes")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A content type or encoding the gateway does not read.
    #[error("{0}")]
    Unsupported(String),
    /// The requests in flight hold the gateway's whole in-flight cap:
    /// nothing read, retry.
    #[error("{0}: retry later")]
    Busy(String),
    /// Kafka could not acknowledge in time: nothing is acknowledged, retry.
    #[error("readings not acknowledged by Kafka, retry later: {0}")]
    Unavailable(String),
    /// No token, an unknown one, a device out of scope, or over the rate.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl warp::reject::Reject for IngestError {}

impl IngestError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadBody(_) | Self::Rejected { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Auth(e) => auth_status(e),
        }
    }
}

/// The HTTP status of a refused token: 401 for who asks, 403 for what
/// they may do, 429 over the rate.
pub fn auth_status(e: &AuthError) -> StatusCode {
    match e {
        AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        e if e.is_unauthenticated() => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    }
}

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<&'a Rejected>,
}

/// The JSON reply for an error.
pub fn error_reply(e: &IngestError) -> warp::reply::Response {
    let record = match e {
        IngestError::Rejected { first, .. } => Some(first),
        _ => None,
    };
    let body = ErrorBody {
        error: e.to_string(),
        record,
    };
    let mut resp = warp::reply::with_status(warp::reply::json(&body), e.status()).into_response();
    let headers = resp.headers_mut();
    match e {
        IngestError::Unavailable(_) => {
            headers.insert(
                warp::http::header::RETRY_AFTER,
                warp::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        IngestError::Busy(_) => {
            headers.insert(
                warp::http::header::RETRY_AFTER,
                warp::http::HeaderValue::from(1),
            );
        }
        IngestError::Auth(AuthError::RateLimited { retry_after, .. }) => {
            headers.insert(
                warp::http::header::RETRY_AFTER,
                warp::http::HeaderValue::from(*retry_after),
            );
        }
        IngestError::Auth(e) if e.is_unauthenticated() => {
            headers.insert(
                warp::http::header::WWW_AUTHENTICATE,
                warp::http::HeaderValue::from_static("Bearer"),
            );
        }
        _ => {}
    }
    resp
}

/// Turns the gateway's own rejections into JSON errors and passes every
/// other one on (for servers that mount these routes beside others).
pub async fn recover_own(r: warp::Rejection) -> Result<warp::reply::Response, warp::Rejection> {
    match r.find::<IngestError>() {
        Some(e) => Ok(error_reply(e)),
        None => Err(r),
    }
}

/// Turns any rejection into a JSON error with the right status.
pub async fn recover(r: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = r.find::<IngestError>() {
        return Ok(error_reply(e));
    }
    let (status, msg) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route".to_string())
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, format!("bad query string: {e}"))
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
        )
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else {
        tracing::warn!(rejection = ?r, "unhandled rejection");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".to_string(),
        )
    };
    let body = ErrorBody {
        error: msg,
        record: None,
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), status).into_response())
}
