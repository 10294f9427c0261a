//! Random logs (several partitions, out-of-order event times, outdated and
//! historical arrivals, duplicates): the core's incremental per-partition
//! fold gives, for every view, window and group, the same counters and the
//! same state bytes as the reference model's literal recomputation.

use std::collections::BTreeMap;

use braid_core::fold::{PartitionFolder, ViewTable, fold_into};
use braid_core::{Position, Reading, Record, ViewSet};
use braid_testkit::model::reference_view;
use proptest::prelude::*;

const VIEWS: &str = r#"
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

#[derive(Clone, Debug)]
struct Event {
    partition: i32,
    device: u8,
    metric: bool,
    ts: i64,
    lag: i64,
    value: i16,
    zone: Option<u8>,
    duplicate_of: Option<prop::sample::Index>,
}

fn event() -> impl Strategy<Value = Event> {
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
fn log(events: &[Event]) -> Vec<Record> {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn incremental_fold_equals_the_model(events in prop::collection::vec(event(), 0..60)) {
        let set = ViewSet::parse(VIEWS).unwrap();
        let records = log(&events);
        let mut table = ViewTable::new();
        for p in 0..3 {
            let mut folder = PartitionFolder::new(&set.settings);
            fold_into(&mut table, &mut folder, &set.views, records.iter().filter(|r| r.position.partition == p));
        }
        for (vi, view) in set.views.iter().enumerate() {
            let model = reference_view(view, &set.settings, &records);
            let ours: BTreeMap<_, _> = table
                .iter()
                .filter(|((v, _, _), _)| *v == vi)
                .map(|((_, start, group), sc)| ((*start, group.clone()), sc))
                .collect();
            prop_assert_eq!(ours.len(), model.len(), "view {}: window count", view.name);
            for (key, want) in &model {
                let (state, counters) = ours.get(key).expect("window present");
                prop_assert_eq!(counters.readings as usize, want.applied.len(), "view {} {:?}", view.name, key);
                prop_assert_eq!(counters.late_readings, want.late_readings, "late, view {} {:?}", view.name, key);
                prop_assert_eq!(counters.pending_historical, want.pending_historical);
                prop_assert_eq!(counters.duplicates_dropped, want.duplicates_dropped);
                prop_assert_eq!(state.to_bytes(), want.state(view.parts()).to_bytes());
            }
        }
    }
}
