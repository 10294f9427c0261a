//! The compact binary encoding shared by every serialised state: LEB128
//! varints, zigzag for signed integers, raw little-endian `f64` bits.
//!
//! Checkpoints and the `braid.speed` topic carry states in this form, so it
//! must round-trip bit for bit and reject anything truncated or malformed
//! with an error rather than a panic. It does no IO: callers own the bytes.

use thiserror::Error;

/// Why a byte string is not a valid encoded state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("truncated input: {0} ended early")]
    Truncated(&'static str),
    /// A varint ran past 64 bits.
    #[error("varint overflow in {0}")]
    VarintOverflow(&'static str),
    /// The version byte names a format this build does not know.
    #[error("unsupported {what} format version {found} (this build reads up to {supported})")]
    Version {
        /// Which structure carried the version.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The newest version this build reads.
        supported: u8,
    },
    /// A value is out of range or breaks an invariant of its structure.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Appends encoded values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets what was written, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// One raw byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// An unsigned LEB128 varint.
    pub fn uvar(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// A signed varint, zigzag-encoded so small magnitudes stay short.
    pub fn ivar(&mut self, v: i64) {
        self.uvar(((v << 1) ^ (v >> 63)) as u64);
    }

    /// The raw bits of an `f64`, little-endian, so `-0.0` and every payload
    /// survive.
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// Raw bytes with their length in front.
    pub fn bytes(&mut self, v: &[u8]) {
        self.uvar(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
}

/// Reads values written by [`Writer`], in the same order.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }

    /// One raw byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated(what))?;
        self.buf = rest;
        Ok(b)
    }

    /// An unsigned varint.
    pub fn uvar(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(DecodeError::VarintOverflow(what));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                // A canonical varint never ends in a zero continuation byte.
                if b == 0 && shift > 0 {
                    return Err(DecodeError::Invalid(what));
                }
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow(what))
    }

    /// A zigzag signed varint.
    pub fn ivar(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let u = self.uvar(what)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// An `f64` from its raw bits.
    pub fn f64(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        let raw = self.take(8, what)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(raw);
        Ok(f64::from_bits(u64::from_le_bytes(b)))
    }

    /// Length-prefixed raw bytes.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.uvar(what)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Invalid(what))?;
        self.take(n, what)
    }

    /// A length that is about to drive an allocation: bounded by the bytes
    /// left, so a corrupt length cannot ask for gigabytes.
    pub fn len(&mut self, what: &'static str, min_bytes_each: usize) -> Result<usize, DecodeError> {
        let n = self.uvar(what)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Invalid(what))?;
        if n.saturating_mul(min_bytes_each.max(1)) > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut w = Writer::new();
            w.uvar(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.uvar("v").unwrap(), v);
            r.finish().unwrap();
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -300] {
            let mut w = Writer::new();
            w.ivar(v);
            let bytes = w.into_bytes();
            assert_eq!(Reader::new(&bytes).ivar("v").unwrap(), v);
        }
    }

    #[test]
    fn non_canonical_and_overlong_varints_are_refused() {
        assert_eq!(
            Reader::new(&[0x80, 0x00]).uvar("v"),
            Err(DecodeError::Invalid("v"))
        );
        assert_eq!(
            Reader::new(&[0xff; 11]).uvar("v"),
            Err(DecodeError::VarintOverflow("v"))
        );
        assert_eq!(
            Reader::new(&[0x80]).uvar("v"),
            Err(DecodeError::Truncated("v"))
        );
    }
}
