//! Reading Braid's topics back in tests: the whole of `braid.readings` as
//! records (for the reference model), and `braid.speed` into a
//! [`SpeedTable`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use braid_core::agg::AggState;
use braid_core::codec::decode_message;
use braid_core::fold::GroupKey;
use braid_core::merge::{Counters, Cut, merge_window};
use braid_core::speedlog::{SpeedMessage, SpeedTable};
use braid_core::{Position, Record};
use braid_kafka::{Topics, consumer_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// A consumer assigned every partition of `topic` from the beginning.
///
/// High watermarks from the broker are not used to decide when a topic has
/// been read: tansu 0.6 answers ListOffsets with a stale high watermark
/// after idempotent produces, so readers drain until the topic is quiet.
fn assign_all(brokers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = consumer_config(brokers, "braid-testkit-reader")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Every record of `braid.readings`, in log order per partition, with its
/// position and accept time, read until the topic has been quiet for a
/// second and a half (call it once producers are done). Invalid records are
/// skipped.
pub fn read_log(brokers: &str) -> Vec<Record> {
    let consumer = assign_all(brokers, Topics::READINGS);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(1500) {
        assert!(
            Instant::now() < deadline,
            "reading braid.readings timed out"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        quiet_since = Instant::now();
        let m = m.expect("message");
        let ingest_ts = m.timestamp().to_millis().expect("timestamp");
        if let Ok(items) = decode_message(m.payload().unwrap_or_default()) {
            for (index, item) in items.into_iter().enumerate() {
                if let Ok(reading) = item {
                    out.push(Record {
                        reading,
                        ingest_ts,
                        position: Position {
                            partition: m.partition(),
                            offset: m.offset(),
                            index: index as u32,
                        },
                    });
                }
            }
        }
    }
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
    let consumer = assign_all(brokers, Topics::SPEED);
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
    table
        .windows(view, None, None, |_| true)
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
    for view in &set.views {
        let model = crate::model::reference_view(view, &set.settings, log);
        let ours = merged_view(table, &view.name);
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
