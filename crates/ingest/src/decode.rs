//! Request bodies into validated readings, each refusal naming its record.
//!
//! JSON bodies are one object or an array (records numbered from 0), NDJSON
//! and line protocol one record per line (numbered from 1, as editors do).
//! Every reading is checked with the core's [`Reading::validate`], so the
//! gateway, MQTT and Kafka-direct consumers refuse the same things with the
//! same words.

use braid_core::codec::{MessageError, decode_message, decode_reading};
use braid_core::{FieldError, Limits, Reading};
use serde::Serialize;

use crate::line_protocol::{Precision, parse_line};

/// How a body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A JSON object or array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// InfluxDB line protocol.
    LineProtocol(Precision),
}

/// Which record of a body an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordRef {
    /// Position in a JSON array (0 for a lone object).
    Index(usize),
    /// Line number, from 1.
    Line(usize),
}

impl std::fmt::Display for RecordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Index(i) => write!(f, "record {i}"),
            Self::Line(l) => write!(f, "line {l}"),
        }
    }
}

/// One refused record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Which record.
    #[serde(flatten)]
    pub record: RecordRef,
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Rejected {
    fn new(record: RecordRef, e: FieldError) -> Self {
        Self {
            record,
            field: e.field,
            reason: e.reason,
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}",
            self.record, self.field, self.reason
        )
    }
}

/// A body split into accepted readings and refused records.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Valid readings, in body order.
    pub readings: Vec<Reading>,
    /// Refused records, in body order.
    pub rejected: Vec<Rejected>,
}

/// Decodes and validates a body. `Err` only when the body as a whole is not
/// in the format (a JSON body that does not parse).
pub fn decode_body(
    format: Format,
    body: &[u8],
    now_ms: i64,
    limits: &Limits,
) -> Result<Decoded, MessageError> {
    let mut out = Decoded::default();
    let mut push = |record: RecordRef, r: Result<Reading, FieldError>| match r
        .and_then(|r| r.validate(now_ms, limits).map(|()| r))
    {
        Ok(r) => out.readings.push(r),
        Err(e) => out.rejected.push(Rejected::new(record, e)),
    };
    match format {
        Format::Json => {
            for (i, r) in decode_message(body)?.into_iter().enumerate() {
                push(RecordRef::Index(i), r.map_err(|e| e.error));
            }
        }
        Format::Ndjson => {
            for (n, line) in lines(body) {
                push(RecordRef::Line(n), decode_reading(line));
            }
        }
        Format::LineProtocol(precision) => {
            for (n, line) in lines(body) {
                let text = match std::str::from_utf8(line) {
                    Ok(t) => t,
                    Err(_) => {
                        push(
                            RecordRef::Line(n),
                            Err(FieldError::new("line", "is not UTF-8")),
                        );
                        continue;
                    }
                };
                if text.trim_start().starts_with('#') {
                    continue;
                }
                match parse_line(text.trim_end(), precision, now_ms) {
                    Ok(rs) => rs.into_iter().for_each(|r| push(RecordRef::Line(n), Ok(r))),
                    Err(e) => push(RecordRef::Line(n), Err(e)),
                }
            }
        }
    }
    Ok(out)
}

/// Non-blank lines with their 1-based numbers.
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_names_lines() {
        let body = b"{\"device_id\":\"a\",\"metric\":\"m\",\"ts\":1,\"value\":1}\n\n{\"device_id\":\"a\",\"metric\":\"m\",\"ts\":1}\n{oops\n";
        let d = decode_body(Format::Ndjson, body, 0, &Limits::default()).unwrap();
        assert_eq!(d.readings.len(), 1);
        assert_eq!(d.rejected.len(), 2);
        assert_eq!(
            d.rejected[0].to_string(),
            "line 3: field `value`: is missing"
        );
        assert_eq!(d.rejected[1].record, RecordRef::Line(4));
    }

    #[test]
    fn validation_applies_to_every_format() {
        let future = 10 * 3_600_000;
        let json =
            format!("[{{\"device_id\":\"a\",\"metric\":\"m\",\"ts\":{future},\"value\":1}}]");
        let d = decode_body(Format::Json, json.as_bytes(), 0, &Limits::default()).unwrap();
        assert_eq!(d.rejected[0].field, "ts");
        let lp = format!("m,device=a value=1 {future}");
        let d = decode_body(
            Format::LineProtocol(Precision::Milliseconds),
            lp.as_bytes(),
            0,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d.rejected[0].to_string().split(':').next(), Some("line 1"));
        assert!(decode_body(Format::Json, b"{", 0, &Limits::default()).is_err());
    }
}
