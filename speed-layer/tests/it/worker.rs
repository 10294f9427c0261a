//! The speed worker end to end: what it publishes to `braid.speed`, merged
//! over epochs and partitions, equals the reference model of the log, also
//! across a graceful restart and an abrupt one (the task dropped mid-run, as
//! `kill -9` would leave it).

use std::time::Duration;

use braid_core::{Reading, ViewSet};
use braid_speed::{SpeedConfig, run};
use braid_testkit::logs::{
    assert_speed_matches_model, caught_up, log_ends, read_log, read_speed_until,
};
use braid_testkit::{init_tracing, memory_broker, produce};
use tokio_util::sync::CancellationToken;

const NOW: i64 = 1_700_000_000_000;

const VIEWS: &str = r#"
[defaults]
current = "1m"
outdated = "10m"
max_out_of_orderness = "5s"
dedup_horizon = "1h"

[[views]]
name = "per_device"
window = "1m"
group_by = ["device_id"]
aggregates = ["count", "sum", "mean", "min", "max", "stddev", "quantiles"]

[[views]]
name = "fleet"
window = "5m"
hop = "1m"
aggregates = ["count", "distinct_devices"]
"#;

/// Readings with on-time, outdated and historical lags and repeats.
fn readings(round: u64, n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| {
            let lag = match i % 10 {
                0..=6 => (i as i64 * 997) % 50_000,
                7 | 8 => 120_000 + (i as i64 * 31) % 300_000,
                _ => 2 * 3_600_000,
            };
            Reading {
                device_id: format!("dev-{}", i % 13),
                metric: "t".into(),
                ts: NOW - lag,
                value: ((i * 7919) % 1000) as f64 / 10.0,
                seq: Some(round * 1_000_000 + (i as u64 % (n as u64 - 3).max(1))),
                tags: Default::default(),
            }
        })
        .collect()
}

fn config(brokers: String, dir: &std::path::Path) -> SpeedConfig {
    let mut c = SpeedConfig::new(brokers, dir.to_path_buf(), ViewSet::parse(VIEWS).unwrap());
    c.checkpoint_interval = Duration::from_millis(700);
    c.publish_interval = Duration::from_millis(50);
    c
}

fn assert_matches_model(brokers: &str) {
    let set = ViewSet::parse(VIEWS).unwrap();
    let log = read_log(brokers);
    assert!(!log.is_empty());
    let ends = log_ends(&log);
    let table = read_speed_until(brokers, Duration::from_secs(60), |t| caught_up(t, &ends));
    assert_speed_matches_model(&table, &set, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_states_equal_the_model() {
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let rs = readings(0, 3000);
    produce(&broker.brokers(), &rs, 40, Some(NOW)).await;
    // The same readings again: every one a duplicate.
    produce(&broker.brokers(), &rs[..500], 40, Some(NOW + 1000)).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config(broker.brokers(), dir.path()), stop.clone()));
    assert_matches_model(&broker.brokers());
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.records, 3500);
    assert!(stats.checkpoints > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_count_nothing_twice() {
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    produce(&broker.brokers(), &readings(1, 2000), 25, Some(NOW)).await;

    // A graceful stop: final checkpoint.
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config(broker.brokers(), dir.path()), stop.clone()));
    let ends = log_ends(&read_log(&broker.brokers()));
    read_speed_until(&broker.brokers(), Duration::from_secs(60), |t| {
        caught_up(t, &ends)
    });
    stop.cancel();
    task.await.unwrap().unwrap();

    // More data, a new worker, then an abrupt end in the middle of it.
    produce(&broker.brokers(), &readings(2, 2000), 25, Some(NOW + 5000)).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config(broker.brokers(), dir.path()), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    task.abort();
    let _ = task.await;

    // Data after the crash, and a third worker that restores what it can.
    produce(&broker.brokers(), &readings(3, 1000), 25, Some(NOW + 9000)).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config(broker.brokers(), dir.path()), stop.clone()));
    assert_matches_model(&broker.brokers());
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Every alert in `braid.alerts`, once there are `want` or `wait` passed.
fn read_alerts(brokers: &str, want: usize, wait: Duration) -> Vec<braid_core::detect::Alert> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let mut alerts = Vec::new();
        braid_kafka::drain::drain_topic(
            brokers,
            braid_kafka::Topics::ALERTS,
            Duration::from_millis(500),
            Duration::from_secs(20),
            |m| {
                use rdkafka::Message;
                alerts.push(serde_json::from_slice(m.payload().unwrap_or_default()).unwrap());
            },
        )
        .unwrap();
        if alerts.len() >= want || std::time::Instant::now() > deadline {
            return alerts;
        }
    }
}

