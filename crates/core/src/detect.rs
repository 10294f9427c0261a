//! Anomaly detectors, per device and metric, one reading at a time.
//!
//! Configured in the views file as `[[detectors]]` tables, each for one
//! metric (and the views it feeds):
//!
//! ```toml
//! [[detectors]]
//! metric = "power_w"
//! min = 0.0             # static bounds (either or both)
//! max = 12000.0
//! max_rate = 2000.0     # largest change per second between two readings
//! stuck = 60            # this many identical readings in a row
//! robust = true         # the online detector (below)
//! seasonal = "home_power" # the seasonal detector, trained from this view
//! seasonal_k = 4.0      # its threshold, in the slot's spreads
//! timezone = "UTC"      # the calendar of its hours of the week
//! k = 6.0               # its threshold, in spreads
//! alpha = 0.05          # its smoothing
//! warmup = 30           # readings before it judges
//! rel_spread = 0.01     # its spread's floor, relative to the level
//! min_spread = 0.0      # ...and absolute
//! rearm = 5             # normal readings before an alert can fire again
//! ```
//!
//! The online detector is for devices without history: an exponentially
//! weighted Huber estimate of the centre and of the mean absolute
//! deviation around it. Each reading is scored by its distance from the
//! centre in spreads; it teaches the estimates only clipped to the centre
//! ± 2 spreads, and a flagged reading teaches nothing, so an excursion
//! neither drags the centre nor widens the spread while it lasts; after
//! `warmup` flagged readings in a row the detector takes the new level as
//! normal, slowly (a sensor moved, a season changed).
//! The spread has a floor (`rel_spread`, 1% of the centre's magnitude by
//! default, and `min_spread`, absolute), so a sensor that barely changes
//! does not make every later wobble an anomaly: with the defaults a
//! reading is flagged when it is more than 6 spreads and more than 6% of
//! its level away from the centre.
//!
//! The seasonal detector is for devices with history: the batch layer
//! trains a baseline per device from the named view's windows (see
//! [`crate::baseline`]), and a reading is scored by its distance from its
//! hour of the week's median in that slot's spreads (with the same floor
//! as the online detector's). Where a device's slot is known, the seasonal
//! detector judges the reading and the online one does not; elsewhere
//! (new devices, hours without history, before the first batch run) the
//! online one does.
//!
//! A flag is a reading a detector finds abnormal; an alert is the first
//! flag of a run: a detector that fired stays quiet for that device and
//! metric until `rearm` normal readings in a row, so a long excursion gives
//! one alert, not one per reading.

use serde::{Deserialize, Serialize};

use crate::baseline::{MetricBaseline, Season, SlotStats, Trainer};
use crate::fold::GroupKey;
use crate::view::ViewsError;
use crate::{AggState, Aggregate, Reading, ViewDef, ViewSet};

/// One metric's detectors, as configured.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorDef {
    /// The metric judged.
    pub metric: String,
    /// Lowest normal value.
    #[serde(default)]
    pub min: Option<f64>,
    /// Highest normal value.
    #[serde(default)]
    pub max: Option<f64>,
    /// A tag whose number is the reading's own highest normal value (e.g.
    /// a car park's `capacity`); readings without it are not bounded by it.
    #[serde(default)]
    pub max_tag: Option<String>,
    /// Largest normal change per second between consecutive readings.
    #[serde(default)]
    pub max_rate: Option<f64>,
    /// Identical readings in a row that make a stuck sensor.
    #[serde(default)]
    pub stuck: Option<u32>,
    /// Whether the online robust detector runs.
    #[serde(default)]
    pub robust: bool,
    /// The view whose batch windows train the seasonal baseline (grouped
    /// by `device_id`, tumbling windows that divide an hour, with
    /// `quantiles`); no seasonal detector when absent.
    #[serde(default)]
    pub seasonal: Option<String>,
    /// The seasonal detector's threshold, in the slot's spreads.
    #[serde(default = "default_seasonal_k")]
    pub seasonal_k: f64,
    /// The time zone whose hours of the week the baseline is kept in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The online detector's threshold, in spreads.
    #[serde(default = "default_k")]
    pub k: f64,
    /// The online detector's smoothing (0..1).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Readings the online detector learns from before it judges.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// The online detector's spread is at least this fraction of the
    /// centre's magnitude (default 0.01): the sensor's resolution, so that
    /// a very quiet sensor does not make every small wobble an anomaly.
    #[serde(default = "default_rel_spread")]
    pub rel_spread: f64,
    /// ...and at least this much, absolutely (default 0; set it for
    /// signals that hover near zero).
    #[serde(default)]
    pub min_spread: f64,
    /// Normal readings in a row before a detector that fired can fire
    /// again.
    #[serde(default = "default_rearm")]
    pub rearm: u32,
}

