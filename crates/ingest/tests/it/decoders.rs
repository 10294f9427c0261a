//! Random and mutated bodies never panic the decoders, and every refusal
//! names its record and a field.

use braid_core::Limits;
use braid_ingest::decode::{Format, RecordRef, decode_body};
use braid_ingest::line_protocol::Precision;
use proptest::prelude::*;

const GOOD_JSON: &str = r#"[{"device_id":"a","metric":"m","ts":1000,"value":1.5,"seq":1,"tags":{"k":"v"}},{"device_id":"b","metric":"m","ts":"1970-01-01T00:00:02Z","value":-2}]"#;
const GOOD_LP: &str =
    "m,device_id=a,k=v value=1.5,other=2i 1000000000\ncpu,host=h usage=3 2000000000\n";

fn mutate(base: &str, edits: &[(prop::sample::Index, u8)]) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    for (at, byte) in edits {
        let i = at.index(b.len());
        match byte % 3 {
            0 => b[i] = *byte,
            1 => {
                b.remove(i);
            }
            _ => b.insert(i, *byte),
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

fn check(format: Format, body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(d) = decode_body(format, body, 0, &Limits::default()) {
        for r in &d.rejected {
            prop_assert!(!r.field.is_empty(), "a refusal without a field: {:?}", r);
            prop_assert!(!r.reason.is_empty());
            if let RecordRef::Line(n) = r.record {
                prop_assert!(n >= 1);
            }
        }
        for r in &d.readings {
            prop_assert!(r.value.is_finite());
            prop_assert!(!r.device_id.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn mutated_json_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let body = mutate(GOOD_JSON, &edits);
        check(Format::Json, &body)?;
        check(Format::Ndjson, &body)?;
    }

    #[test]
    fn mutated_line_protocol_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let body = mutate(GOOD_LP, &edits);
        check(Format::LineProtocol(Precision::Nanoseconds), &body)?;
    }

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        check(Format::Json, &body)?;
        check(Format::Ndjson, &body)?;
        check(Format::LineProtocol(Precision::Seconds), &body)?;
    }
}
