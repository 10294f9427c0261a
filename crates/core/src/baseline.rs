//! Seasonal baselines: per device and metric, what is normal in each hour
//! of the week, and forecasts from them.
//!
//! The batch layer trains a baseline from a view's recomputed windows (a
//! view grouped by device, with windows of at most an hour that divide it,
//! and quantiles): each window's core [`AggState`] is merged into the state
//! of its hour of the week (in the detector's time zone), so a slot holds
//! every reading of, say, Tuesdays 08:00-09:00 over the whole archive,
//! merged exactly as the layers merge states. A slot is summarised by its
//! median (the centre), a robust spread (the interquartile range / 1.349,
//! a standard deviation for normal data), its 5% and 95% quantiles and its
//! reading count; it judges only with at least [`MIN_READINGS`] readings.
//!
//! The seasonal detector ([`crate::detect`]) scores a reading by its
//! distance from its slot's centre in spreads. A forecast ([`forecast`])
//! is the slot's centre plus the device's deviation from its baseline
//! ([`level`]): the mean deviation over the last day (a trend or season
//! the baseline's weeks average away), plus the deviation of the last
//! hours over that, damped hour by hour (a busy afternoon says something
//! about the next hour, little about tomorrow); the slot's 5-95% range,
//! shifted alike, is its interval. Where the value of a week before is
//! known (the seasonal-naive forecast), the two forecasts are averaged.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{Offset, TimeZone};
use serde::Serialize;

use crate::Column;
use crate::agg::AggState;
use crate::encoding::{DecodeError, Reader, Writer};
use crate::hash::stable_hash;

/// Hours in a week: the slots of a profile.
pub const SLOTS: usize = 168;

/// Readings a slot needs before it judges or forecasts.
pub const MIN_READINGS: u64 = 8;

const HOUR_MS: i64 = 3_600_000;

/// The calendar a baseline's hours of the week are read in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Season {
    tz: chrono_tz::Tz,
}

impl fmt::Debug for Season {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Season({})", self.tz.name())
    }
}

impl Default for Season {
    fn default() -> Self {
        Self {
            tz: chrono_tz::Tz::UTC,
        }
    }
}

impl Season {
    /// The season of an IANA time zone name (`UTC`, `Europe/London`).
    pub fn parse(tz: &str) -> Result<Self, String> {
        tz.parse::<chrono_tz::Tz>()
            .map(|tz| Self { tz })
            .map_err(|_| format!("`{tz}` is not an IANA time zone name (e.g. UTC, Europe/London)"))
    }

    /// The time zone's name.
    pub fn name(&self) -> &'static str {
        self.tz.name()
    }

    /// The hour of the week of `ts_ms` (Monday 00:00-01:00 is 0).
    pub fn slot(&self, ts_ms: i64) -> usize {
        self.position(ts_ms).0
    }

    /// The hour of the week of `ts_ms` and how far into it, 0..1.
    pub fn position(&self, ts_ms: i64) -> (usize, f64) {
        const DAY_MS: i64 = 24 * HOUR_MS;
        // The zone's offset at that instant (none for UTC), then plain
        // arithmetic on local time: this runs for every judged reading.
        let offset_ms = if self.tz == chrono_tz::Tz::UTC {
            0
        } else {
            match chrono::DateTime::from_timestamp_millis(ts_ms) {
                Some(t) => {
                    i64::from(
                        self.tz
                            .offset_from_utc_datetime(&t.naive_utc())
                            .fix()
                            .local_minus_utc(),
                    ) * 1000
                }
                None => 0,
            }
        };
        let local = ts_ms.saturating_add(offset_ms);
        // 1970-01-01 was a Thursday: day 0 is weekday 3 from Monday.
        let weekday = (local.div_euclid(DAY_MS) + 3).rem_euclid(7);
        let in_day = local.rem_euclid(DAY_MS);
        (
            (weekday * 24 + in_day / HOUR_MS) as usize,
            (in_day % HOUR_MS) as f64 / HOUR_MS as f64,
        )
    }
}