fn default_k() -> f64 {
    6.0
}
fn default_seasonal_k() -> f64 {
    4.0
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_alpha() -> f64 {
    0.05
}
fn default_warmup() -> u32 {
    30
}
fn default_rel_spread() -> f64 {
    0.01
}
fn default_rearm() -> u32 {
    5
}

/// Which detector flagged a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Below `min`.
    Min,
    /// Above `max`.
    Max,
    /// Changed faster than `max_rate`.
    Rate,
    /// The same value `stuck` times in a row.
    Stuck,
    /// Far from the online centre.
    Robust,
    /// Far from the device's usual value at this hour of the week.
    Seasonal,
}

impl Detector {
    const ALL: [Detector; 6] = [
        Detector::Min,
        Detector::Max,
        Detector::Rate,
        Detector::Stuck,
        Detector::Robust,
        Detector::Seasonal,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Unusual.
    Warning,
    /// Impossible or far off (outside static bounds, or over twice the
    /// threshold).
    Critical,
}

/// A reading a detector finds abnormal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// Which detector.
    pub detector: Detector,
    /// How far off: for bounds and rate the ratio to the limit crossed,
    /// for stuck the run length, for the online detector spreads from the
    /// centre.
    pub score: f64,
    /// The normal range at that moment: lowest (`None`: unbounded)...
    pub expected_min: Option<f64>,
    /// ...and highest normal value.
    pub expected_max: Option<f64>,
    /// How bad.
    pub severity: Severity,
}

/// An alert: the first flag of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The device.
    pub device_id: String,
    /// The metric.
    pub metric: String,
    /// Event time of the reading, epoch ms.
    pub ts: i64,
    /// Its value.
    pub value: f64,
    /// The flag that raised it.
    #[serde(flatten)]
    pub flag: Flag,
}

/// What the detectors remember of one device and metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    last: Option<(i64, f64)>,
    same: u32,
    n: u32,
    centre: f64,
    spread: f64,
    /// Per detector: whether it has fired and not re-armed, and the
    /// normal readings seen since.
    fired: [bool; 6],
    normal: [u32; 6],
    /// Flagged readings in a row the online detector did not learn from.
    held: u32,
}

impl DetectorState {
    /// Readings seen.
    pub fn readings(&self) -> u32 {
        self.n
    }
}

impl DetectorDef {
    fn floor(&self, centre: f64) -> f64 {
        (centre.abs() * self.rel_spread)
            .max(self.min_spread)
            .max(1e-9)
    }

    /// The calendar of the seasonal baseline.
    pub fn season(&self) -> Season {
        Season::parse(&self.timezone).unwrap_or_default()
    }

    /// Judges one reading (in event-time order per device) and updates
    /// `state`: every flag it raises. `expected` is the reading's slot of
    /// the device's seasonal baseline, where known.
    pub fn judge(
        &self,
        state: &mut DetectorState,
        reading: &Reading,
        expected: Option<&SlotStats>,
    ) -> Vec<Flag> {
        let (ts, value) = (reading.ts, reading.value);
        let mut flags = Vec::new();
        // A bound from the reading's own tag replaces the static one.
        let max = self
            .max_tag
            .as_ref()
            .and_then(|t| reading.tags.get(t))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|m| m.is_finite())
            .or(self.max);
        if let Some(max) = max.filter(|m| value > *m) {
            flags.push(Flag {
                detector: Detector::Max,
                score: ratio(value - max, max),
                expected_min: self.min,
                expected_max: Some(max),
                severity: Severity::Critical,
            });
        }
        if let Some(min) = self.min.filter(|m| value < *m) {
            flags.push(Flag {
                detector: Detector::Min,
                score: ratio(min - value, min),
                expected_min: Some(min),
                expected_max: max,
                severity: Severity::Critical,
            });
        }
        if let (Some(rate), Some((t0, v0))) = (self.max_rate, state.last) {
            let dt = ((ts - t0) as f64 / 1000.0).max(1e-3);
            let r = (value - v0).abs() / dt;
            if r > rate {
                flags.push(Flag {
                    detector: Detector::Rate,
                    score: r / rate,
                    expected_min: Some(v0 - rate * dt),
                    expected_max: Some(v0 + rate * dt),
                    severity: Severity::Warning,
                });
            }
        }
        state.same = match state.last {
            Some((_, v0)) if v0 == value => state.same + 1,
            _ => 1,
        };
        if let Some(stuck) = self.stuck.filter(|s| state.same >= *s) {
            flags.push(Flag {
                detector: Detector::Stuck,
                score: f64::from(state.same) / f64::from(stuck),
                expected_min: Some(value),
                expected_max: Some(value),
                severity: Severity::Warning,
            });
        }
        let seasonal = expected.filter(|_| self.seasonal.is_some());
        if let Some(s) = seasonal {
            let spread = s.spread.max(self.floor(s.centre));
            let score = (value - s.centre).abs() / spread;
            if score > self.seasonal_k {
                flags.push(Flag {
                    detector: Detector::Seasonal,
                    score,
                    expected_min: Some(s.centre - self.seasonal_k * spread),
                    expected_max: Some(s.centre + self.seasonal_k * spread),
                    severity: if score > 2.0 * self.seasonal_k {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                });
            }
        } else if self.robust
            && let Some(f) = self.robust_step(state, value)
        {
            flags.push(f);
        }
        state.last = Some((ts, value));
        flags
    }

