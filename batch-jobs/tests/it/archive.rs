//! The archiver end to end: every offset of `braid.readings` archived
//! exactly once, across a graceful stop and an archiver dropped mid-run (as
//! `kill -9` would leave it), every file readable, no temporary file left.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int32Array, Int64Array, UInt32Array};
use braid_batch::archive::{ArchiveConfig, recover, run};
use braid_core::Reading;
use braid_testkit::fixtures::fleet;
use braid_testkit::logs::read_log;
use braid_testkit::{init_tracing, memory_broker, produce};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

fn files(dir: &Path, ext: &str, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.to_string_lossy().ends_with(ext) {
            out.push(p);
        }
    }
}

/// Every (partition, offset, index) in the archive, with how often.
fn archived(data: &Path) -> BTreeMap<(i32, i64, u32), usize> {
    let mut paths = Vec::new();
    files(&data.join("archive/readings"), ".parquet", &mut paths);
    let mut seen = BTreeMap::new();
    for path in paths {
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let p = b
                .column_by_name("partition")
                .unwrap()
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap();
            let o = b
                .column_by_name("offset")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let i = b
                .column_by_name("index")
                .unwrap()
                .as_any()
                .downcast_ref::<UInt32Array>()
                .unwrap();
            for r in 0..b.num_rows() {
                *seen
                    .entry((p.value(r), o.value(r), i.value(r)))
                    .or_insert(0) += 1;
            }
            assert_eq!(b.num_columns(), 10);
        }
    }
    seen
}

fn config(brokers: String, dir: &Path) -> ArchiveConfig {
    let mut c = ArchiveConfig::new(brokers, dir.to_path_buf());
    c.roll_age = Duration::from_millis(300);
    c.roll_bytes = 8 << 10;
    c
}

fn spread_over_days(mut rs: Vec<Reading>) -> Vec<Reading> {
    for (i, r) in rs.iter_mut().enumerate() {
        r.ts -= (i as i64 % 3) * 86_400_000;
    }
    rs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_offset_is_archived_exactly_once_across_crashes() {
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let now = 1_700_000_000_000;
    produce(
        &broker.brokers(),
        &spread_over_days(fleet(30, 40, now - 40_000, 1000)),
        10,
        Some(now),
    )
    .await;

    // A graceful run part of the way.
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config(broker.brokers(), dir.path()), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    // More data; an archiver dropped in the middle of its work.
    produce(
        &broker.brokers(),
        &spread_over_days(fleet(30, 40, now, 1000)),
        10,
        Some(now + 50_000),
    )
    .await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config(broker.brokers(), dir.path()), stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    task.abort();
    let _ = task.await;

    // A third archiver finishes the job.
    let log = read_log(&broker.brokers());
    assert_eq!(log.len(), 2400);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config(broker.brokers(), dir.path()), stop.clone()));
    let t = Instant::now();
    loop {
        let seen = archived(dir.path());
        if seen.len() == log.len() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "only {} of {} archived",
            seen.len(),
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();

    let seen = archived(dir.path());
    for r in &log {
        let key = (r.position.partition, r.position.offset, r.position.index);
        assert_eq!(
            seen.get(&key),
            Some(&1),
            "{key:?} archived {:?} times",
            seen.get(&key)
        );
    }
    assert_eq!(
        seen.len(),
        log.len(),
        "something archived that is not in the log"
    );
    let mut tmp = Vec::new();
    files(dir.path(), ".tmp", &mut tmp);
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    // Resuming points just past the last archived offset of each partition.
    let next = recover(&braid_store::Blobs::local(dir.path()))
        .await
        .unwrap();
    for (p, n) in next {
        let last = log
            .iter()
            .filter(|r| r.position.partition == p)
            .map(|r| r.position.offset)
            .max()
            .unwrap();
        assert_eq!(n, last + 1);
    }
    // Hive layout: date=.../partition=...
    let mut paths = Vec::new();
    files(&dir.path().join("archive/readings"), ".parquet", &mut paths);
    assert!(paths.iter().all(|p| {
        let s = p.to_string_lossy();
        s.contains("/date=") && s.contains("/partition=")
    }));
    let dates: std::collections::BTreeSet<_> = paths
        .iter()
        .filter_map(|p| {
            p.to_string_lossy()
                .split("date=")
                .nth(1)
                .map(|s| s[..10].to_string())
        })
        .collect();
    assert!(dates.len() >= 3, "{dates:?}");
}