/// What one hour of the week holds for a device and metric.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlotStats {
    /// Readings merged.
    pub readings: u64,
    /// The median.
    pub centre: f64,
    /// Interquartile range / 1.349.
    pub spread: f64,
    /// The 5% quantile.
    pub lo: f64,
    /// The 95% quantile.
    pub hi: f64,
}

impl SlotStats {
    /// `self` moved `w` (0..1) of the way to `other`.
    fn towards(&self, other: &Self, w: f64) -> Self {
        let mix = |a: f64, b: f64| a + (b - a) * w;
        Self {
            readings: self.readings.min(other.readings),
            centre: mix(self.centre, other.centre),
            spread: mix(self.spread, other.spread),
            lo: mix(self.lo, other.lo),
            hi: mix(self.hi, other.hi),
        }
    }

    /// The summary of a merged slot state; `None` without readings or a
    /// sketch.
    pub fn of(state: &AggState) -> Option<Self> {
        let q = |p| state.quantile(p);
        let (p25, p75) = (q(0.25)?, q(0.75)?);
        Some(Self {
            readings: state.count(),
            centre: q(0.5)?,
            spread: (p75 - p25) / 1.349,
            lo: q(0.05)?,
            hi: q(0.95)?,
        })
    }
}

/// One device's slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    slots: Vec<Option<SlotStats>>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            slots: vec![None; SLOTS],
        }
    }
}

impl Profile {
    /// The slot's summary, when it has enough readings to judge.
    pub fn at(&self, slot: usize) -> Option<&SlotStats> {
        self.slots
            .get(slot)?
            .as_ref()
            .filter(|s| s.readings >= MIN_READINGS)
    }

    /// What is normal at `ts`: its slot's summary, interpolated towards
    /// the neighbouring slot's by the distance from the middle of the hour
    /// (so a steep morning rise is not one step per hour); `None` when the
    /// slot has too few readings.
    pub fn around(&self, season: &Season, ts: i64) -> Option<SlotStats> {
        let (slot, frac) = season.position(ts);
        let here = self.at(slot)?;
        let (other, w) = if frac < 0.5 {
            ((slot + SLOTS - 1) % SLOTS, 0.5 - frac)
        } else {
            ((slot + 1) % SLOTS, frac - 0.5)
        };
        Some(match self.at(other) {
            Some(o) => here.towards(o, w),
            None => *here,
        })
    }

    /// Slots with enough readings.
    pub fn usable(&self) -> usize {
        (0..SLOTS).filter(|&s| self.at(s).is_some()).count()
    }
}

/// The baseline of one metric: one profile per device.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricBaseline {
    /// The view it was trained from.
    pub view: String,
    /// Its calendar.
    pub season: Season,
    /// Profiles by device id (shared, so a reader can hold one device's).
    pub devices: BTreeMap<String, Arc<Profile>>,
}

impl MetricBaseline {
    /// What is normal for `device` at `ts`, if known (see
    /// [`Profile::around`]).
    pub fn expected(&self, device: &str, ts: i64) -> Option<SlotStats> {
        self.devices.get(device)?.around(&self.season, ts)
    }
}

/// Every metric's baseline from one batch run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Baselines {
    /// The batch run that trained them.
    pub run_id: String,
    /// When, epoch ms.
    pub trained_ms: i64,
    /// By metric.
    pub metrics: BTreeMap<String, MetricBaseline>,
}

const MAGIC: &[u8; 8] = b"BRAIDBL1";

impl Baselines {
    /// Profiles held, over every metric.
    pub fn profiles(&self) -> usize {
        self.metrics.values().map(|m| m.devices.len()).sum()
    }