    fn robust_step(&self, state: &mut DetectorState, value: f64) -> Option<Flag> {
        state.n = state.n.saturating_add(1);
        if state.n == 1 {
            state.centre = value;
            state.spread = 0.0;
            return None;
        }
        let spread = state.spread.max(self.floor(state.centre));
        let score = (value - state.centre).abs() / spread;
        let flag = (state.n > self.warmup && score > self.k).then_some(Flag {
            detector: Detector::Robust,
            score,
            expected_min: Some(state.centre - self.k * spread),
            expected_max: Some(state.centre + self.k * spread),
            severity: if score > 2.0 * self.k {
                Severity::Critical
            } else {
                Severity::Warning
            },
        });
        // Learn: plainly during warm-up; after it, with the reading clipped
        // to Huber's 2 spreads, and not at all from a flagged reading
        // unless the excursion has lasted `warmup` readings (then the
        // new level is learnt, slowly).
        if flag.is_some() && state.held < self.warmup {
            state.held += 1;
            return flag;
        }
        if flag.is_none() {
            state.held = 0;
        }
        let alpha = if state.n <= self.warmup {
            (1.0 / f64::from(state.n)).max(self.alpha)
        } else {
            self.alpha
        };
        let x = if state.n > self.warmup {
            value.clamp(state.centre - HUBER * spread, state.centre + HUBER * spread)
        } else {
            value
        };
        state.centre += alpha * (x - state.centre);
        state.spread += alpha * ((x - state.centre).abs() - state.spread);
        flag
    }

    /// Judges one reading and returns the alerts it raises: flags of
    /// detectors that were armed. Detectors that did not flag count the
    /// reading towards re-arming.
    pub fn alerts(
        &self,
        state: &mut DetectorState,
        reading: &Reading,
        expected: Option<&SlotStats>,
    ) -> (Vec<Flag>, Vec<Alert>) {
        let flags = self.judge(state, reading, expected);
        let mut alerts = Vec::new();
        for d in Detector::ALL {
            let i = d.index();
            match flags.iter().find(|f| f.detector == d) {
                Some(f) => {
                    state.normal[i] = 0;
                    if !state.fired[i] {
                        state.fired[i] = true;
                        alerts.push(Alert {
                            device_id: reading.device_id.clone(),
                            metric: self.metric.clone(),
                            ts: reading.ts,
                            value: reading.value,
                            flag: f.clone(),
                        });
                    }
                }
                None if state.fired[i] => {
                    state.normal[i] += 1;
                    if state.normal[i] >= self.rearm {
                        state.fired[i] = false;
                        state.normal[i] = 0;
                    }
                }
                None => {}
            }
        }
        (flags, alerts)
    }
}

/// Where the online detector clips what it learns from, in spreads.
const HUBER: f64 = 2.0;

fn ratio(over: f64, limit: f64) -> f64 {
    1.0 + over / limit.abs().max(1e-9)
}

/// Every `[[detectors]]` table of a views file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detectors {
    /// In file order.
    pub defs: Vec<DetectorDef>,
}

#[derive(Deserialize)]
struct FileToml {
    #[serde(default)]
    detectors: Vec<DetectorDef>,
}

