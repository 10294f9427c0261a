//! `scripts/bench speed` (b): the speed layer end to end from a pre-filled
//! `braid.readings` on the embedded broker (in memory, in this process),
//! beside the raw rdkafka consume rate of the same topic.
//!
//! The topic holds 500,000 readings of a simulated parking fleet of 200
//! devices (default shares of out-of-order, late, historical and duplicate
//! readings), keyed by device, 100 readings to a message, as the gateway
//! packs them. Raw consume: one consumer assigned every partition from the
//! beginning, polling until it has seen every message (payload bytes
//! touched, nothing decoded). End to end: a `braid speed` worker (default
//! views, default publish and checkpoint intervals, a fresh group and data
//! directory each run) from its start until `braid.speed` reports progress
//! at the end of every partition: decoding, folding, publishing every state
//! and its progress included; reported from the worker's start (joining
//! the consumer group included, which the raw reader, assigned its
//! partitions, does not do) and from its first message (the first
//! `Restored` on `braid.speed`). Best of 3 each, a fresh broker each run;
//! all on the same two cores as the broker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use braid_core::speedlog::SpeedMessage;
use braid_core::{Reading, ViewSet};
use braid_kafka::Topics;
use braid_kafka::drain::assign_all;
use braid_sim::{Fleet, Scenario, Shares};
use braid_speed::SpeedConfig;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

const N: usize = 500_000;
const DEVICES: usize = 200;
const PER_MESSAGE: usize = 100;
const RUNS: usize = 3;

fn readings() -> Vec<Reading> {
    let mut fleet = Fleet::new(Scenario::Parking, DEVICES, Shares::default(), 1);
    let start = 1_700_000_000_000;
    let mut out = Vec::with_capacity(N + DEVICES);
    let mut tick = 0i64;
    while out.len() < N {
        out.extend(fleet.tick(start + tick * 1000));
        tick += 1;
    }
    out.truncate(N);
    out
}

/// Reads every message of `braid.readings`: the time, and each partition's
/// end (one past its last offset).
fn raw_consume(brokers: &str, messages: usize) -> (f64, BTreeMap<i32, i64>) {
    let consumer = assign_all(brokers, Topics::READINGS).expect("a reader");
    let t = Instant::now();
    let mut ends = BTreeMap::new();
    let mut bytes = 0usize;
    let mut read = 0;
    while read < messages {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                bytes += m.payload().map_or(0, <[u8]>::len);
                ends.insert(m.partition(), m.offset() + 1);
                read += 1;
            }
            Some(Err(e)) => panic!("reading braid.readings: {e}"),
            None => panic!("braid.readings ran dry after {read} of {messages} messages"),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    (secs, ends)
}

/// Runs a worker until `braid.speed` shows progress at `ends`: the time
/// from its start, and from its first restore (once it joined the group
/// and read a first message).
async fn end_to_end(
    brokers: &str,
    set: &ViewSet,
    ends: &BTreeMap<i32, i64>,
    run: usize,
) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = SpeedConfig::new(brokers.to_string(), dir.path().to_path_buf(), set.clone());
    config.group = format!("bench-speed-{run}");
    let shutdown = CancellationToken::new();
    let reader = {
        let brokers = brokers.to_string();
        let ends = ends.clone();
        // The newest progress per partition, from a reader that skips the
        // states (their keys are not a partition number).
        tokio::task::spawn_blocking(move || {
            let consumer = assign_all(&brokers, Topics::SPEED).expect("a reader of braid.speed");
            let mut at: BTreeMap<i32, i64> = BTreeMap::new();
            let mut restores: BTreeMap<i32, u64> = BTreeMap::new();
            let mut first: Option<Instant> = None;
            loop {
                let Some(m) = consumer.poll(Duration::from_secs(60)) else {
                    panic!("braid.speed went quiet before the worker caught up");
                };
                let m = m.expect("reading braid.speed");
                if m.key().is_some_and(|k| k.iter().all(u8::is_ascii_digit)) {
                    match SpeedMessage::from_bytes(m.payload().unwrap_or_default()) {
                        Ok(SpeedMessage::Restored {
                            partition,
                            restore_id,
                            ..
                        }) => {
                            first.get_or_insert_with(Instant::now);
                            restores.insert(partition, restore_id);
                        }
                        Ok(SpeedMessage::Progress {
                            partition,
                            restore_id,
                            next_offset,
                            ..
                        }) if restores.get(&partition) == Some(&restore_id) => {
                            at.insert(partition, next_offset);
                        }
                        _ => {}
                    }
                }
                if ends.iter().all(|(p, e)| at.get(p).is_some_and(|n| n >= e)) {
                    return first.map_or(0.0, |f| f.elapsed().as_secs_f64());
                }
            }
        })
    };
    let t = Instant::now();
    let worker = tokio::spawn(braid_speed::run(config, shutdown.clone()));
    let from_first = reader.await.expect("reader");
    let secs = t.elapsed().as_secs_f64();
    shutdown.cancel();
    worker.await.expect("join").expect("worker");
    (secs, from_first)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/views.toml"))
                .expect("data/views.toml");
        let set = ViewSet::parse(&text).expect("views");
        let rs = readings();
        let mut per_device: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &rs {
            *per_device.entry(&r.device_id).or_default() += 1;
        }
        let messages: usize = per_device.values().map(|n| n.div_ceil(PER_MESSAGE)).sum();
        println!(
            "braid-speed end to end: {N} readings of {DEVICES} parking devices in {messages} messages on the embedded broker (in memory), the {} default views, best of {RUNS}",
            set.views.len()
        );
        let (mut raw, mut e2e, mut e2e_joined) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
        for run in 0..RUNS {
            // A fresh broker each run, so the reader of braid.speed sees
            // only this run's worker.
            let broker = braid_testkit::memory_broker().await;
            let brokers = broker.brokers();
            braid_testkit::produce(&brokers, &rs, PER_MESSAGE, None).await;
            let b = brokers.clone();
            let (t, ends) = tokio::task::spawn_blocking(move || raw_consume(&b, messages))
                .await
                .expect("join");
            raw = raw.min(t);
            let (all, joined) = end_to_end(&brokers, &set, &ends, run).await;
            e2e = e2e.min(all);
            e2e_joined = e2e_joined.min(joined);
        }
        println!();
        println!("| path | seconds | readings/s |");
        println!("|---|---:|---:|");
        println!("| raw rdkafka consume | {raw:.2} | {:.0} |", N as f64 / raw);
        println!(
            "| braid speed, end to end from its start (group join included) | {e2e:.2} | {:.0} |",
            N as f64 / e2e
        );
        println!(
            "| braid speed, end to end from its first message | {e2e_joined:.2} | {:.0} |",
            N as f64 / e2e_joined
        );
        println!();
        println!(
            "end to end / raw consume: {:.2}x from the start, {:.2}x from the first message (goal at least 0.5x)",
            raw / e2e,
            raw / e2e_joined
        );
    });
}
