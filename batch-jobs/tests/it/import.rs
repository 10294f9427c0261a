//! `braid import` on real data: the Birmingham parking CSV (30 car parks,
//! 35,717 rows, 216 of them exact repeats of an earlier row) imports with the documented
//! mapping and enters the parking view at the next batch run, each repeat
//! dropped once; bad rows are refused with their row and column, and
//! nothing is written.

use std::path::{Path, PathBuf};

use braid_batch::import::{Format, ImportConfig, Mapping, MetricFrom, run};
use braid_batch::recompute::{RunConfig, run as batch_run};
use braid_core::ViewSet;
use braid_store::Layout;
use braid_store::layout::complete_imports;
use braid_store::views::read_current;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn parking_mapping() -> Mapping {
    Mapping {
        device_id: "SystemCodeNumber".into(),
        ts: "LastUpdated".into(),
        value: "Occupancy".into(),
        metric: MetricFrom::Fixed("occupancy".into()),
        seq: None,
        tags: vec![("capacity".into(), "Capacity".into())],
        timezone: chrono_tz::Europe::London,
    }
}

fn config(data: &Path, file: PathBuf, mapping: Mapping) -> ImportConfig {
    ImportConfig {
        archive: braid_store::Blobs::local(data),
        file,
        format: Format::Csv,
        mapping,
        dry_run: false,
        skip_invalid: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parking_csv_imports_and_enters_the_next_batch_run() {
    let dir = tempfile::tempdir().unwrap();
    let csv = repo("../shared/datasets/birmingham-parking.csv");
    let mut dry = config(dir.path(), csv.clone(), parking_mapping());
    dry.dry_run = true;
    let r = run(&dry, &|_, _| {}).unwrap();
    assert_eq!((r.rows, r.readings, r.invalid), (35_717, 35_717, 0));
    assert!(r.id.is_none());
    let archive = braid_store::Blobs::local(dir.path());
    let imports = || async { complete_imports(&archive).await.unwrap() };
    assert!(imports().await.is_empty());

    let r = run(&config(dir.path(), csv, parking_mapping()), &|_, _| {}).unwrap();
    let id = r.id.expect("an import id");
    let (first, _) = r.ts_range.unwrap();
    // The earliest row, 2016-10-04 07:46:28 BST, is 06:46:28 UTC.
    assert_eq!(
        braid_core::time::format_rfc3339(first),
        "2016-10-04T06:46:28.000Z"
    );
    let layout = Layout::new(dir.path());
    assert_eq!(imports().await.keys().collect::<Vec<_>>(), vec![&id]);

    let views = ViewSet::parse(&std::fs::read_to_string(repo("data/views.toml")).unwrap()).unwrap();
    let mut rc = RunConfig::new(dir.path().to_path_buf(), views.clone());
    rc.only = Some("parking_occupancy".into());
    let report = batch_run(rc).await.unwrap();
    assert_eq!(report.records, 35_717);
    let view = views.get("parking_occupancy").unwrap();
    let published = read_current(&layout, view).unwrap().unwrap();
    assert_eq!(published.manifest.imports, vec![id]);
    let readings: u64 = published.windows.values().map(|(_, c)| c.readings).sum();
    let dups: u64 = published
        .windows
        .values()
        .map(|(_, c)| c.duplicates_dropped)
        .sum();
    assert_eq!((readings, dups), (35_501, 216));
    let devices: std::collections::BTreeSet<_> =
        published.windows.keys().map(|(_, g)| g.clone()).collect();
    assert_eq!(devices.len(), 30);
    // One car park's first half hour: the first reading, 61 spaces.
    let (state, _) = published
        .windows
        .iter()
        .find(|((_, g), _)| g[0].as_deref() == Some("BHMBCCMKT01"))
        .map(|(_, v)| v)
        .unwrap();
    assert_eq!(state.value(braid_core::Column::Min), Some(61.0));
}

#[test]
fn bad_rows_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "device_id,ts,value\nd1,2024-01-01 00:00:00,1.5\nd2,yesterday,2\nd3,2024-01-01 00:00:10,lots\n,2024-01-01 00:00:20,3\n",
    )
    .unwrap();
    let mapping = Mapping {
        device_id: "device_id".into(),
        ts: "ts".into(),
        value: "value".into(),
        metric: MetricFrom::Fixed("m".into()),
        seq: None,
        tags: Vec::new(),
        timezone: chrono_tz::UTC,
    };
    let r = run(
        &config(dir.path(), csv.clone(), mapping.clone()),
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(r.invalid, 3);
    let text: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
    assert!(
        text[0].starts_with("row 2: ts: `yesterday` is not"),
        "{text:?}"
    );
    assert_eq!(text[1], "row 3: value: `lots` is not a number");
    assert_eq!(text[2], "row 4: device_id: is empty");
    assert!(r.id.is_none());
    assert!(!dir.path().join("archive").exists());

    let mut skip = config(dir.path(), csv, mapping.clone());
    skip.skip_invalid = true;
    let r = run(&skip, &|_, _| {}).unwrap();
    assert_eq!((r.readings, r.invalid), (1, 3));
    assert!(r.id.is_some());

    let err = run(
        &config(
            dir.path(),
            dir.path().join("bad.csv"),
            Mapping {
                value: "reading".into(),
                ..mapping
            },
        ),
        &|_, _| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("no column `reading` in the input (columns: device_id, ts, value)"),
        "{err}"
    );
}
