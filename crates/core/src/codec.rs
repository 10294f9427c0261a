//! The JSON form of readings in `braid.readings`: one message holds one
//! reading object or an array of them, so any Kafka producer can feed Braid.
//!
//! Decoding is strict and names what is wrong: a payload that is not JSON is
//! a [`MessageError`] (the whole message goes to the dead-letter topic); an
//! element that is not a valid reading is a [`RecordError`] naming its index
//! and field. `ts` is epoch milliseconds or an RFC 3339 string. Unknown
//! fields are refused, so a typo such as `vaule` is not silently dropped.

use std::collections::BTreeMap;

use serde_json::Value;
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
/// [`Reading::validate`]'s. Decoded straight from the text, without a
/// `serde_json::Value` tree in between, deciding exactly as
/// [`reading_from_json`] does on the parsed value.
pub fn decode_message(payload: &[u8]) -> Result<Vec<Result<Reading, RecordError>>, MessageError> {
    let Message(items) =
        serde_json::from_slice(payload).map_err(|e| MessageError(e.to_string()))?;
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(index, r)| r.map_err(|error| RecordError { index, error }))
        .collect())
}

/// Decodes one JSON text as one reading (an NDJSON line, say); the text not
/// being JSON is refused as field `record`.
pub fn decode_reading(text: &[u8]) -> Result<Reading, FieldError> {
    match serde_json::from_slice::<Item>(text) {
        Ok(Item(r)) => r,
        Err(e) => Err(FieldError::new("record", format!("malformed JSON: {e}"))),
    }
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
    let Value::Object(obj) = value else {
        return Err(not_an_object());
    };
    let mut fields = Fields::default();
    for (key, v) in obj {
        match Key::of(&key) {
            Key::Tags => {
                fields.tags = Some(match v {
                    Value::Null => Tags::Null,
                    Value::Object(t) => {
                        Tags::Map(t.into_iter().map(|(k, v)| (k, Scalar::of(v))).collect())
                    }
                    _ => Tags::Other,
                });
            }
            k => fields.set(k, key, Scalar::of(v)),
        }
    }
    fields.reading()
}

fn not_an_object() -> FieldError {
    FieldError::new("record", "expected a JSON object")
}

/// A reading field's JSON value, as far as the rules look at it.
enum Scalar {
    Null,
    Str(String),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    F64(f64),
    /// A boolean, an array or an object.
    Other,
}

impl Scalar {
    fn of(v: Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::String(s) => Self::Str(s),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Self::U64(u),
                (None, Some(i)) => Self::I64(i),
                _ => Self::F64(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => Self::Other,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::U64(u) => i64::try_from(u).ok(),
            Self::I64(i) => Some(i),
            _ => None,
        }
    }
}

enum Tags {
    Null,
    Map(BTreeMap<String, Scalar>),
    Other,
}

enum Key {
    DeviceId,
    Metric,
    Ts,
    Value,
    Seq,
    Tags,
    Unknown,
}

impl Key {
    fn of(name: &str) -> Self {
        match name {
            "device_id" => Self::DeviceId,
            "metric" => Self::Metric,
            "ts" => Self::Ts,
            "value" => Self::Value,
            "seq" => Self::Seq,
            "tags" => Self::Tags,
            _ => Self::Unknown,
        }
    }
}

/// The fields of one JSON object (the last of a repeated key), and the
/// first unknown key in byte order: what the rules decide on.
#[derive(Default)]
struct Fields {
    device_id: Option<Scalar>,
    metric: Option<Scalar>,
    ts: Option<Scalar>,
    value: Option<Scalar>,
    seq: Option<Scalar>,
    tags: Option<Tags>,
    unknown: Option<String>,
}