    /// The file form: magic, checksum, payload (canonical: equal
    /// baselines give equal bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(self.run_id.as_bytes());
        w.ivar(self.trained_ms);
        w.uvar(self.metrics.len() as u64);
        for (metric, m) in &self.metrics {
            w.bytes(metric.as_bytes());
            w.bytes(m.view.as_bytes());
            w.bytes(m.season.name().as_bytes());
            w.uvar(m.devices.len() as u64);
            for (device, p) in &m.devices {
                w.bytes(device.as_bytes());
                let filled: Vec<(usize, &SlotStats)> = p
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                    .collect();
                w.uvar(filled.len() as u64);
                for (i, s) in filled {
                    w.u8(i as u8);
                    w.uvar(s.readings);
                    for x in [s.centre, s.spread, s.lo, s.hi] {
                        w.f64(x);
                    }
                }
            }
        }
        let payload = w.into_bytes();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&stable_hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Reads what [`Baselines::encode`] wrote, refusing a damaged file.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bad = |what: &'static str| DecodeError::Invalid(what);
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or(bad("not a baselines file"))?;
        let (sum, payload) = rest.split_at_checked(8).ok_or(bad("truncated"))?;
        let sum = u64::from_le_bytes(sum.try_into().map_err(|_| bad("truncated"))?);
        if stable_hash(payload) != sum {
            return Err(bad("baselines checksum mismatch"));
        }
        let mut r = Reader::new(payload);
        let text = |r: &mut Reader<'_>, what| {
            String::from_utf8(r.bytes(what)?.to_vec()).map_err(|_| bad("text is not UTF-8"))
        };
        let run_id = text(&mut r, "run id")?;
        let trained_ms = r.ivar("trained")?;
        let mut metrics = BTreeMap::new();
        for _ in 0..r.len("metrics", 3)? {
            let metric = text(&mut r, "metric")?;
            let view = text(&mut r, "view")?;
            let season =
                Season::parse(&text(&mut r, "time zone")?).map_err(|_| bad("unknown time zone"))?;
            let mut devices = BTreeMap::new();
            for _ in 0..r.len("devices", 2)? {
                let device = text(&mut r, "device")?;
                let mut p = Profile::default();
                for _ in 0..r.len("slots", 34)? {
                    let i = usize::from(r.u8("slot")?);
                    let readings = r.uvar("readings")?;
                    let mut x = [0.0; 4];
                    for v in &mut x {
                        *v = r.f64("slot stat")?;
                    }
                    let slot = p.slots.get_mut(i).ok_or(bad("slot out of range"))?;
                    *slot = Some(SlotStats {
                        readings,
                        centre: x[0],
                        spread: x[1],
                        lo: x[2],
                        hi: x[3],
                    });
                }
                devices.insert(device, Arc::new(p));
            }
            metrics.insert(
                metric,
                MetricBaseline {
                    view,
                    season,
                    devices,
                },
            );
        }
        r.finish()?;
        Ok(Self {
            run_id,
            trained_ms,
            metrics,
        })
    }
}

/// Trains one metric's baseline from windows of a view.
#[derive(Debug)]
pub struct Trainer {
    season: Season,
    window_ms: i64,
    states: BTreeMap<String, Vec<Option<AggState>>>,
}

impl Trainer {
    /// A trainer for windows of `window_ms` (at most an hour, dividing it),
    /// reading hours in `season`.
    pub fn new(season: Season, window_ms: i64) -> Self {
        Self {
            season,
            window_ms,
            states: BTreeMap::new(),
        }
    }

    /// Merges one window's state of `device` (the view's state must carry
    /// a sketch).
    pub fn add(&mut self, device: &str, window_start: i64, state: &AggState) {
        if state.count() == 0 || state.quantile(0.5).is_none() {
            return;
        }
        debug_assert!(self.window_ms <= HOUR_MS && HOUR_MS % self.window_ms == 0);
        let slot = self.season.slot(window_start);
        let slots = match self.states.get_mut(device) {
            Some(s) => s,
            None => self
                .states
                .entry(device.to_string())
                .or_insert_with(|| vec![None; SLOTS]),
        };
        match &mut slots[slot] {
            Some(s) => s.merge(state),
            empty => *empty = Some(state.clone()),
        }
    }

