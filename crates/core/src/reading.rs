//! The reading: what a device says, and what Braid adds to it.
//!
//! A [`Reading`] is validated once, by [`Reading::validate`], wherever it
//! enters: the HTTP gateway, MQTT, and consumers of Kafka-direct messages all
//! make the same accept-or-reject decision with the same message. A
//! [`Record`] is a reading plus what Braid knows about it: when it was
//! accepted (`ingest_ts`, the Kafka message timestamp) and where it sits in
//! the log (`partition`, `offset`, `index`). Every later decision (window,
//! lateness class, duplicate) is a function of a record's fields alone, so a
//! replay decides the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 128;
/// Longest metric name, in bytes.
pub const MAX_METRIC_BYTES: usize = 64;
/// Most tags on one reading.
pub const MAX_TAGS: usize = 16;
/// Longest tag key or value, in bytes.
pub const MAX_TAG_BYTES: usize = 128;

/// One sensor reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The device, 1..=128 bytes of UTF-8 without control characters.
    pub device_id: String,
    /// What was measured, 1..=64 bytes.
    pub metric: String,
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub ts: i64,
    /// The measured value, finite.
    pub value: f64,
    /// The device's own counter, used to tell duplicates from repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// A few string pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Where a record sits in `braid.readings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset of the message.
    pub offset: i64,
    /// Place of the reading inside a message that carries several.
    pub index: u32,
}

/// A reading as Braid stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The reading.
    pub reading: Reading,
    /// When Braid accepted it (the Kafka message timestamp), epoch ms.
    pub ingest_ts: i64,
    /// Its place in the log.
    pub position: Position,
}

/// Limits that depend on the deployment rather than the data model.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How far ahead of the accepting clock an event time may be, ms.
    pub max_future_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_future_ms: 3_600_000,
        }
    }
}

/// Why a reading was refused: the field at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldError {
    /// The field, as named in the JSON form.
    pub field: String,
    /// What is wrong, in words a device owner can act on.
    pub reason: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn check_id(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(FieldError::new(
            field,
            format!("is {} bytes long, at most {max} allowed", s.len()),
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            format!("contains the control character U+{:04X}", u32::from(c)),
        ));
    }
    Ok(())
}

impl Reading {
    /// Checks the data model's rules; `now_ms` is the accepting clock.
    pub fn validate(&self, now_ms: i64, limits: &Limits) -> Result<(), FieldError> {
        check_id("device_id", &self.device_id, MAX_DEVICE_ID_BYTES)?;
        check_id("metric", &self.metric, MAX_METRIC_BYTES)?;
        if !self.value.is_finite() {
            return Err(FieldError::new("value", "must be a finite number"));
        }
        if self.ts > now_ms.saturating_add(limits.max_future_ms) {
            return Err(FieldError::new(
                "ts",
                format!(
                    "is {} ahead of the clock, at most {} allowed",
                    crate::time::format_duration(self.ts - now_ms),
                    crate::time::format_duration(limits.max_future_ms)
                ),
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(FieldError::new(
                "tags",
                format!(
                    "has {} entries, at most {MAX_TAGS} allowed",
                    self.tags.len()
                ),
            ));
        }
        for (k, v) in &self.tags {
            check_id("tags", k, MAX_TAG_BYTES)?;
            if v.len() > MAX_TAG_BYTES || v.chars().any(char::is_control) {
                return Err(FieldError::new(
                    format!("tags.{k}"),
                    format!("must be at most {MAX_TAG_BYTES} bytes without control characters"),
                ));
            }
        }
        Ok(())
    }

    /// The value of a group key: `device_id`, `metric`, or a tag name.
    pub fn key_value(&self, key: &str) -> Option<&str> {
        match key {
            "device_id" => Some(&self.device_id),
            "metric" => Some(&self.metric),
            tag => self.tags.get(tag).map(String::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn reading() -> Reading {
        Reading {
            device_id: "car-park-1".into(),
            metric: "occupancy".into(),
            ts: 1_000,
            value: 12.0,
            seq: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn validation_names_the_field() {
        let limits = Limits::default();
        assert_eq!(reading().validate(0, &limits), Ok(()));
        let cases: Vec<(Reading, &str)> = vec![
            (
                Reading {
                    device_id: String::new(),
                    ..reading()
                },
                "device_id",
            ),
            (
                Reading {
                    device_id: "a".repeat(129),
                    ..reading()
                },
                "device_id",
            ),
            (
                Reading {
                    device_id: "a\u{7}b".into(),
                    ..reading()
                },
                "device_id",
            ),
            (
                Reading {
                    metric: "m".repeat(65),
                    ..reading()
                },
                "metric",
            ),
            (
                Reading {
                    value: f64::NAN,
                    ..reading()
                },
                "value",
            ),
            (
                Reading {
                    value: f64::NEG_INFINITY,
                    ..reading()
                },
                "value",
            ),
            (
                Reading {
                    ts: 3_600_001 + 1_000,
                    ..reading()
                },
                "ts",
            ),
        ];
        for (r, field) in cases {
            let err = r.validate(1_000, &limits).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }
}
