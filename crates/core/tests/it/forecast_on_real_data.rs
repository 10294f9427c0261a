//! Seasonal baselines and forecasts on the Birmingham parking data
//! (`../shared/datasets`), with the shipped occupancy detector and view:
//! the last week is held back, a baseline is trained from the
//! `parking_occupancy` windows of the weeks before (as the batch layer
//! does), and every held-back reading is forecast 1 hour and 1 day ahead.
//! Reported: MASE against the seasonal-naive forecast (the same car park a
//! week earlier), scaled by that forecast's in-sample error as usual; the
//! interval's coverage; what the seasonal detector flags in the held-back
//! week (the week before Christmas 2016). The bounds asserted are a little worse than what was measured.

use std::collections::{BTreeMap, HashSet};

use braid_core::baseline::{MetricBaseline, forecast};
use braid_core::detect::{Detector, DetectorState, Detectors};
use braid_core::fold::GroupKey;
use braid_core::{AggState, Reading, ViewSet};
use chrono::TimeZone;

const HOUR: i64 = 3_600_000;
const WEEK: i64 = 7 * 24 * HOUR;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Per car park: (ts, occupancy, capacity) in time order, local times
/// read in Europe/London, repeated rows dropped (the dedup rule without
/// `seq`).
fn parking() -> BTreeMap<String, Vec<(i64, f64, f64)>> {
    let text = crate::detectors_on_real_data::dataset("birmingham-parking.csv");
    let mut seen = HashSet::new();
    let mut out: BTreeMap<String, Vec<(i64, f64, f64)>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let naive = chrono::NaiveDateTime::parse_from_str(f[3], "%Y-%m-%d %H:%M:%S").unwrap();
        let ts = chrono_tz::Europe::London
            .from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .timestamp_millis();
        if seen.insert((f[0].to_string(), ts)) {
            out.entry(f[0].to_string()).or_default().push((
                ts,
                f[2].parse().unwrap(),
                f[1].parse().unwrap(),
            ));
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| r.0);
    }
    out
}

struct Setup {
    data: BTreeMap<String, Vec<(i64, f64, f64)>>,
    split: i64,
    detectors: Detectors,
    base: MetricBaseline,
}

/// The baseline the shipped seasonal occupancy detector trains from the
/// `parking_occupancy` windows before the held-back week.
fn setup() -> Setup {
    let text = std::fs::read_to_string(root().join("data/views.toml")).unwrap();
    let views = ViewSet::parse(&text).unwrap();
    let detectors = Detectors::parse(&text).unwrap();
    detectors.check_views(&views).unwrap();
    let det = detectors
        .of("occupancy")
        .find(|d| d.seasonal.is_some())
        .expect("a seasonal occupancy detector");
    let view = views.get(det.seasonal.as_deref().unwrap()).unwrap();
    let data = parking();
    let last = data.values().flatten().map(|r| r.0).max().unwrap();
    let split = last - WEEK;
    let mut windows: BTreeMap<(i64, GroupKey), AggState> = BTreeMap::new();
    for (code, rows) in &data {
        for &(ts, v, _) in rows.iter().filter(|r| r.0 < split) {
            for w in view.windowing.assign(ts) {
                windows
                    .entry((w.start, vec![Some(code.clone())]))
                    .or_insert_with(|| AggState::new(view.parts()))
                    .fold(v, 0);
            }
        }
    }
    let base = det.train(view, windows.iter().map(|((s, g), st)| (*s, g, st)));
    Setup {
        data,
        split,
        detectors,
        base,
    }
}

/// The reading of `rows` nearest `t`, within 20 minutes.
fn near(rows: &[(i64, f64, f64)], t: i64) -> Option<f64> {
    let i = rows.partition_point(|r| r.0 < t);
    [i.checked_sub(1), Some(i)]
        .into_iter()
        .flatten()
        .filter_map(|j| rows.get(j))
        .filter(|r| (r.0 - t).abs() <= 20 * 60_000)
        .min_by_key(|r| (r.0 - t).abs())
        .map(|r| r.1)
}