    /// The baseline, named after `view`.
    pub fn finish(self, view: &str) -> MetricBaseline {
        let devices = self
            .states
            .into_iter()
            .map(|(device, slots)| {
                let slots = slots
                    .iter()
                    .map(|s| s.as_ref().and_then(SlotStats::of))
                    .collect();
                (device, Arc::new(Profile { slots }))
            })
            .collect();
        MetricBaseline {
            view: view.to_string(),
            season: self.season,
            devices,
        }
    }
}

/// How much of the recent deviation from the baseline's slow level is
/// left after an hour: 0.8 (after 6 hours a quarter, after a night almost
/// none).
pub const DAMPING_PER_HOUR: f64 = 0.8;

/// Observations older than this (before the forecast's origin) do not set
/// the recent deviation.
pub const LEVEL_MEMORY_MS: i64 = 3 * HOUR_MS;

/// Observations within this much before the origin set the slow level.
pub const SLOW_MEMORY_MS: i64 = 24 * HOUR_MS;

/// A week: how far back the seasonal-naive value of a forecast time is.
pub const WEEK_MS: i64 = 7 * 24 * HOUR_MS;

/// An observation this close to a week before a forecast time is its
/// seasonal-naive value.
pub const NAIVE_TOLERANCE_MS: i64 = 20 * 60_000;

/// One forecast value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ForecastPoint {
    /// Time, epoch ms.
    pub ts: i64,
    /// The forecast.
    pub value: f64,
    /// The interval's low end (the slot's 5% quantile, shifted alike).
    pub lo: f64,
    /// ...and high end (its 95% quantile).
    pub hi: f64,
}

/// Where a device stands against its baseline just before a forecast's
/// origin.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Level {
    /// The mean deviation from the slot's centre over the last day
    /// ([`SLOW_MEMORY_MS`]): how far this device runs above or below its
    /// usual week lately (a trend, a season); carried forward undamped.
    pub slow: f64,
    /// The mean deviation of the last three observations within
    /// [`LEVEL_MEMORY_MS`], if any, and the time of the newest: carried
    /// forward damped towards `slow`.
    pub fast: Option<(i64, f64)>,
}

/// The level of `recent` (time-ordered observations) at `origin`; `None`
/// when no observation of the last day has a known slot.
pub fn level(
    base: &MetricBaseline,
    device: &str,
    recent: &[(i64, f64)],
    origin: i64,
) -> Option<Level> {
    let devs: Vec<(i64, f64)> = recent
        .iter()
        .rev()
        .filter(|(t, _)| *t <= origin)
        .take_while(|(t, _)| origin - *t <= SLOW_MEMORY_MS)
        .filter_map(|&(t, v)| base.expected(device, t).map(|s| (t, v - s.centre)))
        .collect();
    if devs.is_empty() {
        return None;
    }
    let mean = |d: &[(i64, f64)]| d.iter().map(|x| x.1).sum::<f64>() / d.len() as f64;
    let fresh: Vec<(i64, f64)> = devs
        .iter()
        .take_while(|(t, _)| origin - *t <= LEVEL_MEMORY_MS)
        .take(3)
        .copied()
        .collect();
    Some(Level {
        slow: mean(&devs),
        fast: fresh.first().map(|f| (f.0, mean(&fresh))),
    })
}

/// The observation of `recent` (time-ordered) nearest `t`, within
/// [`NAIVE_TOLERANCE_MS`].
fn nearest(recent: &[(i64, f64)], t: i64) -> Option<f64> {
    let i = recent.partition_point(|o| o.0 < t);
    [i.checked_sub(1), Some(i)]
        .into_iter()
        .flatten()
        .filter_map(|j| recent.get(j))
        .filter(|o| (o.0 - t).abs() <= NAIVE_TOLERANCE_MS)
        .min_by_key(|o| (o.0 - t).abs())
        .map(|o| o.1)
}