impl Fields {
    fn set(&mut self, key: Key, name: impl Into<String>, v: Scalar) {
        let slot = match key {
            Key::DeviceId => &mut self.device_id,
            Key::Metric => &mut self.metric,
            Key::Ts => &mut self.ts,
            Key::Value => &mut self.value,
            Key::Seq => &mut self.seq,
            Key::Tags => unreachable!("tags are set on their own"),
            Key::Unknown => {
                let name = name.into();
                if self.unknown.as_ref().is_none_or(|u| name < *u) {
                    self.unknown = Some(name);
                }
                return;
            }
        };
        *slot = Some(v);
    }

    /// The reading, or the first field at fault in the order device_id,
    /// metric, ts, value, seq, tags, unknown fields.
    fn reading(self) -> Result<Reading, FieldError> {
        let device_id = string(self.device_id, "device_id")?;
        let metric = string(self.metric, "metric")?;
        let ts = match self.ts {
            None | Some(Scalar::Null) => return Err(FieldError::new("ts", "is missing")),
            Some(Scalar::Str(s)) => parse_rfc3339(&s).ok_or_else(|| {
                FieldError::new("ts", format!("`{s}` is not an RFC 3339 timestamp"))
            })?,
            Some(Scalar::Other) => {
                return Err(FieldError::new(
                    "ts",
                    "must be epoch milliseconds or an RFC 3339 string",
                ));
            }
            Some(n) => n
                .as_i64()
                .ok_or_else(|| FieldError::new("ts", "must be integer epoch milliseconds"))?,
        };
        let value = match self.value {
            None | Some(Scalar::Null) => return Err(FieldError::new("value", "is missing")),
            Some(Scalar::U64(u)) => u as f64,
            Some(Scalar::I64(i)) => i as f64,
            Some(Scalar::F64(f)) => f,
            Some(_) => return Err(FieldError::new("value", "must be a number")),
        };
        let seq = match self.seq {
            None | Some(Scalar::Null) => None,
            Some(Scalar::U64(u)) => Some(u),
            Some(_) => return Err(FieldError::new("seq", "must be a non-negative integer")),
        };
        let tags = match self.tags {
            None | Some(Tags::Null) => BTreeMap::new(),
            Some(Tags::Map(t)) => t
                .into_iter()
                .map(|(k, v)| match v {
                    Scalar::Str(s) => Ok((k, s)),
                    _ => Err(FieldError::new(format!("tags.{k}"), "must be a string")),
                })
                .collect::<Result<_, _>>()?,
            Some(Tags::Other) => {
                return Err(FieldError::new("tags", "must be an object of strings"));
            }
        };
        if let Some(unknown) = self.unknown {
            let name = if unknown.is_empty() {
                "\"\"".to_string()
            } else {
                unknown
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
}

fn string(v: Option<Scalar>, field: &str) -> Result<String, FieldError> {
    match v {
        None | Some(Scalar::Null) => Err(FieldError::new(field, "is missing")),
        Some(Scalar::Str(s)) => Ok(s),
        Some(_) => Err(FieldError::new(field, "must be a string")),
    }
}

/// Straight from the text: the same [`Fields`], deserialized without a
/// `Value` tree.
mod direct {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    use super::{Fields, Key, Scalar, Tags, not_an_object};
    use crate::reading::{FieldError, Reading};

    macro_rules! scalars {
        ($value:ty, $other:expr) => {
            fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
                Ok($other)
            }
            fn visit_unit<E>(self) -> Result<$value, E> {
                Ok(Self::null())
            }
            fn visit_none<E>(self) -> Result<$value, E> {
                Ok(Self::null())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<$value, A::Error> {
                drain_seq(seq)?;
                Ok($other)
            }
        };
    }

    /// Strings and numbers, all taken as one value.
    macro_rules! leaves {
        ($value:ty, $leaf:expr) => {
            fn visit_str<E>(self, _: &str) -> Result<$value, E> {
                Ok($leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
                Ok($leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
                Ok($leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
                Ok($leaf)
            }
        };
    }

    /// A whole message: an array of readings, or one.
    pub(super) struct Message(pub(super) Vec<Result<Reading, FieldError>>);

    /// One element: a reading, or the first field at fault.
    pub(super) struct Item(pub(super) Result<Reading, FieldError>);

    fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(())
    }

    /// Any JSON value, read and dropped, its strings checked as a `Value`
    /// would (`IgnoredAny` would skip a string without checking its
    /// UTF-8, and take a body the plain parse refuses).
    struct Skip;

    impl<'de> Deserialize<'de> for Skip {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl V {
                fn null() -> Skip {
                    Skip
                }
            }
            impl<'de> Visitor<'de> for V {
                type Value = Skip;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                scalars!(Skip, Skip);
                leaves!(Skip, Skip);
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
                    drain_map(map)?;
                    Ok(Skip)
                }
            }
            d.deserialize_any(V)
        }
    }

    fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(())
    }

    fn fields<'de, A: MapAccess<'de>>(mut map: A) -> Result<Result<Reading, FieldError>, A::Error> {
        let mut f = Fields::default();
        while let Some(Name(key, name)) = map.next_key::<Name>()? {
            match key {
                Key::Tags => f.tags = Some(map.next_value::<Tags>()?),
                k => {
                    let v = map.next_value::<Scalar>()?;
                    f.set(k, name, v);
                }
            }
        }
        Ok(f.reading())
    }

    /// A key, and its text when unknown (the only one kept).
    struct Name(Key, String);

    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Name;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_str<E>(self, v: &str) -> Result<Name, E> {
                    Ok(match Key::of(v) {
                        Key::Unknown => Name(Key::Unknown, v.to_owned()),
                        k => Name(k, String::new()),
                    })
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl V {
                fn null() -> Scalar {
                    Scalar::Null
                }
            }
            impl<'de> Visitor<'de> for V {
                type Value = Scalar;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                scalars!(Scalar, Scalar::Other);
                fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar::Str(v.to_owned()))
                }
                fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                    Ok(Scalar::Str(v))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                    Ok(Scalar::U64(v))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                    Ok(if v >= 0 {
                        Scalar::U64(v as u64)
                    } else {
                        Scalar::I64(v)
                    })
                }
                fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                    Ok(Scalar::F64(v))
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
                    drain_map(map)?;
                    Ok(Scalar::Other)
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'de> Deserialize<'de> for Tags {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl V {
                fn null() -> Tags {
                    Tags::Null
                }
            }
            impl<'de> Visitor<'de> for V {
                type Value = Tags;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                scalars!(Tags, Tags::Other);
                leaves!(Tags, Tags::Other);
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
                    let mut t = BTreeMap::new();
                    while let Some((k, v)) = map.next_entry::<String, Scalar>()? {
                        t.insert(k, v);
                    }
                    Ok(Tags::Map(t))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl V {
                fn null() -> Item {
                    Item(Err(not_an_object()))
                }
            }
            impl<'de> Visitor<'de> for V {
                type Value = Item;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a reading")
                }
                scalars!(Item, Item(Err(not_an_object())));
                leaves!(Item, Self::null());
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item, A::Error> {
                    Ok(Item(fields(map)?))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'de> Deserialize<'de> for Message {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl V {
                fn null() -> Message {
                    Message(vec![Err(not_an_object())])
                }
            }
            impl<'de> Visitor<'de> for V {
                type Value = Message;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a reading or an array of readings")
                }
                fn visit_bool<E>(self, _: bool) -> Result<Message, E> {
                    Ok(Self::null())
                }
                fn visit_unit<E>(self) -> Result<Message, E> {
                    Ok(Self::null())
                }
                fn visit_none<E>(self) -> Result<Message, E> {
                    Ok(Self::null())
                }
                leaves!(Message, Self::null());
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Message, A::Error> {
                    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                    while let Some(Item(r)) = seq.next_element::<Item>()? {
                        items.push(r);
                    }
                    Ok(Message(items))
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Message, A::Error> {
                    Ok(Message(vec![fields(map)?]))
                }
            }
            d.deserialize_any(V)
        }
    }
}

use direct::{Item, Message};

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
