//! `kill -9` of `braid batch run` at points all through a run: `CURRENT`
//! always names a complete, readable run (the previous good one until a new
//! one is whole), the lock dies with the process, the next run cleans up
//! what the killed one left, and writes the very bytes of an uninterrupted
//! run (fault suite case 6).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use braid_batch::archive::write_roll;
use braid_core::{Position, Record};
use braid_store::Layout;
use braid_store::views::{current_run, read_current};
use braid_testkit::fixtures::reading;

use super::views;

fn batch_run(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["batch", "run"])
        .arg("--data-dir")
        .arg(dir)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("braid batch run starts")
}

#[test]
fn a_killed_batch_run_leaves_current_on_a_good_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    for p in 0..4 {
        let records: Vec<Record> = (0..50_000)
            .map(|i| Record {
                reading: reading(
                    &format!("dev-{}", i % 500),
                    "power_w",
                    1_700_000_000_000 + i * 1000,
                    i as f64,
                ),
                ingest_ts: 1_700_000_000_000 + i * 1000 + 10,
                position: Position {
                    partition: p,
                    offset: i,
                    index: 0,
                },
            })
            .collect();
        for chunk in records.chunks(10_000) {
            write_roll(dir.path(), p, chunk).expect("roll");
        }
    }
    let layout = Layout::new(dir.path());
    let set = views();
    let t = Instant::now();
    assert!(batch_run(dir.path()).wait().expect("wait").success());
    let full = t.elapsed();
    let first = current_run(&layout, "home_power").unwrap().expect("a run");
    let want = read_current(&layout, set.get("home_power").unwrap())
        .unwrap()
        .unwrap()
        .windows;
    let bytes = |run: &str, view: &str| {
        std::fs::read(layout.run(view, run).join("part-0.parquet")).expect("the run's file")
    };
    let uninterrupted: Vec<Vec<u8>> = set
        .views
        .iter()
        .map(|v| bytes(&current_run(&layout, &v.name).unwrap().unwrap(), &v.name))
        .collect();

    for k in 1..=5u32 {
        let mut child = batch_run(dir.path());
        std::thread::sleep(full * k / 6);
        let _ = child.kill();
        let _ = child.wait();
        for v in &set.views {
            let run = current_run(&layout, &v.name).unwrap().expect("still a run");
            let got = read_current(&layout, v).unwrap().expect("readable");
            assert_eq!(got.manifest.run_id, run);
            if v.name == "home_power" {
                assert_eq!(got.windows, want, "kill {k}: run {run} (first {first})");
            }
        }
    }
    assert!(
        batch_run(dir.path()).wait().expect("wait").success(),
        "the lock died with the killed run"
    );
    // The re-run after the kills writes the very bytes of the first,
    // uninterrupted run.
    for (v, want) in set.views.iter().zip(&uninterrupted) {
        let run = current_run(&layout, &v.name).unwrap().unwrap();
        assert!(
            bytes(&run, &v.name) == *want,
            "view {}: run {run} differs from {first}",
            v.name
        );
    }
    for v in &set.views {
        let leftovers: Vec<_> = std::fs::read_dir(layout.view(&v.name))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
