//! Reading Braid's topics back in tests: the whole of `braid.readings` as
//! records (for the reference model), and `braid.speed` into a
//! [`SpeedTable`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use braid_core::Record;
use braid_core::agg::AggState;
use braid_core::codec::decode_records;
use braid_core::fold::GroupKey;
use braid_core::merge::{Counters, Cut, merge_window};
use braid_core::speedlog::{SpeedKey, SpeedMessage, SpeedTable};
use braid_kafka::Topics;
use braid_kafka::drain::{assign_all, drain_topic};
use rdkafka::Message;

/// Every record of `braid.readings`, in log order per partition, with its
/// position and accept time, read until the topic has been quiet for a
/// second and a half (call it once producers are done). Invalid records are
/// skipped, as the consumers skip them.
pub fn read_log(brokers: &str) -> Vec<Record> {
    let mut out = Vec::new();
    drain_topic(
        brokers,
        Topics::READINGS,
        Duration::from_millis(1500),
        Duration::from_secs(60),
        |m| {
            let ingest_ts = m.timestamp().to_millis().expect("timestamp");
            let (records, _) = decode_records(
                m.payload().unwrap_or_default(),
                m.partition(),
                m.offset(),
                ingest_ts,
            );
            out.extend(records);
        },
    )
    .expect("reading braid.readings");
    out
}

/// One past the last offset of each partition in `log`.
pub fn log_ends(log: &[Record]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for r in log {
        let e = ends.entry(r.position.partition).or_insert(0);
        *e = (*e).max(r.position.offset + 1);
    }
    ends
}

/// Reads `braid.speed` from the beginning into a table until `done` holds
/// for it (checked whenever the topic is caught up), or panics after
/// `timeout`.
pub fn read_speed_until(
    brokers: &str,
    timeout: Duration,
    done: impl Fn(&SpeedTable) -> bool,
) -> SpeedTable {
    let consumer = assign_all(brokers, Topics::SPEED).expect("reader of braid.speed");
    let mut table = SpeedTable::default();
    let deadline = Instant::now() + timeout;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let msg = SpeedMessage::from_bytes(m.payload().unwrap_or_default())
                    .expect("speed message");
                table.apply(msg);
            }
            Some(Err(e)) => panic!("reading braid.speed: {e}"),
            None => {
                if done(&table) {
                    return table;
                }
                assert!(
                    Instant::now() < deadline,
                    "braid.speed did not reach the expected state in {timeout:?}"
                );
            }
        }
    }
}

/// Whether the table's progress reached `ends` on every partition.
pub fn caught_up(table: &SpeedTable, ends: &BTreeMap<i32, i64>) -> bool {
    ends.iter().all(|(p, &end)| {
        end == 0
            || table
                .partitions()
                .get(p)
                .and_then(|ps| ps.progress)
                .is_some_and(|(next, _)| next >= end)
    })
}

/// One view of the table merged over partitions and epochs (no batch).
pub fn merged_view(
    table: &SpeedTable,
    view: &str,
) -> BTreeMap<(i64, GroupKey), (AggState, Counters)> {
    merged_view_where(table, view, |_| true)
}

/// [`merged_view`] of the states whose keys `keep` accepts.
pub fn merged_view_where(
    table: &SpeedTable,
    view: &str,
    keep: impl Fn(&SpeedKey) -> bool,
) -> BTreeMap<(i64, GroupKey), (AggState, Counters)> {
    table
        .windows(view, None, None, keep)
        .into_iter()
        .filter_map(|(key, parts)| {
            let merged = merge_window(None, parts, &Cut::default()).expect("aligned")?;
            Some((key, (merged.state, merged.speed)))
        })
        .collect()
}

/// Asserts that the speed table, merged over partitions and epochs, equals
/// the reference model of `log` for every view of `set`: the same windows,
/// the same counters, the same state bytes.
pub fn assert_speed_matches_model(table: &SpeedTable, set: &braid_core::ViewSet, log: &[Record]) {
    assert_speed_matches_model_where(table, set, log, |_| true);
}

/// [`assert_speed_matches_model`] for the states whose keys `keep` accepts
/// (one partition's, say, against the model of that partition's records).
pub fn assert_speed_matches_model_where(
    table: &SpeedTable,
    set: &braid_core::ViewSet,
    log: &[Record],
    keep: impl Fn(&SpeedKey) -> bool + Copy,
) {
    for view in &set.views {
        let model = crate::model::reference_view(view, &set.settings, log);
        let ours = merged_view_where(table, &view.name, keep);
        assert_eq!(ours.len(), model.len(), "view {}: windows", view.name);
        for (key, want) in &model {
            let (state, counters) = ours
                .get(key)
                .unwrap_or_else(|| panic!("view {} lacks {key:?}", view.name));
            let name = &view.name;
            assert_eq!(
                counters.readings as usize,
                want.applied.len(),
                "view {name} {key:?}: readings"
            );
            assert_eq!(
                counters.duplicates_dropped, want.duplicates_dropped,
                "view {name} {key:?}: duplicates"
            );
            assert_eq!(
                counters.pending_historical, want.pending_historical,
                "view {name} {key:?}: pending"
            );
            assert_eq!(
                counters.late_readings, want.late_readings,
                "view {name} {key:?}: late"
            );
            assert_eq!(
                state.to_bytes(),
                want.state(view.parts()).to_bytes(),
                "view {name} {key:?}: state"
            );
        }
    }
}
