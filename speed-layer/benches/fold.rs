//! `scripts/bench speed` (a): the speed layer's fold rate, in readings per
//! second on one core, from decoded readings through the worker's own path
//! (`PartitionTable::fold`: dedup, lateness class, windows, states) for the
//! default views of `data/views.toml`.
//!
//! Range: 200,000 readings of a simulated fleet of 200 devices per scenario
//! (default shares of out-of-order, late, historical and duplicate
//! readings), one partition, one epoch, best of 9 runs.
//!
//! Then the shipped anomaly detectors judging the same readings the way
//! the worker does (`Judge::judge` after the fold, duplicates skipped),
//! with seasonal baselines trained from a first pass's states of the
//! seasonal detectors' views, timed on their own (alternating with the
//! folds, best of each): "with detectors" is fold plus judging, and the
//! detectors' cost is judging over folding.
//!
//! And (d), measured first, in the fresh process: memory per live (window, group) cell without quantiles: the
//! process's resident memory before and after one table holds 1,000,000
//! cells (a 1-minute view grouped by device, count, sum, min, max, mean
//! and stddev: 200 devices x 5,000 windows, one reading each), divided by
//! the cells.

use std::hint::black_box;
use std::time::Instant;

use braid_core::baseline::Baselines;
use braid_core::detect::Detectors;
use braid_core::fold::PartitionFolder;
use braid_core::{Position, Record, ViewSet};
use braid_sim::{Fleet, Scenario, Shares};
use braid_speed::judge::Judge;
use braid_speed::table::PartitionTable;

const N: usize = 200_000;
const DEVICES: usize = 200;
const RUNS: usize = 9;

fn records(scenario: Scenario) -> Vec<Record> {
    let mut fleet = Fleet::new(scenario, DEVICES, Shares::default(), 1);
    let start = 1_700_000_000_000;
    let mut out = Vec::with_capacity(N + DEVICES);
    let mut tick = 0i64;
    while out.len() < N {
        let now = start + tick * 1000;
        for r in fleet.tick(now) {
            let offset = out.len() as i64;
            out.push(Record {
                reading: r,
                ingest_ts: now,
                position: Position {
                    partition: 0,
                    offset,
                    index: 0,
                },
            });
        }
        tick += 1;
    }
    out.truncate(N);
    out
}

/// Baselines of the seasonal detectors, trained from a fold's states.
fn baselines(set: &ViewSet, detectors: &Detectors, table: &PartitionTable) -> Baselines {
    let mut b = Baselines::default();
    for (def, view) in braid_core::detect::seasonal_views(detectors) {
        let Some(vi) = set.views.iter().position(|v| v.name == view) else {
            continue;
        };
        let windows = table
            .iter()
            .filter(|(k, _)| k.view == vi)
            .map(|(k, e)| (k.window_start, k.group, &e.state));
        b.metrics
            .insert(def.metric.clone(), def.train(&set.views[vi], windows));
    }
    b
}

/// One fold of `recs`: its time, table and which records were duplicates.
fn fold_once(set: &ViewSet, recs: &[Record]) -> (f64, PartitionTable, Vec<bool>) {
    let mut table = PartitionTable::default();
    let mut folder = PartitionFolder::new(&set.settings);
    let mut dups = Vec::with_capacity(recs.len());
    let t = Instant::now();
    for r in recs {
        dups.push(table.fold(&mut folder, &set.views, r, 0));
    }
    let secs = t.elapsed().as_secs_f64();
    black_box(&table);
    (secs, table, dups)
}

/// The worker's detector pass over the same records (duplicates skipped):
/// its time and the alerts raised.
fn judge_once(judge: &mut Judge, recs: &[Record], dups: &[bool]) -> (f64, usize) {
    let mut alerts = Vec::new();
    let t = Instant::now();
    for (r, &dup) in recs.iter().zip(dups) {
        if !dup {
            judge.judge(0, &r.reading, &mut alerts);
        }
    }
    (t.elapsed().as_secs_f64(), alerts.len())
}

