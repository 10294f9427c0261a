//! Distinct devices: a HyperLogLog over a fixed 64-bit hash of the device id.
//!
//! 2^14 registers give a standard error of about 0.8%; below about 40,000
//! devices the linear-counting estimate is used, which is near exact for the
//! small fleets most windows see. Small sets stay sparse (sorted register
//! updates) and turn dense past [`SPARSE_LIMIT`] entries; which form a state
//! has depends only on its registers, never on the order of updates, and
//! merging takes the maximum per register, so states are order-independent.

use crate::encoding::{DecodeError, Reader, Writer};

const P: u32 = 14;
const M: usize = 1 << P;
/// Sparse entries kept before switching to a dense register array.
pub const SPARSE_LIMIT: usize = 3072;
const VERSION: u8 = 1;

/// A mergeable distinct-count sketch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hll {
    /// Sorted `(register, rank)` pairs packed as `register << 8 | rank`.
    Sparse(Vec<u32>),
    /// One rank per register.
    Dense(Box<[u8]>),
}

impl Default for Hll {
    fn default() -> Self {
        Self::Sparse(Vec::new())
    }
}

#[inline]
fn register_and_rank(hash: u64) -> (u32, u8) {
    let register = (hash >> (64 - P)) as u32;
    let rest = hash << P;
    let rank = (rest.leading_zeros().min(64 - P) + 1) as u8;
    (register, rank)
}

impl Hll {
    /// Adds one hashed item (see [`crate::hash::device_hash`]).
    #[inline]
    pub fn fold(&mut self, hash: u64) {
        let (register, rank) = register_and_rank(hash);
        self.update(register, rank);
    }

    fn update(&mut self, register: u32, rank: u8) {
        match self {
            Self::Dense(regs) => {
                let slot = &mut regs[register as usize];
                *slot = (*slot).max(rank);
            }
            Self::Sparse(entries) => {
                match entries.binary_search_by_key(&register, |e| e >> 8) {
                    Ok(i) => {
                        let old = (entries[i] & 0xff) as u8;
                        if rank > old {
                            entries[i] = register << 8 | u32::from(rank);
                        }
                    }
                    Err(i) => entries.insert(i, register << 8 | u32::from(rank)),
                }
                if entries.len() > SPARSE_LIMIT {
                    self.densify();
                }
            }
        }
    }

    fn densify(&mut self) {
        if let Self::Sparse(entries) = self {
            let mut regs = vec![0u8; M].into_boxed_slice();
            for &e in entries.iter() {
                regs[(e >> 8) as usize] = (e & 0xff) as u8;
            }
            *self = Self::Dense(regs);
        }
    }

    /// Adds another sketch: the maximum rank per register.
    pub fn merge(&mut self, other: &Self) {
        match other {
            Self::Sparse(entries) => {
                for &e in entries {
                    self.update(e >> 8, (e & 0xff) as u8);
                }
            }
            Self::Dense(theirs) => {
                self.densify();
                if let Self::Dense(ours) = self {
                    for (a, &b) in ours.iter_mut().zip(theirs.iter()) {
                        *a = (*a).max(b);
                    }
                }
            }
        }
    }

    /// The estimated number of distinct items, rounded to an integer.
    pub fn estimate(&self) -> u64 {
        let (zeros, inverse_sum) = match self {
            Self::Sparse(entries) => {
                let zeros = M - entries.len();
                let sum: f64 = entries
                    .iter()
                    .map(|&e| 2f64.powi(-i32::from((e & 0xff) as u8)))
                    .sum::<f64>()
                    + zeros as f64;
                (zeros, sum)
            }
            Self::Dense(regs) => {
                let zeros = regs.iter().filter(|&&r| r == 0).count();
                let sum: f64 = regs.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
                (zeros, sum)
            }
        };
        let m = M as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / inverse_sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }

    /// Writes the canonical form: sparse while small enough, else dense.
    pub fn encode(&self, w: &mut Writer) {
        w.u8(VERSION);
        match self {
            Self::Sparse(entries) => {
                w.u8(0);
                w.uvar(entries.len() as u64);
                let mut prev = 0u32;
                for &e in entries {
                    w.uvar(u64::from(e - prev));
                    prev = e;
                }
            }
            Self::Dense(regs) => {
                w.u8(1);
                w.bytes(regs);
            }
        }
    }

    /// Reads what [`Hll::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("hll version")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                what: "hll",
                found: version,
                supported: VERSION,
            });
        }
        match r.u8("hll form")? {
            0 => {
                let n = r.len("hll entries", 1)?;
                if n > SPARSE_LIMIT {
                    return Err(DecodeError::Invalid("hll: sparse form too long"));
                }
                let mut entries = Vec::with_capacity(n);
                let mut prev = 0u32;
                for k in 0..n {
                    let delta = r.uvar("hll entry")?;
                    let e = u64::from(prev) + delta;
                    let e = u32::try_from(e).map_err(|_| DecodeError::Invalid("hll entry"))?;
                    let rank = e & 0xff;
                    if (k > 0 && e >> 8 <= prev >> 8)
                        || e >> 8 >= M as u32
                        || rank == 0
                        || rank > 64 - P + 1
                    {
                        return Err(DecodeError::Invalid("hll entry"));
                    }
                    entries.push(e);
                    prev = e;
                }
                Ok(Self::Sparse(entries))
            }
            1 => {
                let regs = r.bytes("hll registers")?;
                let nonzero = regs.iter().filter(|&&x| x != 0).count();
                if regs.len() != M
                    || nonzero <= SPARSE_LIMIT
                    || regs.iter().any(|&x| x > 64 - P as u8 + 1)
                {
                    return Err(DecodeError::Invalid("hll registers"));
                }
                Ok(Self::Dense(regs.into()))
            }
            _ => Err(DecodeError::Invalid("hll form")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::device_hash;

    #[test]
    fn small_counts_are_near_exact() {
        for n in [0u64, 1, 2, 10, 100, 1000, 3000] {
            let mut h = Hll::default();
            for i in 0..n {
                h.fold(device_hash(&format!("device-{i}")));
                h.fold(device_hash(&format!("device-{i}")));
            }
            let e = h.estimate();
            let err = (e as f64 - n as f64).abs();
            assert!(err <= 1.0 + n as f64 * 0.01, "n={n} estimate={e}");
        }
    }

    #[test]
    fn large_counts_are_within_a_few_percent() {
        let mut h = Hll::default();
        for i in 0..200_000u64 {
            h.fold(device_hash(&i.to_string()));
        }
        assert!(matches!(h, Hll::Dense(_)));
        let e = h.estimate() as f64;
        assert!((e - 200_000.0).abs() / 200_000.0 < 0.03, "{e}");
    }
}
