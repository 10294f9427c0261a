//! Fixed hashes for everything that must agree across processes, machines
//! and releases (distinct-device sketches, partition-independent keys).
//! `std`'s hasher is randomly seeded per process, so it is never used for
//! anything that is stored or compared across processes.

/// FNV-1a over the bytes, finished with the MurmurHash3 64-bit mixer so that
/// every output bit depends on every input bit.
#[inline]
pub fn stable_hash(bytes: &[u8]) -> u64 {
    stable_hash_seeded(0, bytes)
}

/// [`stable_hash`] from another starting state, for independent hashes of
/// the same bytes.
#[inline]
pub fn stable_hash_seeded(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// [`stable_hash_seeded`] from two seeds at once: the same two values,
/// in one pass over the bytes (the two chains run side by side).
#[inline]
pub fn stable_hash_pair(seed_a: u64, seed_b: u64, bytes: &[u8]) -> (u64, u64) {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325 ^ seed_a;
    let mut b: u64 = 0xcbf2_9ce4_8422_2325 ^ seed_b;
    for &x in bytes {
        a = (a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (fmix64(a), fmix64(b))
}

/// The hash of a device id, as the distinct-device sketch sees it.
#[inline]
pub fn device_hash(device_id: &str) -> u64 {
    stable_hash(device_id.as_bytes())
}

#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_pinned() {
        // Stored sketches depend on these values: they must never change.
        assert_eq!(device_hash(""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(device_hash("sensor-1"), device_hash("sensor-1"));
        assert_ne!(device_hash("sensor-1"), device_hash("sensor-2"));
        // A pinned value: if this changes, stored sketches no longer merge.
        assert_eq!(device_hash("BHMBCCMKT01"), PINNED);
        assert_eq!(
            stable_hash_pair(7, 9, b"BHMBCCMKT01"),
            (
                stable_hash_seeded(7, b"BHMBCCMKT01"),
                stable_hash_seeded(9, b"BHMBCCMKT01")
            )
        );
    }

    const PINNED: u64 = 2_602_763_533_983_851_399;
}
