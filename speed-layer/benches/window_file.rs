//! `scripts/bench speed` (c), Braid's side: the tumbling-window
//! aggregation Flink runs in `scripts/flink_window.py`, over the same rows
//! from the same file, through the speed layer's fold on one core.
//!
//! Writes (once) `target/bench-flink/readings-<n>.csv` for n = 2,000,000
//! and 4,000,000 rows of a simulated parking fleet of 1,000 devices, every
//! reading on time and none repeated (so Flink's watermark drops nothing
//! and both compute the same windows): `device_id,metric,ts,value`. Then,
//! for each file, reads it, parses every row into a reading (one record
//! refilled per row, as a streaming decoder does) and folds it into
//! one-minute windows by device (count, sum, min, max, mean, stddev),
//! best of 3, and prints the seconds and rows per second. The larger file's
//! rate is what `scripts/bench` sets beside Flink's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use braid_core::fold::PartitionFolder;
use braid_core::{Position, Reading, Record, ViewSet};
use braid_sim::{Fleet, Scenario, Shares};
use braid_speed::table::PartitionTable;

const SIZES: [usize; 2] = [2_000_000, 4_000_000];
const DEVICES: usize = 1_000;
const RUNS: usize = 3;

const VIEW: &str = r#"
[[views]]
name = "tumbling"
window = "1m"
group_by = ["device_id"]
aggregates = ["count", "sum", "min", "max", "mean", "stddev"]
"#;

fn dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("bench-flink")
}

fn write_file(path: &Path, n: usize) {
    if path.exists() {
        return;
    }
    let none = Shares {
        out_of_order: 0.0,
        outdated: 0.0,
        historical: 0.0,
        duplicate: 0.0,
        anomaly: 0.0,
    };
    let mut fleet = Fleet::new(Scenario::Parking, DEVICES, none, 7);
    let tmp = path.with_extension("tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).expect("create the file"));
    let start = 1_700_000_000_000i64;
    let mut written = 0;
    let mut tick = 0i64;
    while written < n {
        for r in fleet.tick(start + tick * 1000) {
            if written == n {
                break;
            }
            writeln!(out, "{},{},{},{}", r.device_id, r.metric, r.ts, r.value).expect("write");
            written += 1;
        }
        tick += 1;
    }
    out.flush().expect("flush");
    drop(out);
    std::fs::rename(&tmp, path).expect("rename");
}

/// Reads and parses the file, folds every row: the seconds and windows.
fn run(path: &Path, set: &ViewSet) -> (f64, usize) {
    let t = Instant::now();
    let text = std::fs::read_to_string(path).expect("read the file");
    let mut table = PartitionTable::default();
    let mut folder = PartitionFolder::new(&set.settings);
    // One record, refilled per row, as a streaming decoder does.
    let mut rec = Record {
        reading: Reading {
            device_id: String::new(),
            metric: String::new(),
            ts: 0,
            value: 0.0,
            seq: None,
            tags: Default::default(),
        },
        ingest_ts: 0,
        position: Position {
            partition: 0,
            offset: 0,
            index: 0,
        },
    };
    for (offset, line) in text.lines().enumerate() {
        let mut f = line.split(',');
        let (Some(device), Some(metric), Some(ts), Some(value)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            panic!("row {offset}: four fields expected");
        };
        let r = &mut rec.reading;
        r.device_id.clear();
        r.device_id.push_str(device);
        r.metric.clear();
        r.metric.push_str(metric);
        r.ts = ts.parse().expect("ts");
        r.value = value.parse().expect("value");
        rec.ingest_ts = r.ts;
        rec.position.offset = offset as i64;
        table.fold(&mut folder, &set.views, &rec, 0);
        if offset % 4096 == 0 {
            // As publishing does every 100 ms.
            table.take_changed(|_, _| {});
        }
    }
    let secs = t.elapsed().as_secs_f64();
    (secs, std::hint::black_box(table).len())
}

fn main() {
    let set = ViewSet::parse(VIEW).expect("the view");
    let d = dir();
    std::fs::create_dir_all(&d).expect("bench directory");
    println!(
        "braid-speed over a file: one-minute windows by device (count, sum, min, max, mean, stddev), {DEVICES} parking devices, on time, best of {RUNS}, one core"
    );
    println!();
    println!("| rows | file | seconds | windows | rows/s per core |");
    println!("|---:|---|---:|---:|---:|");
    let mut last = 0.0;
    for n in SIZES {
        let path = d.join(format!("readings-{n}.csv"));
        write_file(&path, n);
        let mut best = (f64::INFINITY, 0);
        for _ in 0..RUNS {
            let r = run(&path, &set);
            if r.0 < best.0 {
                best = r;
            }
        }
        last = n as f64 / best.0;
        println!(
            "| {n} | {} | {:.2} | {} | {last:.0} |",
            path.display(),
            best.0,
            best.1
        );
    }
    println!();
    println!("braid_rows_per_core={last:.0}");
}
