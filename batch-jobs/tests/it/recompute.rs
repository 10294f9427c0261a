//! The DataFusion recompute against the reference model: on random logs
//! (out-of-order event times, outdated and historical arrivals, duplicates)
//! archived in random roll splits, every view's published run holds, per
//! window and group, the model's counters and the model's state bytes; an
//! incremental run after more data gives the same files, byte for byte, as
//! a full run.

use std::collections::BTreeMap;
use std::path::Path;

use braid_batch::archive::write_roll;
use braid_batch::recompute::{RunConfig, run};
use braid_core::fold::Layer;
use braid_core::{Record, ViewSet};
use braid_store::Layout;
use braid_store::views::{current_run, read_current};
use braid_testkit::model::reference_view_in;
use braid_testkit::random::{VIEWS, event, log};
use proptest::prelude::*;

/// Archives `records` (one partition's, in offset order) as rolls of the
/// given sizes (cycled).
fn archive(dir: &Path, records: &[Record], sizes: &[usize]) {
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for r in records {
        by_partition
            .entry(r.position.partition)
            .or_default()
            .push(r.clone());
    }
    for (p, rs) in by_partition {
        let mut i = 0;
        let mut k = 0;
        while i < rs.len() {
            let n = sizes[k % sizes.len()].min(rs.len() - i);
            write_roll(dir, p, &rs[i..i + n]).unwrap();
            i += n;
            k += 1;
        }
    }
}

fn batch_run(dir: &Path, set: &ViewSet, incremental: bool) {
    batch_run_with(
        dir,
        set,
        incremental,
        braid_core::detect::Detectors::default(),
    );
}

fn batch_run_with(
    dir: &Path,
    set: &ViewSet,
    incremental: bool,
    detectors: braid_core::detect::Detectors,
) -> braid_batch::recompute::RunReport {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = RunConfig::new(dir.to_path_buf(), set.clone());
    config.incremental = incremental;
    config.detectors = detectors;
    rt.block_on(run(config)).unwrap()
}

fn check_against_model(dir: &Path, set: &ViewSet, records: &[Record]) -> Result<(), TestCaseError> {
    let layout = Layout::new(dir);
    for view in &set.views {
        let model = reference_view_in(view, &set.settings, records, Layer::Batch);
        let ours = read_current(&layout, view)
            .unwrap()
            .expect("a published run");
        prop_assert_eq!(
            ours.windows.len(),
            model.len(),
            "view {}: windows",
            view.name
        );
        for (key, want) in &model {
            let (state, c) = ours.windows.get(key).expect("window present");
            prop_assert_eq!(
                c.readings as usize,
                want.applied.len(),
                "view {} {:?}",
                view.name,
                key
            );
            prop_assert_eq!(
                c.late_readings,
                want.late_readings,
                "late: view {} {:?}",
                view.name,
                key
            );
            prop_assert_eq!(c.duplicates_dropped, want.duplicates_dropped);
            prop_assert_eq!(c.pending_historical, 0);
            prop_assert_eq!(state.to_bytes(), want.state(view.parts()).to_bytes());
        }
    }
    Ok(())
}

fn part_bytes(dir: &Path, view: &str) -> Vec<u8> {
    let layout = Layout::new(dir);
    let run = current_run(&layout, view).unwrap().unwrap();
    std::fs::read(layout.run(view, &run).join("part-0.parquet")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn batch_runs_equal_the_model_and_incremental_equals_full(
        events in prop::collection::vec(event(), 0..80),
        sizes in prop::collection::vec(1usize..25, 1..6),
        first_share in 0usize..=100,
    ) {
        let set = ViewSet::parse(VIEWS).unwrap();
        let records = log(&events);
        // The archive grows in two steps: a prefix of each partition, then
        // the rest.
        let mut first = Vec::new();
        let mut rest = Vec::new();
        let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
        for r in &records {
            *per_partition.entry(r.position.partition).or_default() += 1;
        }
        for r in &records {
            let n = per_partition[&r.position.partition];
            if (r.position.offset as usize) * 100 < n * first_share {
                first.push(r.clone());
            } else {
                rest.push(r.clone());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        archive(dir.path(), &first, &sizes);
        batch_run(dir.path(), &set, false);
        check_against_model(dir.path(), &set, &first)?;

        archive(dir.path(), &rest, &sizes);
        batch_run(dir.path(), &set, true);
        check_against_model(dir.path(), &set, &records)?;
        let incremental: Vec<Vec<u8>> = set.views.iter().map(|v| part_bytes(dir.path(), &v.name)).collect();

        std::thread::sleep(std::time::Duration::from_millis(2));
        batch_run(dir.path(), &set, false);
        let full: Vec<Vec<u8>> = set.views.iter().map(|v| part_bytes(dir.path(), &v.name)).collect();
        prop_assert!(incremental == full, "incremental and full runs differ");
    }
}

/// A view a seasonal detector of `t` can train from.
const SEASONAL_VIEW: &str = r#"
[[views]]
name = "t_by_device"
metrics = ["t"]
window = "10s"
group_by = ["device_id"]
aggregates = ["count", "quantiles"]

[[detectors]]
metric = "t"
seasonal = "t_by_device"
"#;

fn baselines_run(dir: &Path, set: &ViewSet, incremental: bool) -> braid_core::baseline::Baselines {
    let detectors = braid_core::detect::Detectors::parse(SEASONAL_VIEW).unwrap();
    detectors.check_views(set).unwrap();
    let report = batch_run_with(dir, set, incremental, detectors);
    let b = braid_store::baselines::read_current(&Layout::new(dir))
        .unwrap()
        .expect("baselines published");
    assert_eq!(b.run_id, report.run_id);
    assert_eq!(report.baselines, Some((1, b.profiles())));
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// The baselines a batch run trains are the seasonal detector's
    /// training over the reference model's windows (the same core states,
    /// merged by hour of the week), and an incremental run's equal a full
    /// run's.
    #[test]
    fn batch_baselines_equal_training_on_the_model(
        events in prop::collection::vec(event(), 1..80),
        sizes in prop::collection::vec(1usize..25, 1..4),
    ) {
        let text = format!("{VIEWS}{SEASONAL_VIEW}");
        let set = ViewSet::parse(&text).unwrap();
        let detectors = braid_core::detect::Detectors::parse(&text).unwrap();
        let records = log(&events);
        let half = records.len() / 2;
        let dir = tempfile::tempdir().unwrap();
        archive(dir.path(), &records[..half], &sizes);
        baselines_run(dir.path(), &set, false);
        archive(dir.path(), &records[half..], &sizes);
        let incremental = baselines_run(dir.path(), &set, true);
        let full = baselines_run(dir.path(), &set, false);
        prop_assert_eq!(&incremental.metrics, &full.metrics);

        let view = set.get("t_by_device").unwrap();
        let model = reference_view_in(view, &set.settings, &records, Layer::Batch);
        let states: Vec<((i64, braid_core::fold::GroupKey), braid_core::AggState)> = model
            .iter()
            .map(|(k, w)| (k.clone(), w.state(view.parts())))
            .collect();
        let want = detectors.defs[0].train(view, states.iter().map(|((s, g), st)| (*s, g, st)));
        prop_assert_eq!(&full.metrics["t"], &want);
    }
}