/// With a detector configured, an excursion above its bound raises one
/// alert in `braid.alerts` (not one per reading), and a second excursion
/// after the detector re-armed raises another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excursion_raises_one_alert_in_braid_alerts() {
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let values = [1.0, 2.0, 50.0, 60.0, 70.0, 1.0, 1.0, 1.0, 80.0, 1.0];
    let rs: Vec<Reading> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Reading {
            device_id: "hot-1".into(),
            metric: "t".into(),
            ts: NOW - 60_000 + i as i64 * 1000,
            value: *v,
            seq: Some(i as u64),
            tags: Default::default(),
        })
        .collect();
    produce(&broker.brokers(), &rs, 1, Some(NOW)).await;
    let mut c = config(broker.brokers(), dir.path());
    c.detectors = braid_core::detect::Detectors::parse(
        "[[detectors]]\nmetric = \"t\"\nmax = 10.0\nrearm = 3\n",
    )
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(c, stop.clone()));
    let alerts = read_alerts(&broker.brokers(), 2, Duration::from_secs(60));
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    let seen: Vec<(f64, i64)> = alerts.iter().map(|a| (a.value, a.ts)).collect();
    assert_eq!(
        seen,
        [(50.0, NOW - 58_000), (80.0, NOW - 52_000)],
        "{alerts:?}"
    );
    assert_eq!(alerts[0].flag.detector, braid_core::detect::Detector::Max);
    assert_eq!(alerts[0].flag.expected_max, Some(10.0));
    assert_eq!(stats.alerts, 2);
}

/// A seasonal baseline published by a batch run while the worker runs is
/// loaded without a restart: before it, a reading far from the device's
/// usual value raises nothing (no baseline, no other detector); after it,
/// the same reading raises one seasonal alert, and its duplicate is not
/// judged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_baseline_is_loaded_and_judges_without_a_restart() {
    use braid_core::baseline::{Baselines, Season, Trainer};
    use braid_core::detect::{Detector, Detectors};
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let reading = |i: u64, value: f64| Reading {
        device_id: "s-1".into(),
        metric: "t".into(),
        ts: NOW - 50_000 + i as i64 * 1000,
        value,
        seq: Some(i),
        tags: Default::default(),
    };
    let set = ViewSet::parse(VIEWS).unwrap();
    let mut c = config(broker.brokers(), dir.path());
    c.detectors =
        Detectors::parse("[[detectors]]\nmetric = \"t\"\nseasonal = \"per_device\"\nrearm = 1\n")
            .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(c, stop.clone()));
    produce(&broker.brokers(), &[reading(0, 100.0)], 1, Some(NOW)).await;
    assert!(read_alerts(&broker.brokers(), 1, Duration::from_secs(4)).is_empty());

    // The device usually reads about 10, at every hour of the week.
    let view = set.get("per_device").unwrap();
    let mut t = Trainer::new(Season::default(), view.windowing.size_ms);
    for h in 0..168i64 {
        let mut s = braid_core::AggState::new(view.parts());
        for v in [9.0, 9.5, 10.0, 10.0, 10.5, 11.0, 10.0, 9.8, 10.2] {
            s.fold(v, 0);
        }
        t.add("s-1", h * 3_600_000, &s);
    }
    let b = Baselines {
        run_id: "run-1".into(),
        trained_ms: NOW,
        metrics: [("t".to_string(), t.finish("per_device"))].into(),
    };
    braid_store::baselines::publish(&braid_store::Layout::new(dir.path()), &b, 3).unwrap();
    tokio::time::sleep(braid_speed::judge::RELOAD_EVERY + Duration::from_secs(1)).await;
    // The repeat comes after a normal reading re-armed the detector: judged
    // again, it would raise a second alert.
    let again = [reading(1, 100.0), reading(2, 10.0), reading(1, 100.0)];
    produce(&broker.brokers(), &again, 1, Some(NOW)).await;
    let alerts = read_alerts(&broker.brokers(), 2, Duration::from_secs(10));
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].flag.detector, Detector::Seasonal);
    assert_eq!((alerts[0].value, alerts[0].ts), (100.0, NOW - 49_000));
    assert!(alerts[0].flag.expected_max.unwrap() < 20.0, "{alerts:?}");
}

