//! The JSON decoder of readings, which reads straight from the text,
//! against the plain way: parse into a `serde_json::Value`, then
//! `reading_from_json` on each element. On random bodies (reading-like
//! objects with every field of every JSON type, repeated and unknown keys,
//! arrays of them, bare scalars, and bytes dropped or inserted so some do
//! not parse) both give the same readings and the same refusals, word for
//! word.

use braid_core::codec::{MessageError, decode_message, decode_reading, reading_from_json};
use braid_core::reading::FieldError;
use braid_core::{Reading, codec::RecordError};
use proptest::prelude::*;
use serde_json::Value;

type Decoded = Result<Vec<Result<Reading, RecordError>>, MessageError>;

fn by_value(payload: &[u8]) -> Decoded {
    let value: Value = serde_json::from_slice(payload).map_err(|e| MessageError(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(index, v)| reading_from_json(v).map_err(|error| RecordError { index, error }))
        .collect())
}

fn line_by_value(text: &[u8]) -> Result<Reading, FieldError> {
    serde_json::from_slice(text)
        .map_err(|e| FieldError::new("record", format!("malformed JSON: {e}")))
        .and_then(reading_from_json)
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("\"\"".to_string()),
        "[a-z0-9-]{0,6}".prop_map(|s| format!("\"{s}\"")),
        Just("\"2024-03-01T12:00:00Z\"".to_string()),
        Just("\"2024-13-01T12:00:00Z\"".to_string()),
        Just("\"caf\\u00e9\"".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<u64>().prop_map(|u| u.to_string()),
        (-1e6f64..1e6).prop_map(|f| format!("{f:?}")),
        Just("1e300".to_string()),
        Just("5.0".to_string()),
        Just("-0".to_string()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..3).prop_map(|kv| object(&kv)),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("device_id"),
        Just("metric"),
        Just("ts"),
        Just("value"),
        Just("seq"),
        Just("tags"),
        Just("vaule"),
        Just(""),
        Just("zone"),
        Just("a"),
    ]
    .prop_map(str::to_string)
}

fn object(kv: &[(String, String)]) -> String {
    let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", fields.join(","))
}

/// Mostly well-formed readings, each field sometimes of a wrong type,
/// missing, repeated, or joined by an unknown one.
fn reading() -> impl Strategy<Value = String> {
    let field = |k: &'static str, good: BoxedStrategy<String>| {
        prop_oneof![
            6 => good.prop_map(move |v| vec![(k.to_string(), v)]),
            1 => Just(vec![]),
            1 => value().prop_map(move |v| vec![(k.to_string(), v)]),
            1 => (value(), value()).prop_map(move |(a, b)| vec![(k.to_string(), a), (k.to_string(), b)]),
        ]
    };
    let tags = prop::collection::vec(
        (
            "[a-c]{1,2}",
            prop_oneof![4 => "[a-z]{0,3}".prop_map(|s| format!("\"{s}\"")), 1 => value()],
        ),
        0..3,
    )
    .prop_map(|kv| object(&kv))
    .boxed();
    (
        field(
            "device_id",
            "[a-z0-9-]{1,8}".prop_map(|s| format!("\"{s}\"")).boxed(),
        ),
        field(
            "metric",
            "[a-z_]{1,8}".prop_map(|s| format!("\"{s}\"")).boxed(),
        ),
        field(
            "ts",
            prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                Just("\"2024-03-01T12:00:00.5Z\"".to_string())
            ]
            .boxed(),
        ),
        field(
            "value",
            (-1e9f64..1e9).prop_map(|f| format!("{f:?}")).boxed(),
        ),
        field("seq", any::<u32>().prop_map(|u| u.to_string()).boxed()),
        field("tags", tags),
        prop::collection::vec((key(), value()), 0..2),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(a, b, c, d, e, f, extra, shuffle)| {
            let mut kv: Vec<(String, String)> = [a, b, c, d, e, f, extra].concat();
            if !kv.is_empty() {
                let i = shuffle.index(kv.len());
                kv.rotate_left(i);
            }
            object(&kv)
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        4 => prop::collection::vec(prop_oneof![6 => reading(), 1 => value()], 0..4)
            .prop_map(|items| format!("[{}]", items.join(","))),
        3 => reading(),
        1 => value(),
    ];
    (
        text,
        prop::option::weighted(
            0.15,
            (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
        ),
    )
        .prop_map(|(text, mutation)| {
            let mut bytes = text.into_bytes();
            if let Some((at, byte, insert)) = mutation {
                let i = at.index(bytes.len() + 1);
                if insert || i == bytes.len() {
                    bytes.insert(i, byte);
                } else {
                    bytes.remove(i);
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn the_direct_decoder_decides_as_the_value_tree(payload in body()) {
        let ours = decode_message(&payload);
        let plain = by_value(&payload);
        prop_assert_eq!(format!("{ours:?}"), format!("{plain:?}"), "{}", String::from_utf8_lossy(&payload));
        let line = decode_reading(&payload);
        let plain_line = line_by_value(&payload);
        prop_assert_eq!(format!("{line:?}"), format!("{plain_line:?}"));
    }
}
