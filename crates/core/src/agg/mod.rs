//! Aggregate states, written once for both layers.
//!
//! Each aggregate of a view is backed by one mergeable state type:
//!
//! | aggregate | state |
//! |---|---|
//! | `count` | the count kept by every [`AggState`] |
//! | `sum` | [`ExactSum`] |
//! | `min`, `max` | [`Min`], [`Max`] (total order, so `-0.0 < +0.0`) |
//! | `mean` | count and [`ExactSum`] |
//! | `stddev` | count, [`ExactSum`] and [`ExactSumSq`] (sample deviation) |
//! | `quantiles` | [`DdSketch`] (p50, p90, p95, p99 within 1%) |
//! | `distinct_devices` | [`Hll`] over [`crate::hash::device_hash`] |
//!
//! [`AggState`] holds just the parts a view's aggregates need. The speed
//! layer folds readings into it one at a time; the batch layer runs the very
//! same type inside DataFusion. For the same multiset of readings it is the
//! same state to the bit, whatever the order, the partitioning or the merge
//! tree, and its encoding (see [`AggState::encode`]) is canonical.

mod exact;
mod hll;
mod sketch;

pub use exact::{ExactSum, ExactSumSq, FixedAcc, fold_slice_moments, sample_stddev};
pub use hll::{Hll, SPARSE_LIMIT};
pub use sketch::{DdSketch, MAX_BUCKETS, RELATIVE_ACCURACY};

use std::fmt;

use crate::encoding::{DecodeError, Reader, Writer};

/// The aggregates a view may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggregate {
    /// Readings counted.
    Count,
    /// Exact sum of values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Exact mean.
    Mean,
    /// Sample standard deviation.
    Stddev,
    /// p50, p90, p95 and p99.
    Quantiles,
    /// Distinct device ids.
    DistinctDevices,
}

impl Aggregate {
    /// Every aggregate, in column order.
    pub const ALL: [Aggregate; 8] = [
        Self::Count,
        Self::Sum,
        Self::Min,
        Self::Max,
        Self::Mean,
        Self::Stddev,
        Self::Quantiles,
        Self::DistinctDevices,
    ];

    /// The name used in `views.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Mean => "mean",
            Self::Stddev => "stddev",
            Self::Quantiles => "quantiles",
            Self::DistinctDevices => "distinct_devices",
        }
    }

    /// Parses a name from `views.toml`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The output columns this aggregate produces.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Self::Count => &[Column::Count],
            Self::Sum => &[Column::Sum],
            Self::Min => &[Column::Min],
            Self::Max => &[Column::Max],
            Self::Mean => &[Column::Mean],
            Self::Stddev => &[Column::Stddev],
            Self::Quantiles => &[Column::P50, Column::P90, Column::P95, Column::P99],
            Self::DistinctDevices => &[Column::DistinctDevices],
        }
    }

    fn parts(self) -> u8 {
        match self {
            Self::Count => 0,
            Self::Sum | Self::Mean => Parts::SUM,
            Self::Min => Parts::MIN,
            Self::Max => Parts::MAX,
            Self::Stddev => Parts::SUM | Parts::SUMSQ,
            Self::Quantiles => Parts::SKETCH,
            Self::DistinctDevices => Parts::HLL,
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One output column of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// `count`
    Count,
    /// `sum`
    Sum,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `mean`
    Mean,
    /// `stddev`
    Stddev,
    /// `p50`
    P50,
    /// `p90`
    P90,
    /// `p95`
    P95,
    /// `p99`
    P99,
    /// `distinct_devices`
    DistinctDevices,
}

impl Column {
    /// The column's name in answers and Parquet files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Mean => "mean",
            Self::Stddev => "stddev",
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P95 => "p95",
            Self::P99 => "p99",
            Self::DistinctDevices => "distinct_devices",
        }
    }

    /// The quantile a percentile column stands for.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Self::P50 => Some(0.5),
            Self::P90 => Some(0.9),
            Self::P95 => Some(0.95),
            Self::P99 => Some(0.99),
            _ => None,
        }
    }
}

/// Which state parts an [`AggState`] carries, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Parts(u8);

impl Parts {
    const SUM: u8 = 1;
    const SUMSQ: u8 = 2;
    const MIN: u8 = 4;
    const MAX: u8 = 8;
    const SKETCH: u8 = 16;
    const HLL: u8 = 32;
    const KNOWN: u8 = 63;

    /// The parts that the given aggregates need.
    pub fn for_aggregates(aggs: impl IntoIterator<Item = Aggregate>) -> Self {
        Self(aggs.into_iter().fold(0, |bits, a| bits | a.parts()))
    }