/// Forecasts `device` at `origin + step`, `origin + 2 step`, ... up to
/// `origin + horizon`, from its profile and the level of `recent` (time
/// ordered observations up to `origin`, ideally the last week and a bit).
/// Where `recent` holds the value of a week before a time (the
/// seasonal-naive forecast), the point is the mean of the two forecasts,
/// the interval moved alike: a combination is more accurate than either
/// alone when, as here, their errors differ (the baseline lags a trend,
/// last week's value carries last week's accidents). Times whose slot has
/// too little history get no point. `clamp` bounds values and intervals
/// (e.g. 0 and a capacity), if given.
pub fn forecast(
    base: &MetricBaseline,
    device: &str,
    recent: &[(i64, f64)],
    origin: i64,
    step: i64,
    horizon: i64,
    clamp: Option<(f64, f64)>,
) -> Vec<ForecastPoint> {
    let Some(profile) = base.devices.get(device) else {
        return Vec::new();
    };
    let level = level(base, device, recent, origin);
    let step = step.max(1);
    let mut out = Vec::new();
    let mut ts = origin + step;
    while ts <= origin + horizon {
        if let Some(s) = profile.around(&base.season, ts) {
            let shift = level.map_or(0.0, |l| match l.fast {
                Some((t0, d)) => {
                    l.slow + (d - l.slow) * DAMPING_PER_HOUR.powf((ts - t0) as f64 / HOUR_MS as f64)
                }
                None => l.slow,
            });
            let model = s.centre + shift;
            let shift = match nearest(recent, ts - WEEK_MS) {
                Some(naive) => shift + (naive - model) / 2.0,
                None => shift,
            };
            let fit = |x: f64| clamp.map_or(x, |(lo, hi)| x.clamp(lo, hi));
            out.push(ForecastPoint {
                ts,
                value: fit(s.centre + shift),
                lo: fit(s.lo + shift),
                hi: fit(s.hi + shift),
            });
        }
        ts += step;
    }
    out
}