fn main() {
    // First, in a fresh process: memory freed by the folds below would be
    // reused by the cells' table without growing the resident set.
    let cells = memory_per_cell();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/views.toml"))
        .expect("data/views.toml");
    let set = ViewSet::parse(&text).expect("views");
    let detectors = Detectors::parse(&text).expect("detectors");
    println!(
        "braid-speed fold rate: {N} readings, {DEVICES} devices, the {} default views, best of {RUNS}, one core",
        set.views.len()
    );
    println!();
    println!(
        "| scenario | readings/s | ns/reading | states | with detectors, readings/s | ns/reading | alerts (most in a run) | detector cost |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for scenario in [Scenario::Parking, Scenario::Home, Scenario::Farm] {
        let recs = records(scenario);
        let (_, table, dups) = fold_once(&set, &recs);
        let mut judge = Judge::new(detectors.clone());
        judge.set_baselines(baselines(&set, &detectors, &table));
        // Alternating, so both see the same machine; the best of each.
        let (mut plain, mut judging, mut alerts) = (f64::INFINITY, f64::INFINITY, 0);
        for _ in 0..RUNS {
            plain = plain.min(fold_once(&set, &recs).0);
            let (t, a) = judge_once(&mut judge, &recs, &dups);
            judging = judging.min(t);
            alerts = alerts.max(a);
        }
        let judged = plain + judging;
        println!(
            "| {scenario:?} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {alerts} | +{:.0}% |",
            N as f64 / plain,
            plain * 1e9 / N as f64,
            table.len(),
            N as f64 / judged,
            judged * 1e9 / N as f64,
            (judged / plain - 1.0) * 100.0
        );
    }
    println!();
    println!("{cells}");
}

/// Resident memory of this process, bytes (Linux).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// (d), measured before anything else has run in the process: the line to
/// print.
fn memory_per_cell() -> String {
    const CELL_DEVICES: usize = 200;
    const WINDOWS: usize = 5_000;
    let set = ViewSet::parse(
        "[[views]]\nname = \"cells\"\nwindow = \"1m\"\ngroup_by = [\"device_id\"]\n\
         aggregates = [\"count\", \"sum\", \"min\", \"max\", \"mean\", \"stddev\"]\n\
         [defaults]\noutdated = \"1000d\"\ndedup_horizon = \"1s\"\n",
    )
    .expect("the cells view");
    let start = 1_700_000_000_000i64;
    let devices: Vec<String> = (0..CELL_DEVICES).map(|d| format!("dev-{d:05}")).collect();
    let Some(before) = rss() else {
        return "(d) memory per cell: /proc/self/statm unreadable, not measured".into();
    };
    let mut table = PartitionTable::default();
    let mut folder = PartitionFolder::new(&set.settings);
    let mut offset = 0;
    for w in 0..WINDOWS as i64 {
        for d in &devices {
            let ts = start + w * 60_000;
            let r = Record {
                reading: braid_core::Reading {
                    device_id: d.clone(),
                    metric: "m".into(),
                    ts,
                    value: (offset % 97) as f64,
                    seq: None,
                    tags: Default::default(),
                },
                ingest_ts: ts,
                position: Position {
                    partition: 0,
                    offset,
                    index: 0,
                },
            };
            table.fold(&mut folder, &set.views, &r, 0);
            offset += 1;
        }
        // As publishing does every 100 ms.
        table.take_changed(|_, _| {});
    }
    let after = rss().unwrap_or(before);
    let cells = table.len();
    black_box(&table);
    format!(
        "(d) memory per live (window, group) cell without quantiles: {cells} cells, resident memory +{:.1} MiB, {:.0} bytes per cell (goal at most 200)",
        (after.saturating_sub(before)) as f64 / (1024.0 * 1024.0),
        after.saturating_sub(before) as f64 / cells as f64
    )
}
