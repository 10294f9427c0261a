//! `scripts/bench speed` (a): the speed layer's fold rate, in readings per
//! second on one core, from decoded readings through the worker's own path
//! (`PartitionTable::fold`: dedup, lateness class, windows, states) for the
//! default views of `data/views.toml`.
//!
//! Range: 200,000 readings of a simulated fleet of 200 devices per scenario
//! (default shares of out-of-order, late, historical and duplicate
//! readings), one partition, one epoch, best of 5 runs.

use std::hint::black_box;
use std::time::Instant;

use braid_core::fold::PartitionFolder;
use braid_core::{Position, Record, ViewSet};
use braid_sim::{Fleet, Scenario, Shares};
use braid_speed::table::PartitionTable;

const N: usize = 200_000;
const DEVICES: usize = 200;
const RUNS: usize = 5;

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

fn main() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/views.toml"))
        .expect("data/views.toml");
    let set = ViewSet::parse(&text).expect("views");
    println!(
        "braid-speed fold rate: {N} readings, {DEVICES} devices, the {} default views, best of {RUNS}, one core",
        set.views.len()
    );
    println!();
    println!("| scenario | readings/s | ns/reading | states |");
    println!("|---|---:|---:|---:|");
    for scenario in [Scenario::Parking, Scenario::Home, Scenario::Farm] {
        let recs = records(scenario);
        let mut best = f64::INFINITY;
        let mut states = 0;
        for _ in 0..RUNS {
            let mut table = PartitionTable::default();
            let mut folder = PartitionFolder::new(&set.settings);
            let t = Instant::now();
            for r in &recs {
                table.fold(&mut folder, &set.views, r, 0);
            }
            best = best.min(t.elapsed().as_secs_f64());
            states = table.states.len();
            black_box(&table);
        }
        println!(
            "| {scenario:?} | {:.0} | {:.0} | {states} |",
            N as f64 / best,
            best * 1e9 / N as f64
        );
    }
}