    /// The parts as bits (for a plan shipped to another process).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Parts from [`Parts::bits`]; `None` for a bit this build does not
    /// know.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits & !Self::KNOWN == 0).then_some(Self(bits))
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// The smallest value under IEEE total order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Min(pub f64);

impl Default for Min {
    fn default() -> Self {
        Self(f64::INFINITY)
    }
}

impl Min {
    /// Adds one value.
    #[inline]
    pub fn fold(&mut self, x: f64) {
        if x.total_cmp(&self.0).is_lt() {
            self.0 = x;
        }
    }
}

/// The largest value under IEEE total order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Max(pub f64);

impl Default for Max {
    fn default() -> Self {
        Self(f64::NEG_INFINITY)
    }
}

impl Max {
    /// Adds one value.
    #[inline]
    pub fn fold(&mut self, x: f64) {
        if x.total_cmp(&self.0).is_gt() {
            self.0 = x;
        }
    }
}

const STATE_VERSION: u8 = 1;

/// The aggregate state of one (window, group): a count plus the parts that
/// the view's aggregates need.
#[derive(Clone, Debug, PartialEq)]
pub struct AggState {
    parts: Parts,
    count: u64,
    sum: Option<ExactSum>,
    sumsq: Option<ExactSumSq>,
    /// Kept whether or not the parts carry them (no `Option`: 16 bytes
    /// less in every state); only read when [`Parts::MIN`] or
    /// [`Parts::MAX`] is set.
    min: Min,
    max: Max,
    /// Boxed, as the two larger parts most views do not carry: an unused
    /// one costs a pointer in every state instead of its whole size.
    sketch: Option<Box<DdSketch>>,
    hll: Option<Box<Hll>>,
}

impl AggState {
    /// An empty state carrying `parts`.
    pub fn new(parts: Parts) -> Self {
        Self {
            parts,
            count: 0,
            sum: parts.has(Parts::SUM).then(ExactSum::default),
            sumsq: parts.has(Parts::SUMSQ).then(ExactSumSq::default),
            min: Min::default(),
            max: Max::default(),
            sketch: parts.has(Parts::SKETCH).then(Box::default),
            hll: parts.has(Parts::HLL).then(Box::default),
        }
    }

    /// The parts this state carries.
    pub fn parts(&self) -> Parts {
        self.parts
    }

    /// Readings folded in.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Folds one reading's value (finite) and its device hash.
    #[inline]
    pub fn fold(&mut self, value: f64, device_hash: u64) {
        self.count += 1;
        if let Some(s) = &mut self.sum {
            s.fold(value);
        }
        if let Some(s) = &mut self.sumsq {
            s.fold(value);
        }
        if self.parts.has(Parts::MIN) {
            self.min.fold(value);
        }
        if self.parts.has(Parts::MAX) {
            self.max.fold(value);
        }
        if let Some(s) = &mut self.sketch {
            s.fold(value);
        }
        if let Some(h) = &mut self.hll {
            h.fold(device_hash);
        }
    }

    /// Folds many readings at once, as the batch layer does: the same state
    /// as folding them one by one, in far less time. `device_hashes` must be
    /// as long as `values` when the state counts distinct devices.
    pub fn fold_slice(&mut self, values: &[f64], device_hashes: &[u64]) {
        self.count += values.len() as u64;
        match (&mut self.sum, &mut self.sumsq) {
            (Some(s), Some(q)) => fold_slice_moments(s, q, values),
            (Some(s), None) => s.fold_slice(values),
            (None, Some(q)) => q.fold_slice(values),
            (None, None) => {}
        }
        // IEEE total order as a signed-integer order on the bits.
        let key = |x: f64| {
            let b = x.to_bits() as i64;
            b ^ (((b >> 63) as u64) >> 1) as i64
        };
        let unkey = |k: i64| f64::from_bits((k ^ ((((k >> 63) as u64) >> 1) as i64)) as u64);
        let (lo, hi) = (&mut self.min, &mut self.max);
        match (self.parts.has(Parts::MIN), self.parts.has(Parts::MAX)) {
            (true, true) => {
                let (mut a, mut b) = (key(lo.0), key(hi.0));
                for &x in values {
                    let k = key(x);
                    a = a.min(k);
                    b = b.max(k);
                }
                (lo.0, hi.0) = (unkey(a), unkey(b));
            }
            (true, false) => lo.0 = unkey(values.iter().map(|&x| key(x)).fold(key(lo.0), i64::min)),
            (false, true) => hi.0 = unkey(values.iter().map(|&x| key(x)).fold(key(hi.0), i64::max)),
            (false, false) => {}
        }
        if let Some(s) = &mut self.sketch {
            values.iter().for_each(|&x| s.fold(x));
        }
        if let Some(h) = &mut self.hll {
            assert_eq!(
                values.len(),
                device_hashes.len(),
                "one device hash per value"
            );
            device_hashes.iter().for_each(|&d| h.fold(d));
        }
    }

