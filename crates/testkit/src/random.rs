//! Random logs for property tests: several partitions, out-of-order event
//! times, on-time, outdated and historical arrivals, and duplicates that
//! repeat an earlier reading of the same partition, accepted later.

use std::collections::BTreeMap;

use braid_core::{Position, Reading, Record};
use proptest::prelude::*;

/// Views that exercise every aggregate, hopping windows, tag groups and
/// per-view lateness bounds, at test-sized durations.
pub const VIEWS: &str = r#"
[defaults]
current = "10s"
outdated = "60s"
max_out_of_orderness = "3s"
dedup_horizon = "40s"

[[views]]
name = "by_device"
window = "10s"
group_by = ["device_id"]
aggregates = ["count", "sum", "min", "max", "stddev", "quantiles"]

[[views]]
name = "hopping_by_zone"
metrics = ["t"]
window = "20s"
hop = "5s"
group_by = ["zone", "metric"]
aggregates = ["mean", "distinct_devices"]
outdated = "30s"

[[views]]
name = "all"
window = "30s"
aggregates = ["count"]
current = "0ms"
outdated = "15s"
"#;

/// One generated event.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub struct Event {
    pub partition: i32,
    pub device: u8,
    pub metric: bool,
    pub ts: i64,
    pub lag: i64,
    pub value: i16,
    pub zone: Option<u8>,
    pub duplicate_of: Option<prop::sample::Index>,
}

/// Events of the generated logs.
pub fn event() -> impl Strategy<Value = Event> {
    (
        0i32..3,
        0u8..4,
        any::<bool>(),
        0i64..120_000,
        prop_oneof![4 => 0i64..10_000, 2 => 10_000i64..60_000, 1 => 60_000i64..200_000],
        any::<i16>(),
        prop::option::of(0u8..2),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
    )
        .prop_map(
            |(partition, device, metric, ts, lag, value, zone, duplicate_of)| Event {
                partition,
                device,
                metric,
                ts,
                lag,
                value,
                zone,
                duplicate_of,
            },
        )
}

/// Builds the log: ingest time runs forward with jitter; a duplicate repeats
/// an earlier reading of the same partition, accepted later.
pub fn log(events: &[Event]) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let offset = offsets.entry(e.partition).or_insert(0);
        let ingest_ts = e.ts + e.lag + i as i64 * 50;
        let earlier: Vec<&Record> = out
            .iter()
            .filter(|r| r.position.partition == e.partition)
            .collect();
        let reading = match (&e.duplicate_of, earlier.is_empty()) {
            (Some(ix), false) => earlier[ix.index(earlier.len())].reading.clone(),
            _ => Reading {
                device_id: format!("dev{}", e.device),
                metric: if e.metric { "t".into() } else { "h".into() },
                ts: e.ts,
                value: f64::from(e.value) / 8.0,
                seq: Some(i as u64 % 7),
                tags: e
                    .zone
                    .map(|z| [("zone".to_string(), format!("z{z}"))].into())
                    .unwrap_or_default(),
            },
        };
        out.push(Record {
            reading,
            ingest_ts,
            position: Position {
                partition: e.partition,
                offset: *offset,
                index: 0,
            },
        });
        *offset += 1;
    }
    out
}