impl Detectors {
    /// Reads the `[[detectors]]` tables of a views file's text (the rest is
    /// the views' business; [`crate::ViewSet::parse`] ignores these tables).
    pub fn parse(text: &str) -> Result<Self, ViewsError> {
        #[derive(Deserialize)]
        struct Any {
            #[serde(flatten)]
            file: FileToml,
            #[serde(flatten)]
            _rest: toml::Table,
        }
        let any: Any = toml::from_str(text).map_err(|e| ViewsError {
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
            view: None,
            field: Some("detectors".into()),
            message: e.message().trim().to_string(),
        })?;
        let defs = any.file.detectors;
        for (i, d) in defs.iter().enumerate() {
            let bad = |field: &str, message: &str| ViewsError {
                line: None,
                view: None,
                field: Some(format!("detectors[{i}].{field}")),
                message: format!("detector for `{}`: {message}", d.metric),
            };
            if d.metric.is_empty() {
                return Err(bad("metric", "name the metric"));
            }
            if let (Some(lo), Some(hi)) = (d.min, d.max)
                && lo >= hi
            {
                return Err(bad("min", "must be below max"));
            }
            if d.max_rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(bad("max_rate", "must be a positive number"));
            }
            if d.stuck.is_some_and(|s| s < 2) {
                return Err(bad("stuck", "must be at least 2"));
            }
            if !(d.k.is_finite() && d.k > 0.0) {
                return Err(bad("k", "must be a positive number"));
            }
            if !(d.alpha > 0.0 && d.alpha < 1.0) {
                return Err(bad("alpha", "must be between 0 and 1"));
            }
            if !(d.rel_spread >= 0.0 && d.rel_spread.is_finite()) {
                return Err(bad("rel_spread", "must be zero or more"));
            }
            if !(d.min_spread >= 0.0 && d.min_spread.is_finite()) {
                return Err(bad("min_spread", "must be zero or more"));
            }
            if d.rearm == 0 {
                return Err(bad("rearm", "must be at least 1"));
            }
            if !(d.seasonal_k.is_finite() && d.seasonal_k > 0.0) {
                return Err(bad("seasonal_k", "must be a positive number"));
            }
            if let Err(e) = Season::parse(&d.timezone) {
                return Err(bad("timezone", &e));
            }
            if d.min.is_none()
                && d.max.is_none()
                && d.max_tag.is_none()
                && d.max_rate.is_none()
                && d.stuck.is_none()
                && !d.robust
                && d.seasonal.is_none()
            {
                return Err(bad(
                    "metric",
                    "no detector set: give min, max, max_tag, max_rate, stuck, robust = true or seasonal = VIEW",
                ));
            }
        }
        Ok(Self { defs })
    }

    /// The detectors of `metric`.
    pub fn of(&self, metric: &str) -> impl Iterator<Item = &DetectorDef> {
        self.defs.iter().filter(move |d| d.metric == metric)
    }

    /// Checks that every seasonal detector names a view that can train
    /// its baseline: one that exists, takes the metric, is grouped by
    /// `device_id` (and `metric` when it takes several), has tumbling
    /// windows that divide an hour, and has `quantiles`.
    pub fn check_views(&self, views: &ViewSet) -> Result<(), ViewsError> {
        for (i, d) in self.defs.iter().enumerate() {
            let Some(name) = &d.seasonal else { continue };
            let bad = |message: String| ViewsError {
                line: None,
                view: Some(name.clone()),
                field: Some(format!("detectors[{i}].seasonal")),
                message: format!("detector for `{}`: {message}", d.metric),
            };
            let v = views
                .get(name)
                .ok_or_else(|| bad(format!("no view named `{name}`")))?;
            if !v.accepts_metric(&d.metric) {
                return Err(bad(format!("view `{name}` does not take `{}`", d.metric)));
            }
            let single = v.metrics.len() == 1;
            let keys_ok = v.group_by.iter().any(|k| k == "device_id")
                && v.group_by.iter().all(|k| k == "device_id" || k == "metric")
                && (single || v.group_by.iter().any(|k| k == "metric"));
            if !keys_ok {
                return Err(bad(format!(
                    "view `{name}` must be grouped by device_id (and metric, as it takes several metrics) and nothing else"
                )));
            }
            let w = &v.windowing;
            if !w.is_tumbling() || 3_600_000 % w.size_ms != 0 {
                return Err(bad(format!(
                    "view `{name}` needs tumbling windows that divide an hour"
                )));
            }
            if !v.aggregates.contains(&Aggregate::Quantiles) {
                return Err(bad(format!(
                    "view `{name}` needs the `quantiles` aggregate"
                )));
            }
        }
        Ok(())
    }
}

