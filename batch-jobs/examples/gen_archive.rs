//! Writes a synthetic archive for `scripts/bench batch`: `N` readings from
//! `DEVICES` devices over 4 partitions, in the archiver's own layout (rolls
//! of about a million records, one file per event date), as the archiver
//! would have written them.
//!
//! Devices are a third each car parks (`occupancy`), home meters
//! (`power_w`) and farm probes (`soil_moisture`, tagged with one of 50
//! fields); each reports every 5 s with jitter (so 50 million readings from
//! 10,000 devices span about seven hours); 1% of readings arrive
//! outdated, 0.1% historical, 0.2% are repeats.
//!
//! Usage: `gen_archive DIR N DEVICES`

use std::collections::BTreeMap;

use braid_batch::archive::write_roll;
use braid_core::{Position, Reading, Record};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, n, devices] = &args[..] else {
        eprintln!("usage: gen_archive DIR N DEVICES");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let n: u64 = n.parse().expect("N");
    let devices: u64 = devices.parse().expect("DEVICES");
    let partitions = 4u64;
    let roll = 1_000_000usize;
    let start = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let per_device = n / devices;
    let mut buffers: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut written = 0u64;
    for step in 0..per_device {
        for d in 0..devices {
            let p = (d % partitions) as i32;
            let r = next();
            let ts = start + step as i64 * 5_000 + (r % 2_000) as i64;
            let lag = match r % 1000 {
                0 => 7_200_000 + (r % 3_600_000) as i64,
                1..=10 => 120_000 + (r % 600_000) as i64,
                _ => (r % 3_000) as i64,
            };
            let (metric, value, tags) = match d % 3 {
                0 => ("occupancy", (r % 500) as f64, BTreeMap::new()),
                1 => ("power_w", (r % 5_000) as f64 / 3.0, BTreeMap::new()),
                _ => (
                    "soil_moisture",
                    (r % 1_000) as f64 / 10.0,
                    [("field".to_string(), format!("field-{:02}", d % 50))].into(),
                ),
            };
            let offset = offsets.entry(p).or_insert(0);
            let reading = Reading {
                device_id: format!("dev-{d:05}"),
                metric: metric.into(),
                ts,
                value,
                seq: Some(step),
                tags,
            };
            let buf = buffers.entry(p).or_default();
            let repeat = r % 500 == 7 && !buf.is_empty();
            let reading = if repeat {
                buf[buf.len() - 1].reading.clone()
            } else {
                reading
            };
            buf.push(Record {
                reading,
                ingest_ts: ts + lag,
                position: Position {
                    partition: p,
                    offset: *offset,
                    index: 0,
                },
            });
            *offset += 1;
            written += 1;
            if buf.len() >= roll {
                write_roll(&dir, p, buf).expect("roll written");
                buf.clear();
                eprint!("\r  {written} of {n} readings written");
            }
        }
    }
    for (p, buf) in &buffers {
        if !buf.is_empty() {
            write_roll(&dir, *p, buf).expect("roll written");
        }
    }
    eprintln!("\r  {written} readings written under {}", dir.display());
}
