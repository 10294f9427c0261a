//! The shipped detectors (`data/views.toml`) on real data from
//! `../shared/datasets`: precision, recall and F1 on the labelled
//! single-hop sensor network readings, and what they flag in the
//! Birmingham parking data. The floors asserted are a little under what
//! was measured, so a change that makes the detectors worse fails.

use std::collections::{BTreeMap, HashMap};

use braid_core::Reading;
use braid_core::detect::{Detector, DetectorState, Detectors};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped() -> Detectors {
    let text = std::fs::read_to_string(root().join("data/views.toml")).unwrap();
    Detectors::parse(&text).unwrap()
}

/// The text of `../shared/datasets/NAME` (beside the checkout).
pub(crate) fn dataset(name: &str) -> String {
    let path = root().join("../shared/datasets").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the real-data tests read ../shared/datasets beside the checkout)",
            path.display()
        )
    })
}

fn reading(device: String, metric: &str, ts: i64, value: f64) -> Reading {
    Reading {
        device_id: device,
        metric: metric.to_string(),
        ts,
        value,
        seq: None,
        tags: BTreeMap::new(),
    }
}

#[test]
fn labelled_sensor_network_readings() {
    let detectors = shipped();
    let text = dataset("wsn-single-hop.csv");
    let mut states: HashMap<(String, &str), DetectorState> = HashMap::new();
    let (mut tp, mut fp, mut fn_, mut tn) = (0u32, 0u32, 0u32, 0u32);
    let mut alerts = 0usize;
    let mut by_mote: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let ts = 1_273_363_200_000 + f[0].parse::<i64>().unwrap() * 5_000;
        let mote = format!("mote-{}", f[1]);
        let label = f[5].trim() == "1";
        let mut flagged = false;
        for (metric, k) in [("humidity", 3), ("temperature", 4)] {
            let r = reading(mote.clone(), metric, ts, f[k].parse().unwrap());
            for d in detectors.of(metric) {
                let s = states.entry((mote.clone(), metric)).or_default();
                let (flags, a) = d.alerts(s, &r, None);
                flagged |= !flags.is_empty();
                alerts += a.len();
            }
        }
        let e = by_mote.entry(mote).or_default();
        match (flagged, label) {
            (true, true) => {
                tp += 1;
                e.0 += 1;
            }
            (true, false) => {
                fp += 1;
                e.1 += 1;
            }
            (false, true) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let precision = f64::from(tp) / f64::from((tp + fp).max(1));
    let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
    let f1 = 2.0 * precision * recall / (precision + recall).max(1e-9);
    println!(
        "wsn-single-hop: {} rows, {} labelled; flagged: tp {tp}, fp {fp}, fn {fn_}, tn {tn}; precision {precision:.3}, recall {recall:.3}, F1 {f1:.3}; {alerts} alerts; (tp, fp) per mote {by_mote:?}",
        tp + fp + fn_ + tn,
        tp + fn_
    );
    assert_eq!(tp + fn_, 149, "the file's labels");
    assert!(f1 >= F1_FLOOR, "F1 {f1:.3}");
}

/// A little under the F1 measured with the shipped detectors (0.813:
/// precision 1.0, recall 0.685, 4 alerts).
const F1_FLOOR: f64 = 0.78;

#[test]
fn what_they_flag_in_the_parking_data() {
    let detectors = shipped();
    let text = dataset("birmingham-parking.csv");
    let mut states: HashMap<String, DetectorState> = HashMap::new();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let (mut over, mut negative) = (0u32, 0u32);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (code, capacity, occupancy) = (f[0], f[1], f[2].parse::<f64>().unwrap());
        let ts = chrono_free_ts(f[3]);
        let mut r = reading(code.to_string(), "occupancy", ts, occupancy);
        r.tags.insert("capacity".into(), capacity.to_string());
        over += u32::from(occupancy > capacity.parse::<f64>().unwrap());
        negative += u32::from(occupancy < 0.0);
        for d in detectors.of("occupancy") {
            let s = states.entry(code.to_string()).or_default();
            for flag in d.judge(s, &r, None) {
                *counts.entry(format!("{:?}", flag.detector)).or_default() += 1;
            }
        }
    }
    println!(
        "birmingham-parking: rows above capacity {over}, negative {negative}; flags by detector {counts:?}"
    );
    assert_eq!(
        counts.get("Max").copied().unwrap_or(0),
        over,
        "every reading above capacity"
    );
    assert_eq!(
        counts.get("Min").copied().unwrap_or(0),
        negative,
        "every negative reading"
    );
    let _ = Detector::Stuck;
}

/// `YYYY-MM-DD HH:MM:SS` as epoch ms, treating it as UTC (the order and
/// the gaps are what the detectors use).
fn chrono_free_ts(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11, 13)) * 60 + n(14, 16)) * 60_000 + n(17, 19) * 1000
}