impl DetectorDef {
    /// Trains this seasonal detector's baseline from windows of its view
    /// (as checked by [`Detectors::check_views`]): (window start, group,
    /// state) in any order.
    pub fn train<'a>(
        &self,
        view: &ViewDef,
        windows: impl IntoIterator<Item = (i64, &'a GroupKey, &'a AggState)>,
    ) -> MetricBaseline {
        let at = |key: &str| view.group_by.iter().position(|k| k == key);
        let (dev, met) = (at("device_id"), at("metric"));
        let mut t = Trainer::new(self.season(), view.windowing.size_ms);
        for (start, group, state) in windows {
            if met.is_some_and(|m| group.get(m).and_then(Option::as_deref) != Some(&self.metric)) {
                continue;
            }
            if let Some(Some(device)) = dev.and_then(|i| group.get(i)) {
                t.add(device, start, state);
            }
        }
        t.finish(&view.name)
    }
}

/// The seasonal baselines a set of detectors trains, and where they come
/// from: (metric, view) for every seasonal detector.
pub fn seasonal_views(detectors: &Detectors) -> Vec<(&DetectorDef, &str)> {
    detectors
        .defs
        .iter()
        .filter_map(|d| d.seasonal.as_deref().map(|v| (d, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ts: i64, value: f64) -> Reading {
        Reading {
            device_id: "dev".into(),
            metric: "m".into(),
            ts,
            value,
            seq: None,
            tags: Default::default(),
        }
    }

    impl DetectorDef {
        fn judge_plain(&self, s: &mut DetectorState, r: &Reading) -> Vec<Flag> {
            self.judge(s, r, None)
        }
    }

    fn def(text: &str) -> DetectorDef {
        Detectors::parse(&format!("[[detectors]]\n{text}"))
            .unwrap()
            .defs
            .remove(0)
    }

    #[test]
    fn static_bounds_rate_and_stuck() {
        let d =
            def("metric = \"m\"\nmin = 0.0\nmax = 100.0\nmax_rate = 10.0\nstuck = 3\nrearm = 2\n");
        let mut s = DetectorState::default();
        let kinds = |f: &[Flag]| f.iter().map(|f| f.detector).collect::<Vec<_>>();
        assert!(d.judge_plain(&mut s, &r(0, 50.0)).is_empty());
        assert_eq!(
            kinds(&d.judge_plain(&mut s, &r(1000, 120.0))),
            [Detector::Max, Detector::Rate]
        );
        assert_eq!(
            kinds(&d.judge_plain(&mut s, &r(2000, -1.0))),
            [Detector::Min, Detector::Rate]
        );
        let mut s = DetectorState::default();
        d.judge_plain(&mut s, &r(0, 5.0));
        d.judge_plain(&mut s, &r(1000, 5.0));
        assert_eq!(
            kinds(&d.judge_plain(&mut s, &r(2000, 5.0))),
            [Detector::Stuck]
        );
        // A bound from the reading's own tag.
        let d = def("metric = \"m\"\nmax_tag = \"capacity\"\n");
        let mut full = r(0, 120.0);
        full.tags.insert("capacity".into(), "100".into());
        assert_eq!(
            kinds(&d.judge_plain(&mut DetectorState::default(), &full)),
            [Detector::Max]
        );
        assert!(
            d.judge_plain(&mut DetectorState::default(), &r(0, 120.0))
                .is_empty()
        );
    }

    #[test]
    fn a_long_excursion_alerts_once_and_rearms() {
        let d = def("metric = \"m\"\nmax = 10.0\nrearm = 3\n");
        let mut s = DetectorState::default();
        let mut alerts = 0;
        for (i, v) in [1.0, 20.0, 21.0, 22.0, 1.0, 1.0, 20.0, 1.0, 1.0, 1.0, 30.0]
            .into_iter()
            .enumerate()
        {
            alerts += d.alerts(&mut s, &r(i as i64 * 1000, v), None).1.len();
        }
        // 20 (fires), 21, 22 quiet; two normals are not enough to re-arm
        // before 20 again; three normals then 30 fires again.
        assert_eq!(alerts, 2);
    }

    #[test]
    fn the_online_detector_learns_a_level_and_flags_a_jump() {
        let d = def("metric = \"m\"\nrobust = true\nk = 6.0\nwarmup = 20\n");
        let mut s = DetectorState::default();
        for i in 0..200 {
            let v = 20.0 + 0.1 * ((i % 7) as f64 - 3.0);
            assert!(
                d.judge_plain(&mut s, &r(i * 1000, v)).is_empty() || i < 20,
                "reading {i} flagged"
            );
        }
        let f = d.judge_plain(&mut s, &r(200_000, 25.0));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].score > 6.0 && f[0].expected_min < Some(20.0) && f[0].expected_max > Some(20.0),
            "{f:?}"
        );
        // The outlier moved the centre by no more than a normal reading.
        assert!((s.centre - 20.0).abs() < 0.2, "{}", s.centre);
    }

    #[test]
    fn the_seasonal_detector_judges_where_the_slot_is_known() {
        let d = def("metric = \"m\"\nrobust = true\nseasonal = \"v\"\nwarmup = 2\n");
        let usual = SlotStats {
            readings: 50,
            centre: 100.0,
            spread: 5.0,
            lo: 92.0,
            hi: 108.0,
        };
        let mut s = DetectorState::default();
        assert!(d.judge_plain(&mut s, &r(0, 10.0)).is_empty());
        assert!(d.judge(&mut s, &r(1, 110.0), Some(&usual)).is_empty());
        let f = d.judge(&mut s, &r(2, 130.0), Some(&usual));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].detector, Detector::Seasonal);
        assert_eq!(f[0].score, 6.0);
        assert_eq!(
            (f[0].expected_min, f[0].expected_max),
            (Some(80.0), Some(120.0))
        );
        assert_eq!(f[0].severity, Severity::Warning);
        let f = d.judge(&mut s, &r(3, 150.0), Some(&usual));
        assert_eq!(f[0].severity, Severity::Critical);
        // The online detector saw only the reading without a slot.
        assert_eq!(s.readings(), 1);
    }

    #[test]
    fn a_seasonal_detector_needs_a_view_that_can_train_it() {
        let views = ViewSet::parse(
            "[[views]]\nname = \"ok\"\nmetrics = [\"m\"]\nwindow = \"30m\"\ngroup_by = [\"device_id\"]\naggregates = [\"quantiles\"]\n\
             [[views]]\nname = \"wide\"\nmetrics = [\"m\"]\nwindow = \"2h\"\ngroup_by = [\"device_id\"]\naggregates = [\"quantiles\"]\n\
             [[views]]\nname = \"mean\"\nmetrics = [\"m\"]\nwindow = \"1h\"\ngroup_by = [\"device_id\"]\naggregates = [\"mean\"]\n\
             [[views]]\nname = \"all\"\nwindow = \"1h\"\ngroup_by = [\"device_id\"]\naggregates = [\"quantiles\"]\n",
        )
        .unwrap();
        let check = |view: &str| {
            Detectors::parse(&format!(
                "[[detectors]]\nmetric = \"m\"\nseasonal = \"{view}\"\n"
            ))
            .unwrap()
            .check_views(&views)
        };
        assert!(check("ok").is_ok());
        for (view, says) in [
            ("nope", "no view"),
            ("wide", "divide an hour"),
            ("mean", "quantiles"),
            ("all", "grouped by device_id"),
        ] {
            let e = check(view).unwrap_err();
            assert!(e.message.contains(says), "{view}: {e}");
            assert_eq!(e.field.as_deref(), Some("detectors[0].seasonal"));
        }
        let e = Detectors::parse(
            "[[detectors]]\nmetric = \"m\"\nseasonal = \"ok\"\ntimezone = \"Nowhere\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("detectors[0].timezone"));
    }

    #[test]
    fn bad_tables_name_the_field() {
        let e =
            Detectors::parse("[[detectors]]\nmetric = \"m\"\nmin = 5.0\nmax = 1.0\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("detectors[0].min"));
        let e = Detectors::parse("[[detectors]]\nmetric = \"m\"\n").unwrap_err();
        assert!(e.message.contains("no detector set"), "{e}");
        let e =
            Detectors::parse("[[detectors]]\nmetric = \"m\"\nmax = 1.0\nbogus = 1\n").unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
        assert!(
            Detectors::parse("[defaults]\ncurrent = \"1m\"\n")
                .unwrap()
                .defs
                .is_empty()
        );
    }
}
