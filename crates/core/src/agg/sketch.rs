//! Quantiles: a DDSketch with a fixed, bit-derived bucket mapping.
//!
//! A value's bucket comes from its binary exponent and significand alone
//! (`index = floor((exponent + significand - 1) * 50)`), using only exact or
//! IEEE-rounded operations, so every machine and every layer puts a value in
//! the same bucket. Buckets are then at most `e^0.02` wide, so the value
//! returned for a quantile is within 1% (relative) of the true element of
//! that rank (for normal magnitudes, |x| >= 2^-1022; subnormals are bucketed
//! consistently but have too few bits for that). Counts per bucket add, so merging is exact and commutative.
//!
//! Each sign keeps at most [`MAX_BUCKETS`] buckets; beyond that the buckets of
//! the smallest magnitudes collapse into one. The collapse depends only on the
//! largest index seen, so it too is independent of order.

use crate::encoding::{DecodeError, Reader, Writer};

/// Buckets per unit of `log2`-like index: chosen so that bucket bounds are at
/// most `e^(1/MULT)` apart, which keeps the relative error under 1%.
const MULT: f64 = 50.0;
/// Buckets kept per sign: a dynamic range of about 2^80 at full accuracy.
pub const MAX_BUCKETS: usize = 4096;
const VERSION: u8 = 1;

/// The sketch's promise: returned quantiles are within this relative error
/// of the exact element of the same rank.
pub const RELATIVE_ACCURACY: f64 = 0.01;

#[inline]
fn index_of(magnitude: f64) -> i32 {
    let (x, shift) = if magnitude < f64::MIN_POSITIVE {
        (magnitude * 2f64.powi(64), 64.0)
    } else {
        (magnitude, 0.0)
    };
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as f64 - 1023.0 - shift;
    let frac = (bits & ((1 << 52) - 1)) as f64 / (1u64 << 52) as f64;
    ((exponent + frac) * MULT).floor() as i32
}

/// The smallest magnitude in bucket `i`: the inverse of the mapping.
fn lower_bound(i: i32) -> f64 {
    let y = f64::from(i) / MULT;
    let e = y.floor();
    let significand = 1.0 + (y - e);
    significand * 2f64.powi(e as i32)
}

/// The value that stands for bucket `i`: the point of least relative error.
fn representative(i: i32) -> f64 {
    // The harmonic mean of the bounds, written so that it neither
    // underflows nor overflows at the ends of the range.
    let (lo, hi) = (lower_bound(i), lower_bound(i + 1));
    lo * (2.0 / (1.0 + lo / hi))
}

/// Counts per bucket index over a contiguous range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
}