/// A view column that stands for a window's level in forecasts: its mean,
/// else its median.
pub fn level_column(columns: &[Column]) -> Option<Column> {
    [Column::Mean, Column::P50]
        .into_iter()
        .find(|c| columns.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Parts;
    use crate::agg::Aggregate;

    const MONDAY: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z, a Monday

    fn state(values: &[f64]) -> AggState {
        let mut s = AggState::new(Parts::for_aggregates([Aggregate::Quantiles]));
        for &v in values {
            s.fold(v, 0);
        }
        s
    }

    #[test]
    fn slots_are_hours_of_the_week_in_the_zone() {
        let utc = Season::default();
        assert_eq!(utc.slot(MONDAY), 0);
        assert_eq!(utc.slot(MONDAY + 25 * HOUR_MS), 25);
        assert_eq!(utc.slot(MONDAY + 7 * 24 * HOUR_MS + 5), 0);
        let ny = Season::parse("America/New_York").unwrap();
        // Monday 00:00 UTC is Sunday 19:00 in New York.
        assert_eq!(ny.slot(MONDAY), 6 * 24 + 19);
        assert!(Season::parse("Mars/Olympus").is_err());
        // The arithmetic agrees with the calendar, across a DST change.
        use chrono::{Datelike, Timelike};
        let london = Season::parse("Europe/London").unwrap();
        let oct_2016 = 1_477_000_000_000; // 2016-10-20, DST ends on the 30th
        for k in 0..2_000i64 {
            let ts = oct_2016 + k * 997_000;
            let t = chrono_tz::Europe::London.timestamp_millis_opt(ts).unwrap();
            let want = t.weekday().num_days_from_monday() as usize * 24 + t.hour() as usize;
            let (slot, frac) = london.position(ts);
            assert_eq!(slot, want, "{t}");
            assert!((frac - f64::from(t.minute() * 60 + t.second()) / 3600.0).abs() < 1e-3);
        }
    }

    #[test]
    fn a_trained_profile_knows_each_hour_and_survives_encoding() {
        let mut t = Trainer::new(Season::default(), 30 * 60_000);
        for week in 0..4 {
            let w0 = MONDAY + week * 7 * 24 * HOUR_MS;
            // Monday 08:00: about 100, two half-hour windows; 09:00 about 10.
            t.add("a", w0 + 8 * HOUR_MS, &state(&[98.0, 100.0, 102.0]));
            t.add("a", w0 + 8 * HOUR_MS + 1_800_000, &state(&[99.0, 101.0]));
            t.add("a", w0 + 9 * HOUR_MS, &state(&[10.0, 11.0, 9.0]));
        }
        let m = t.finish("v");
        let p = &m.devices["a"];
        let s8 = p.at(8).unwrap();
        assert_eq!(s8.readings, 20);
        assert!((s8.centre - 100.0).abs() < 2.0, "{s8:?}");
        assert!(s8.lo < s8.centre && s8.centre < s8.hi);
        assert!((p.at(9).unwrap().centre - 10.0).abs() < 1.0);
        assert!(p.at(10).is_none());
        assert_eq!(p.usable(), 2);
        let b = Baselines {
            run_id: "r1".into(),
            trained_ms: 5,
            metrics: [("m".to_string(), m)].into(),
        };
        let bytes = b.encode();
        assert_eq!(Baselines::decode(&bytes).unwrap(), b);
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(Baselines::decode(&flipped).is_err());
        assert!(Baselines::decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(
            b.metrics["m"]
                .expected("a", MONDAY + 8 * HOUR_MS + 60_000)
                .is_some()
        );
        assert!(b.metrics["m"].expected("b", MONDAY + 8 * HOUR_MS).is_none());
    }

    #[test]
    fn a_forecast_follows_the_profile_and_carries_a_damped_level() {
        let mut t = Trainer::new(Season::default(), HOUR_MS);
        for week in 0..3 {
            for h in 0..SLOTS as i64 {
                let v = (h % 24) as f64 * 10.0;
                t.add(
                    "a",
                    MONDAY + week * 7 * 24 * HOUR_MS + h * HOUR_MS,
                    &state(&[v; 4]),
                );
            }
        }
        let m = t.finish("v");
        let origin = MONDAY + 21 * 24 * HOUR_MS + 5 * HOUR_MS + HOUR_MS / 2;
        // Without recent data: the profile itself.
        let f = forecast(&m, "a", &[], origin, HOUR_MS, 3 * HOUR_MS, None);
        let values: Vec<f64> = f.iter().map(|p| p.value.round()).collect();
        assert_eq!(values, [60.0, 70.0, 80.0]);
        // 20 above the usual level just now and 10 above a day ago: 15 over
        // the week, and 19 an hour on (15 + 0.8 x 5), 18.2 two hours on.
        let recent = [(origin - 24 * HOUR_MS, 60.0), (origin, 70.0)];
        let f = forecast(&m, "a", &recent, origin, HOUR_MS, 2 * HOUR_MS, None);
        assert!((f[0].value - (60.0 + 19.0)).abs() < 1.0, "{f:?}");
        assert!((f[1].value - (70.0 + 18.2)).abs() < 1.0, "{f:?}");
        let f = forecast(
            &m,
            "a",
            &recent,
            origin,
            HOUR_MS,
            HOUR_MS,
            Some((0.0, 70.0)),
        );
        assert_eq!(f[0].value, 70.0);
        assert!(forecast(&m, "nobody", &recent, origin, HOUR_MS, HOUR_MS, None).is_empty());
        // 10 over just now, and last week's value at the first forecast
        // time (100): the mean of 70 and 100; the second has none (80).
        let week = [(origin + HOUR_MS - WEEK_MS, 100.0), (origin, 60.0)];
        let f = forecast(&m, "a", &week, origin, HOUR_MS, 2 * HOUR_MS, None);
        assert!((f[0].value - 85.0).abs() < 1.0, "{f:?}");
        assert!((f[1].value - 80.0).abs() < 1.0, "{f:?}");
    }
}
