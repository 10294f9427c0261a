//! The JSON form of readings in `braid.readings`: one message holds one
//! reading object or an array of them, so any Kafka producer can feed Braid.
//!
//! Decoding is strict and names what is wrong: a payload that is not JSON is
//! a [`MessageError`] (the whole message goes to the dead-letter topic); an
//! element that is not a valid reading is a [`RecordError`] naming its index
//! and field. `ts` is epoch milliseconds or an RFC 3339 string. Unknown
//! fields are refused, so a typo such as `vaule` is not silently dropped.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::reading::{FieldError, Reading};
use crate::time::parse_rfc3339;

/// A payload that is not a reading or an array of readings at all.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("malformed message: {0}")]
pub struct MessageError(pub String);

/// One element of a message that is not a valid reading.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("record {index}: {error}")]
pub struct RecordError {
    /// Place of the element in the message (0 for a lone object).
    pub index: usize,
    /// The field at fault.
    pub error: FieldError,
}

const FIELDS: &str = "device_id, metric, ts, value, seq, tags";

/// Decodes a message payload into its readings, each parsed or refused on
/// its own. Field rules beyond types (lengths, finiteness, clock) are
/// [`Reading::validate`]'s.
pub fn decode_message(payload: &[u8]) -> Result<Vec<Result<Reading, RecordError>>, MessageError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| MessageError(e.to_string()))?;
    Ok(match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, v)| reading_from_json(v).map_err(|error| RecordError { index, error }))
            .collect(),
        other => vec![reading_from_json(other).map_err(|error| RecordError { index: 0, error })],
    })
}

/// The records of one message of `braid.readings`, as every consumer
/// takes them: decoded, and each reading validated against the message's
/// own accept time (so a replay accepts and refuses exactly the same);
/// the refused ones by index with the reason (the whole message, index 0,
/// when it is not JSON at all).
pub fn decode_records(
    payload: &[u8],
    partition: i32,
    offset: i64,
    ingest_ts: i64,
) -> (Vec<crate::Record>, Vec<(u32, String)>) {
    let mut records = Vec::new();
    let mut refused = Vec::new();
    match decode_message(payload) {
        Err(e) => refused.push((0, e.to_string())),
        Ok(items) => {
            for (index, item) in items.into_iter().enumerate() {
                let index = index as u32;
                match item {
                    Err(e) => refused.push((index, e.to_string())),
                    Ok(reading) => match reading.validate(ingest_ts, &crate::Limits::default()) {
                        Err(e) => refused.push((index, format!("record {index}: {e}"))),
                        Ok(()) => records.push(crate::Record {
                            reading,
                            ingest_ts,
                            position: crate::Position {
                                partition,
                                offset,
                                index,
                            },
                        }),
                    },
                }
            }
        }
    }
    (records, refused)
}

/// Encodes readings as one message: a JSON array, `ts` in epoch ms.
pub fn encode_message(readings: &[Reading]) -> Vec<u8> {
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_vec(readings).unwrap_or_default()
}

/// Builds a reading from one JSON value, naming the first field at fault.
pub fn reading_from_json(value: Value) -> Result<Reading, FieldError> {
    let Value::Object(mut obj) = value else {
        return Err(FieldError::new("record", "expected a JSON object"));
    };
    let device_id = take_string(&mut obj, "device_id")?;
    let metric = take_string(&mut obj, "metric")?;
    let ts = match obj.remove("ts") {
        None | Some(Value::Null) => return Err(FieldError::new("ts", "is missing")),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| FieldError::new("ts", "must be integer epoch milliseconds"))?,
        Some(Value::String(s)) => parse_rfc3339(&s)
            .ok_or_else(|| FieldError::new("ts", format!("`{s}` is not an RFC 3339 timestamp")))?,
        Some(_) => {
            return Err(FieldError::new(
                "ts",
                "must be epoch milliseconds or an RFC 3339 string",
            ));
        }
    };
    let value = match obj.remove("value") {
        None | Some(Value::Null) => return Err(FieldError::new("value", "is missing")),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| FieldError::new("value", "must be a finite number"))?,
        Some(_) => return Err(FieldError::new("value", "must be a number")),
    };
    let seq = match obj.remove("seq") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| FieldError::new("seq", "must be a non-negative integer"))?,
        ),
        Some(_) => return Err(FieldError::new("seq", "must be a non-negative integer")),
    };
    let tags = match obj.remove("tags") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(t)) => t
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                _ => Err(FieldError::new(format!("tags.{k}"), "must be a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(FieldError::new("tags", "must be an object of strings")),
    };
    if let Some(unknown) = obj.keys().next() {
        let name = if unknown.is_empty() {
            "\"\"".to_string()
        } else {
            unknown.clone()
        };
        return Err(FieldError::new(
            name,
            format!("is not a reading field (expected {FIELDS})"),
        ));
    }
    Ok(Reading {
        device_id,
        metric,
        ts,
        value,
        seq,
        tags,
    })
}

fn take_string(obj: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(FieldError::new(field, "is missing")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FieldError::new(field, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_arrays_decode() {
        let one = br#"{"device_id":"a","metric":"m","ts":5,"value":1.5}"#;
        let got = decode_message(one).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap().ts, 5);

        let many = br#"[{"device_id":"a","metric":"m","ts":"1970-01-01T00:00:01Z","value":2,"seq":7,"tags":{"zone":"n"}},
                        {"device_id":"a","metric":"m","ts":5,"value":"x"}]"#;
        let got = decode_message(many).unwrap();
        let first = got[0].as_ref().unwrap();
        assert_eq!(
            (first.ts, first.seq, first.tags["zone"].as_str()),
            (1000, Some(7), "n")
        );
        let err = got[1].as_ref().unwrap_err();
        assert_eq!((err.index, err.error.field.as_str()), (1, "value"));
        assert_eq!(err.to_string(), "record 1: field `value`: must be a number");
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"metric":"m","ts":5,"value":1}"#, "device_id"),
            (
                br#"{"device_id":3,"metric":"m","ts":5,"value":1}"#,
                "device_id",
            ),
            (
                br#"{"device_id":"a","metric":"m","ts":5.5,"value":1}"#,
                "ts",
            ),
            (
                br#"{"device_id":"a","metric":"m","ts":"yesterday","value":1}"#,
                "ts",
            ),
            (
                br#"{"device_id":"a","metric":"m","ts":5,"value":1,"seq":-1}"#,
                "seq",
            ),
            (
                br#"{"device_id":"a","metric":"m","ts":5,"value":1,"vaule":2}"#,
                "vaule",
            ),
            (
                br#"{"device_id":"a","metric":"m","ts":5,"value":1,"tags":{"k":1}}"#,
                "tags.k",
            ),
            (br#"7"#, "record"),
        ];
        for (payload, field) in cases {
            let got = decode_message(payload).unwrap();
            assert_eq!(got[0].as_ref().unwrap_err().error.field, *field);
        }
        assert!(decode_message(b"{not json").is_err());
    }

    #[test]
    fn encoding_round_trips() {
        let r = Reading {
            device_id: "d".into(),
            metric: "m".into(),
            ts: -5,
            value: -0.0,
            seq: Some(u64::MAX),
            tags: [("k".to_string(), "v".to_string())].into(),
        };
        let back = decode_message(&encode_message(std::slice::from_ref(&r))).unwrap();
        let back = back[0].as_ref().unwrap();
        assert_eq!(back, &r);
        assert!(back.value.is_sign_negative());
    }
}
