//! Golden output of every default view (`data/views.toml`) on a small
//! hand-made fixture: a batch run over its archive, each view's published
//! windows rendered as text and compared with the reviewed snapshot in
//! `snapshots/`. The figures were checked by hand when the snapshot was
//! taken (see the comments on the fixture); a change to any of them, to a
//! window's bounds or a counter fails the test.

use std::fmt::Write as _;

use braid_batch::archive::write_roll;
use braid_core::{Position, Reading, Record, ViewSet};
use braid_store::Layout;
use braid_store::views::read_current;

/// 2023-11-14 22:00:00 UTC.
const BASE: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
const MIN: i64 = 60_000;

fn reading(
    device: &str,
    metric: &str,
    minute: f64,
    value: f64,
    seq: u64,
    tags: &[(&str, &str)],
) -> Reading {
    Reading {
        device_id: device.into(),
        metric: metric.into(),
        ts: BASE + (minute * MIN as f64) as i64,
        value,
        seq: Some(seq),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    }
}

/// The fixture, in log order, each accepted a second after its time.
///
/// - parking_occupancy (30 min by car park): cp-a 100, 120, 140 at +0,
///   +10, +20 min (count 3, mean 120, min 100, max 140, median 120) and 90
///   at +40 (the next window); cp-b 50 at +5.
/// - home_power (1 min by meter): meter-1 1000 and 1500 at +0:10 and
///   +0:40 (count 2, sum 2500, mean 1250, max 1500), the second sent twice
///   (one duplicate dropped) and late (after the readings at +5 moved the
///   watermark past the window's end), 300 at +1:05 (late too).
/// - Quantiles come from the sketch, within 1% (a median of 1000 and 1500
///   is the lower one, 998.4; 120 reads 119.7).
/// - farm_soil_moisture (1 h every 15 min by field): probe-1 30 and probe-2
///   34 at +5 in field north: the four windows starting -45, -30, -15 and
///   +0 min each count 2, mean 32, min 30, max 34, sample stddev
///   sqrt(8) = 2.828, 2 distinct devices; probe-3 in field south 41 at +50
///   (windows +0, +15, +30, +45).
/// - device_summary (5 min by device and metric): all of the above;
///   meter-1's three readings in one window (mean 933.333, sample stddev
///   602.771), none late there (the watermark, +4:55, is short of +5).
fn fixture() -> Vec<Reading> {
    vec![
        reading("cp-a", "occupancy", 0.0, 100.0, 1, &[("capacity", "200")]),
        reading("meter-1", "power_w", 10.0 / 60.0, 1000.0, 1, &[]),
        reading("cp-b", "occupancy", 5.0, 50.0, 1, &[("capacity", "80")]),
        reading(
            "probe-1",
            "soil_moisture",
            5.0,
            30.0,
            1,
            &[("field", "north")],
        ),
        reading(
            "probe-2",
            "soil_moisture",
            5.0,
            34.0,
            1,
            &[("field", "north")],
        ),
        reading("meter-1", "power_w", 40.0 / 60.0, 1500.0, 2, &[]),
        reading("meter-1", "power_w", 40.0 / 60.0, 1500.0, 2, &[]),
        reading("meter-1", "power_w", 65.0 / 60.0, 300.0, 3, &[]),
        reading("cp-a", "occupancy", 10.0, 120.0, 2, &[("capacity", "200")]),
        reading("cp-a", "occupancy", 20.0, 140.0, 3, &[("capacity", "200")]),
        reading("cp-a", "occupancy", 40.0, 90.0, 4, &[("capacity", "200")]),
        reading(
            "probe-3",
            "soil_moisture",
            50.0,
            41.0,
            1,
            &[("field", "south")],
        ),
    ]
}

fn minutes(ts: i64) -> String {
    let m = (ts - BASE) as f64 / MIN as f64;
    format!("{m:+}m")
}

fn render(set: &ViewSet, layout: &Layout) -> String {
    let mut out = String::new();
    for view in &set.views {
        let run = read_current(layout, view)
            .expect("read the run")
            .expect("a published run");
        let columns = view.columns();
        let _ = writeln!(
            out,
            "{} (window start, group | readings late duplicates | {})",
            view.name,
            columns
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(" ")
        );
        for ((start, group), (state, counters)) in &run.windows {
            let group: Vec<&str> = group.iter().map(|g| g.as_deref().unwrap_or("-")).collect();
            let values: Vec<String> = columns
                .iter()
                .map(|&c| state.value(c).map_or("-".into(), |v| format!("{v:.3}")))
                .collect();
            let _ = writeln!(
                out,
                "  {} {} | {} {} {} | {}",
                minutes(*start),
                group.join("/"),
                counters.readings,
                counters.late_readings,
                counters.duplicates_dropped,
                values.join(" ")
            );
        }
    }
    out
}

#[test]
fn every_default_view_on_the_fixture() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/views.toml"))
        .expect("data/views.toml");
    let set = ViewSet::parse(&text).expect("views");
    let dir = tempfile::tempdir().expect("tempdir");
    let records: Vec<Record> = fixture()
        .into_iter()
        .enumerate()
        .map(|(i, reading)| Record {
            ingest_ts: reading.ts + 1_000,
            reading,
            position: Position {
                partition: 0,
                offset: i as i64,
                index: 0,
            },
        })
        .collect();
    write_roll(dir.path(), 0, &records).expect("archive the fixture");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = braid_batch::recompute::RunConfig::new(dir.path().to_path_buf(), set.clone());
    rt.block_on(braid_batch::recompute::run(config))
        .expect("batch run");
    insta::assert_snapshot!(render(&set, &Layout::new(dir.path())));
}