/// Once a batch run is published, the worker drops the states of the
/// epochs below its cut (they are in the run), keeps everything above,
/// and what it published still equals the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_below_a_published_cut_are_dropped() {
    use braid_speed::checkpoint::Checkpoint;
    use braid_store::Layout;
    use braid_store::views::{Manifest, StagedRun};
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let store = braid_store::Blobs::local(dir.path());
    let sealed_at = |ends: &std::collections::BTreeMap<i32, i64>| {
        let store = store.clone();
        let ends = ends.clone();
        async move {
            for (p, end) in ends {
                let sealed = braid_store::layout::read_sealed(&store, p).await.unwrap();
                if sealed.unwrap_or_default().last() != Some(&end) {
                    return false;
                }
            }
            true
        }
    };
    let set = ViewSet::parse(VIEWS).unwrap();
    produce(&broker.brokers(), &readings(4, 600), 5, Some(NOW)).await;
    let ends = log_ends(&read_log(&broker.brokers()));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config(broker.brokers(), dir.path()), stop.clone()));
    // Every partition sealed at its end: that is the cut.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !sealed_at(&ends).await {
        assert!(
            std::time::Instant::now() < deadline,
            "never sealed at {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let below = |p: i32, cut: i64| {
        let store = store.clone();
        async move {
            Checkpoint::load(&store, p, |_| {})
                .await
                .unwrap()
                .map_or(0, |c| c.states.iter().filter(|(k, _)| k.3 < cut).count())
        }
    };
    let mut any_below = false;
    for (&p, &end) in &ends {
        any_below |= below(p, end).await > 0;
    }
    assert!(any_below);
    // A batch run cutting there (its rows do not matter here).
    let cut = braid_core::merge::Cut(ends.clone());
    for v in &set.views {
        let staged = StagedRun::new(&layout, &v.name, "run-1").unwrap();
        let windows = Default::default();
        staged.write_rows(v, &windows).unwrap();
        staged
            .publish(&Manifest::new(v, &set, "run-1", cut.clone(), &windows))
            .unwrap();
    }
    // The worker looks for new runs every 5 s; the next checkpoint after
    // that holds only what is above the cut.
    tokio::time::sleep(braid_speed::judge::RELOAD_EVERY + Duration::from_secs(1)).await;
    produce(&broker.brokers(), &readings(5, 300), 5, Some(NOW + 2000)).await;
    let later = log_ends(&read_log(&broker.brokers()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sealed_later = sealed_at(&later).await;
        let mut kept = 0;
        for (&p, &end) in &ends {
            kept += below(p, end).await;
        }
        if sealed_later && kept == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{kept} states below the cut kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_matches_model(&broker.brokers());
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert!(stats.dropped_below_cut > 0, "{stats:?}");
}