impl Store {
    #[inline]
    fn add(&mut self, index: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(n);
            return;
        }
        let top = self.offset + self.counts.len() as i32 - 1;
        let index = if index < self.offset {
            let floor = top.saturating_sub(MAX_BUCKETS as i32 - 1);
            let index = index.max(floor);
            if index < self.offset {
                let grow = (self.offset - index) as usize;
                self.counts.splice(0..0, std::iter::repeat_n(0, grow));
                self.offset = index;
            }
            index
        } else if index > top {
            self.counts.resize((index - self.offset) as usize + 1, 0);
            self.collapse();
            index
        } else {
            index
        };
        self.counts[(index - self.offset) as usize] += n;
    }

    /// Folds the lowest buckets into one while the range is too wide.
    fn collapse(&mut self) {
        if self.counts.len() > MAX_BUCKETS {
            let excess = self.counts.len() - MAX_BUCKETS;
            let folded: u64 = self.counts.drain(..excess).sum();
            self.counts[0] += folded;
            self.offset += excess as i32;
        }
    }

    fn merge(&mut self, other: &Self) {
        if other.counts.is_empty() {
            return;
        }
        // Grow to the top first so that collapsing sees the final maximum.
        let other_top = other.offset + other.counts.len() as i32 - 1;
        self.add(other_top, 0);
        for (k, &c) in other.counts.iter().enumerate() {
            if c != 0 {
                self.add(other.offset + k as i32, c);
            }
        }
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Trimmed of empty buckets at both ends.
    fn canonical(&self) -> Self {
        let first = self.counts.iter().position(|&c| c != 0);
        let last = self.counts.iter().rposition(|&c| c != 0);
        match (first, last) {
            (Some(f), Some(l)) => Self {
                offset: self.offset + f as i32,
                counts: self.counts[f..=l].to_vec(),
            },
            _ => Self::default(),
        }
    }

    fn encode(&self, w: &mut Writer) {
        let c = self.canonical();
        w.ivar(i64::from(c.offset));
        w.uvar(c.counts.len() as u64);
        for &n in &c.counts {
            w.uvar(n);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.ivar("sketch offset")?;
        let offset = i32::try_from(offset).map_err(|_| DecodeError::Invalid("sketch offset"))?;
        let n = r.len("sketch buckets", 1)?;
        if n > MAX_BUCKETS {
            return Err(DecodeError::Invalid("sketch bucket count"));
        }
        let mut counts = Vec::with_capacity(n);
        for _ in 0..n {
            counts.push(r.uvar("sketch count")?);
        }
        let store = Self { offset, counts };
        if store.canonical() != store {
            return Err(DecodeError::Invalid("sketch: not in canonical form"));
        }
        Ok(store)
    }
}

/// A mergeable quantile sketch with 1% relative accuracy.
#[derive(Clone, Debug, Default)]
pub struct DdSketch {
    positive: Store,
    negative: Store,
    zero: u64,
}

impl DdSketch {
    /// Adds one finite value.
    #[inline]
    pub fn fold(&mut self, x: f64) {
        if x > 0.0 {
            self.positive.add(index_of(x), 1);
        } else if x < 0.0 {
            self.negative.add(index_of(-x), 1);
        } else {
            self.zero += 1;
        }
    }

    /// Adds another sketch.
    pub fn merge(&mut self, other: &Self) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zero += other.zero;
    }

    /// Values folded in.
    pub fn count(&self) -> u64 {
        self.positive.total() + self.negative.total() + self.zero
    }

    /// The value at quantile `q` in `[0, 1]`: within 1% of the element of
    /// rank `floor(q * (n - 1))` in sorted order. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * (n - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        // Negatives from the largest magnitude down, then zeros, then
        // positives upwards.
        for (k, &c) in self.negative.counts.iter().enumerate().rev() {
            seen += c;
            if seen > rank {
                return Some(-representative(self.negative.offset + k as i32));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0);
        }
        for (k, &c) in self.positive.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Some(representative(self.positive.offset + k as i32));
            }
        }
        None
    }

    /// Writes the canonical form.
    pub fn encode(&self, w: &mut Writer) {
        w.u8(VERSION);
        w.uvar(self.zero);
        self.positive.encode(w);
        self.negative.encode(w);
    }

    /// Reads what [`DdSketch::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("sketch version")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                what: "sketch",
                found: version,
                supported: VERSION,
            });
        }
        let zero = r.uvar("sketch zero count")?;
        let positive = Store::decode(r)?;
        let negative = Store::decode(r)?;
        Ok(Self {
            positive,
            negative,
            zero,
        })
    }
}

impl PartialEq for DdSketch {
    fn eq(&self, other: &Self) -> bool {
        self.zero == other.zero
            && self.positive.canonical() == other.positive.canonical()
            && self.negative.canonical() == other.negative.canonical()
    }
}

impl Eq for DdSketch {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_narrow_enough_everywhere() {
        // Normal magnitudes; subnormals are bucketed the same everywhere but
        // carry too few bits to be reported within 1%.
        for i in (-1022 * 50..1023 * 50).step_by(7) {
            let (lo, hi) = (lower_bound(i), lower_bound(i + 1));
            assert!(hi / lo <= 1.020_202, "bucket {i}: {lo}..{hi}");
            let r = representative(i);
            assert!(
                (r - lo) / lo <= RELATIVE_ACCURACY && (hi - r) / hi <= RELATIVE_ACCURACY,
                "bucket {i}: {lo} {r} {hi}"
            );
        }
    }

    #[test]
    fn index_matches_bounds() {
        for x in [
            1.0,
            1.5,
            3.0,
            1e-300,
            f64::MIN_POSITIVE,
            1e300,
            f64::MAX,
            0.1,
            7.77e7,
        ] {
            let i = index_of(x);
            assert!(lower_bound(i) <= x * (1.0 + 1e-12), "{x}");
            assert!(x < lower_bound(i + 1) * (1.0 + 1e-12), "{x}");
        }
    }

    #[test]
    fn quantiles_of_a_small_set() {
        let mut s = DdSketch::default();
        for x in [-5.0, -1.0, 0.0, 2.0, 10.0] {
            s.fold(x);
        }
        let near = |a: f64, b: f64| (a - b).abs() <= b.abs() * RELATIVE_ACCURACY;
        assert!(near(s.quantile(0.0).unwrap(), -5.0));
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert!(near(s.quantile(1.0).unwrap(), 10.0));
        assert!(near(s.quantile(0.75).unwrap(), 2.0));
        assert_eq!(DdSketch::default().quantile(0.5), None);
    }
}