    /// Adds another state of the same parts.
    ///
    /// # Panics
    /// When the parts differ: states of one view always share them.
    pub fn merge(&mut self, other: &Self) {
        assert_eq!(self.parts, other.parts, "merging states of different views");
        self.count += other.count;
        if let (Some(a), Some(b)) = (&mut self.sum, &other.sum) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (&mut self.sumsq, &other.sumsq) {
            a.merge(b);
        }
        if self.parts.has(Parts::MIN) {
            self.min.fold(other.min.0);
        }
        if self.parts.has(Parts::MAX) {
            self.max.fold(other.max.0);
        }
        if let (Some(a), Some(b)) = (&mut self.sketch, &other.sketch) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (&mut self.hll, &other.hll) {
            a.merge(b);
        }
    }

    /// The value of one output column; `None` when undefined (no readings,
    /// a deviation of fewer than two, or a part this state lacks).
    pub fn value(&self, column: Column) -> Option<f64> {
        let n = self.count;
        match column {
            Column::Count => Some(n as f64),
            Column::Sum => self.sum.as_ref().map(ExactSum::value),
            Column::Min => (self.parts.has(Parts::MIN) && n > 0).then_some(self.min.0),
            Column::Max => (self.parts.has(Parts::MAX) && n > 0).then_some(self.max.0),
            Column::Mean => self.sum.as_ref().and_then(|s| s.mean(n)),
            Column::Stddev => match (&self.sum, &self.sumsq) {
                (Some(s), Some(q)) => sample_stddev(n, s, q),
                _ => None,
            },
            Column::P50 | Column::P90 | Column::P95 | Column::P99 => {
                let q = column.quantile()?;
                self.sketch.as_ref().and_then(|s| s.quantile(q))
            }
            Column::DistinctDevices => self.hll.as_ref().map(|h| h.estimate() as f64),
        }
    }

    /// Any quantile `q` in 0..=1 from the sketch (within its relative
    /// accuracy); `None` without a sketch or readings.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.as_ref().and_then(|s| s.quantile(q))
    }

    /// The canonical, versioned binary form. Equal states give equal bytes.
    pub fn encode(&self, w: &mut Writer) {
        w.u8(STATE_VERSION);
        w.u8(self.parts.0);
        w.uvar(self.count);
        if let Some(s) = &self.sum {
            s.encode(w);
        }
        if let Some(s) = &self.sumsq {
            s.encode(w);
        }
        if self.parts.has(Parts::MIN) {
            w.f64(self.min.0);
        }
        if self.parts.has(Parts::MAX) {
            w.f64(self.max.0);
        }
        if let Some(s) = &self.sketch {
            s.encode(w);
        }
        if let Some(h) = &self.hll {
            h.encode(w);
        }
    }

    /// [`AggState::encode`] into a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Reads what [`AggState::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("state version")?;
        if version != STATE_VERSION {
            return Err(DecodeError::Version {
                what: "aggregate state",
                found: version,
                supported: STATE_VERSION,
            });
        }
        let bits = r.u8("state parts")?;
        if bits & !Parts::KNOWN != 0 {
            return Err(DecodeError::Invalid("state parts"));
        }
        let parts = Parts(bits);
        let count = r.uvar("state count")?;
        let mut state = Self::new(parts);
        state.count = count;
        if parts.has(Parts::SUM) {
            state.sum = Some(ExactSum::decode(r)?);
        }
        if parts.has(Parts::SUMSQ) {
            state.sumsq = Some(ExactSumSq::decode(r)?);
        }
        if parts.has(Parts::MIN) {
            state.min = Min(r.f64("state min")?);
        }
        if parts.has(Parts::MAX) {
            state.max = Max(r.f64("state max")?);
        }
        if parts.has(Parts::SKETCH) {
            state.sketch = Some(Box::new(DdSketch::decode(r)?));
        }
        if parts.has(Parts::HLL) {
            state.hll = Some(Box::new(Hll::decode(r)?));
        }
        Ok(state)
    }

    /// [`AggState::decode`] of a whole byte string.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let state = Self::decode(&mut r)?;
        r.finish()?;
        Ok(state)
    }
}
