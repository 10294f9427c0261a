//! Fuzzes the json decoder: any input decodes or is refused, never a panic,
//! and every refusal names its record and field; every reading kept is
//! valid.
#![no_main]

use braid_core::Limits;
use braid_ingest::decode::{decode_body, Format};
#[allow(unused_imports)]
use braid_ingest::line_protocol::Precision;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = 1_700_000_000_000;
    if let Ok(d) = decode_body(Format::Json, data, now, &Limits::default()) {
        for r in &d.rejected {
            assert!(!r.field.is_empty() && !r.reason.is_empty(), "{r:?}");
        }
        for r in &d.readings {
            assert!(r.validate(now, &Limits::default()).is_ok(), "{r:?}");
        }
    }
});