#[test]
fn forecasts_beat_the_seasonal_naive_forecast() {
    let s = setup();
    // The seasonal-naive forecast's in-sample error: each training reading
    // against the same car park a week before.
    let (mut scale_sum, mut scale_n) = (0.0, 0u32);
    for rows in s.data.values() {
        for &(ts, y, _) in rows.iter().filter(|r| r.0 < s.split) {
            if let Some(prev) = near(rows, ts - WEEK) {
                scale_sum += (y - prev).abs();
                scale_n += 1;
            }
        }
    }
    let scale = scale_sum / f64::from(scale_n);
    for (name, h, bound) in [
        ("1 hour", HOUR, ONE_HOUR_VS_NAIVE),
        ("1 day", 24 * HOUR, ONE_DAY_VS_NAIVE),
    ] {
        let (mut err, mut naive_err, mut n, mut covered, mut skipped) =
            (0.0, 0.0, 0u32, 0u32, 0u32);
        for (code, rows) in &s.data {
            for &(ts, y, cap) in rows.iter().filter(|r| r.0 >= s.split) {
                let origin = ts - h;
                let recent: Vec<(i64, f64)> = rows
                    .iter()
                    .take_while(|r| r.0 <= origin)
                    .map(|r| (r.0, r.1))
                    .collect();
                let f = forecast(&s.base, code, &recent, origin, h, h, Some((0.0, cap)));
                let (Some(p), Some(naive)) = (f.first(), near(rows, ts - WEEK)) else {
                    skipped += 1;
                    continue;
                };
                assert_eq!(p.ts, ts);
                err += (y - p.value).abs();
                naive_err += (y - naive).abs();
                covered += u32::from(p.lo <= y && y <= p.hi);
                n += 1;
            }
        }
        let n_f = f64::from(n);
        let (mase, naive_mase) = (err / n_f / scale, naive_err / n_f / scale);
        println!(
            "parking, {name} ahead: {n} held-back readings forecast ({skipped} without a slot or a reading a week before); \
             MAE {:.1} spaces vs seasonal naive {:.1}; MASE {mase:.3} (seasonal naive {naive_mase:.3} on the same readings, \
             in-sample scale {scale:.1}); 5-95% interval covers {:.1}%",
            err / n_f,
            naive_err / n_f,
            100.0 * f64::from(covered) / n_f
        );
        assert!(
            mase < naive_mase * bound,
            "{name}: MASE {mase:.3} vs naive {naive_mase:.3}"
        );
        assert!(
            f64::from(covered) / n_f > COVERAGE_FLOOR,
            "{name}: coverage"
        );
    }
}

/// An hour ahead the forecasts' MASE is at most this multiple of the
/// seasonal-naive forecast's on the same held-back readings (measured:
/// 0.651 against 0.903, 0.72x)...
const ONE_HOUR_VS_NAIVE: f64 = 0.8;
/// ...and a day ahead, where the level has faded and the forecast is the
/// baseline combined with last week's value, it still beats last week's
/// value alone in this trending pre-Christmas week (measured: 0.853
/// against 0.903, 0.94x; the baseline alone was 1.092).
const ONE_DAY_VS_NAIVE: f64 = 1.0;
/// The 5-95% intervals cover at least this share of held-back readings
/// (measured: 89% an hour ahead, 85% a day ahead).
const COVERAGE_FLOOR: f64 = 0.7;

#[test]
fn what_the_seasonal_detector_flags_in_the_held_back_week() {
    let s = setup();
    let det = s
        .detectors
        .of("occupancy")
        .find(|d| d.seasonal.is_some())
        .unwrap();
    let (mut judged, mut flags, mut alerts) = (0u32, BTreeMap::new(), 0usize);
    let mut per_park: BTreeMap<&str, u32> = BTreeMap::new();
    for (code, rows) in &s.data {
        let mut state = DetectorState::default();
        for &(ts, v, cap) in rows.iter().filter(|r| r.0 >= s.split) {
            let mut r = Reading {
                device_id: code.clone(),
                metric: "occupancy".into(),
                ts,
                value: v,
                seq: None,
                tags: BTreeMap::new(),
            };
            r.tags.insert("capacity".into(), cap.to_string());
            let expected = s.base.expected(code, ts);
            judged += u32::from(expected.is_some());
            let (f, a) = det.alerts(&mut state, &r, expected.as_ref());
            for f in &f {
                *flags.entry(format!("{:?}", f.detector)).or_insert(0u32) += 1;
                if f.detector == Detector::Seasonal {
                    *per_park.entry(code).or_default() += 1;
                }
            }
            alerts += a.len();
        }
    }
    let held: usize = s.data.values().flatten().filter(|r| r.0 >= s.split).count();
    println!(
        "parking, held-back week: {held} readings, {judged} with a known slot; flags by detector {flags:?}; \
         {alerts} alerts; seasonal flags per car park {per_park:?}; {} car parks, {} profiles with usable slots",
        s.data.len(),
        s.base.devices.values().filter(|p| p.usable() > 0).count()
    );
    assert!(
        judged as usize * 2 > held,
        "most held-back readings have a slot"
    );
    // The week before Christmas: most flags are the two car parks whose
    // weekly mean occupancy jumped that week (Others-CCCPS119a 720 to
    // 1,208, Others-CCCPS98 1,140 to 1,663); elsewhere flags are rare.
    let seasonal = flags.get("Seasonal").copied().unwrap_or(0);
    let mut top: Vec<(&str, u32)> = per_park.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    let top2: HashSet<&str> = top.iter().take(2).map(|t| t.0).collect();
    assert_eq!(
        top2,
        HashSet::from(["Others-CCCPS119a", "Others-CCCPS98"]),
        "{top:?}"
    );
    let rest: u32 = top.iter().skip(2).map(|t| t.1).sum();
    assert!(
        f64::from(rest) < 0.05 * f64::from(judged),
        "{rest} of {judged} flagged elsewhere ({seasonal} in all)"
    );
}
