//! Two `braid speed` processes in one consumer group against the embedded
//! broker; one is killed with SIGKILL mid-stream. After the rebalance the
//! survivor restores the dead one's partitions from their checkpoints, and
//! what `braid.speed` says, merged, equals the reference model of the log:
//! nothing lost, nothing counted twice.
//!
//! Against tansu 0.6 the survivor needs `braid_kafka::rebalance`'s
//! workaround: when the dead member's session expires the group settles
//! with the survivor alone but hands it only its old partitions, and it
//! leaves and rejoins to get the rest (the warning is in its log, `b.log`
//! in the data directory, kept when the test fails).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use braid_core::{Reading, ViewSet};
use braid_testkit::logs::{
    assert_speed_matches_model, caught_up, log_ends, read_log, read_speed_until,
};
use braid_testkit::{init_tracing, memory_broker, produce};

const VIEWS: &str = "data/views.toml";

fn speed(brokers: &str, data_dir: &std::path::Path, name: &str) -> Child {
    let log = std::fs::File::create(data_dir.join(format!("{name}.log"))).expect("log");
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args([
            "speed",
            "--checkpoint-interval",
            "500ms",
            "--publish-interval",
            "50ms",
        ])
        .args(["--brokers", brokers, "--views", VIEWS])
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("BRAID_LOG", "info,braid_kafka=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("braid speed starts")
}

fn batch(round: u64, n: usize, now: i64) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            device_id: format!("probe-{}", i % 17),
            metric: if i % 2 == 0 {
                "soil_moisture".into()
            } else {
                "power_w".into()
            },
            ts: now - (i as i64 * 7919) % 900_000,
            value: (i % 100) as f64,
            seq: Some(round * 100_000 + i as u64),
            tags: [("field".to_string(), format!("f{}", i % 3))].into(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_and_counts_nothing_twice() {
    init_tracing();
    let broker = memory_broker().await;
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let now = 1_700_000_000_000;
    let started = std::time::Instant::now();
    let mut a = speed(&brokers, &dir, "a");
    let mut b = speed(&brokers, &dir, "b");
    produce(&brokers, &batch(1, 1200, now), 20, Some(now)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    a.kill().expect("kill -9");
    let _ = a.wait();
    let killed = started.elapsed();
    produce(
        &brokers,
        &batch(2, 1200, now + 60_000),
        20,
        Some(now + 61_000),
    )
    .await;
    // Duplicates of the first batch, after the crash.
    produce(&brokers, &batch(1, 300, now), 20, Some(now + 62_000)).await;

    let log = read_log(&brokers);
    let ends = log_ends(&log);
    let produced = started.elapsed();
    let table = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || read_speed_until(&brokers, Duration::from_secs(90), |t| caught_up(t, &ends))
    })
    .await
    .expect("join");
    println!(
        "killed at {killed:.1?}, log read at {produced:.1?}, braid.speed caught up at {:.1?}",
        started.elapsed()
    );
    let _ = b.kill();
    let _ = b.wait();

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/views.toml"
    ))
    .expect("views");
    let set = ViewSet::parse(&text).expect("views parse");
    assert_speed_matches_model(&table, &set, &log);
    let _ = std::fs::remove_dir_all(&dir);
}
