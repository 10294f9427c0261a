//! The dedup rule, applied identically by both layers.
//!
//! A reading's key is (`device_id`, `metric`, `ts`, `seq`). Per partition,
//! in offset order, a clock runs at the largest `ingest_ts` seen so far. A
//! reading is a duplicate when its key occurred earlier in the same
//! partition at a clock no more than the horizon behind the current clock.
//! Both the decision and the eviction depend only on the partition's records
//! in log order, so the speed layer, the batch layer and a replay drop the
//! same copies. Keys are kept as 128-bit stable hashes.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;

use crate::encoding::{DecodeError, Reader, Writer};
use crate::hash::stable_hash_pair;
use crate::reading::Reading;

/// A reading's dedup key, hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey(pub u128);

impl DedupKey {
    /// The key of a reading: two hashes, in one pass, of (`device_id`'s
    /// length, `device_id`, `metric`, 0, `ts`, `seq` flag and value),
    /// assembled on the stack unless the ids are unusually long.
    pub fn of(r: &Reading) -> Self {
        let (device, metric) = (r.device_id.as_bytes(), r.metric.as_bytes());
        let len = device.len() + metric.len() + 22;
        let mut stack = [0u8; 256];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        let mut at = 0;
        let mut put = |b: &[u8]| {
            buf[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(&(device.len() as u32).to_le_bytes());
        put(device);
        put(metric);
        put(&[0]);
        put(&r.ts.to_le_bytes());
        match r.seq {
            Some(s) => {
                put(&[1]);
                put(&s.to_le_bytes());
            }
            None => put(&[0]),
        }
        let bytes = &buf[..at];
        let (hi, lo) = stable_hash_pair(0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f, bytes);
        Self(u128::from(hi) << 64 | u128::from(lo))
    }
}

/// The dedup state of one partition.
#[derive(Clone, Debug, Default)]
pub struct Deduper {
    horizon_ms: i64,
    clock: i64,
    /// foldhash, seeded per process: keys come from devices.
    last_seen: foldhash::HashMap<DedupKey, i64>,
    queue: VecDeque<(i64, DedupKey)>,
}

impl Deduper {
    /// An empty state for a horizon of `horizon_ms` of ingest time.
    pub fn new(horizon_ms: i64) -> Self {
        Self {
            horizon_ms,
            clock: i64::MIN,
            ..Self::default()
        }
    }

    /// Decides on the next record of the partition: `true` when it is a
    /// duplicate to drop.
    pub fn is_duplicate(&mut self, key: DedupKey, ingest_ts: i64) -> bool {
        self.clock = self.clock.max(ingest_ts);
        let oldest = self.clock.saturating_sub(self.horizon_ms);
        while let Some(&(at, k)) = self.queue.front() {
            if at >= oldest {
                break;
            }
            self.queue.pop_front();
            // One lookup: the key goes only if this was its last sighting.
            if let Entry::Occupied(e) = self.last_seen.entry(k)
                && *e.get() == at
            {
                e.remove();
            }
        }
        let dup = self.last_seen.insert(key, self.clock).is_some();
        self.queue.push_back((self.clock, key));
        dup
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.last_seen.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.last_seen.is_empty()
    }

    /// Writes the state for a checkpoint: clock, then keys by last-seen
    /// clock, then key.
    pub fn encode(&self, w: &mut Writer) {
        w.ivar(self.horizon_ms);
        w.ivar(self.clock);
        let mut entries: Vec<(i64, DedupKey)> =
            self.last_seen.iter().map(|(k, &at)| (at, *k)).collect();
        entries.sort_unstable();
        w.uvar(entries.len() as u64);
        for (at, k) in entries {
            w.ivar(at);
            w.bytes(&k.0.to_le_bytes());
        }
    }

    /// Reads what [`Deduper::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let horizon_ms = r.ivar("dedup horizon")?;
        let clock = r.ivar("dedup clock")?;
        let n = r.len("dedup keys", 18)?;
        let mut d = Self::new(horizon_ms);
        d.clock = clock;
        for _ in 0..n {
            let at = r.ivar("dedup key clock")?;
            let raw: [u8; 16] = r
                .bytes("dedup key")?
                .try_into()
                .map_err(|_| DecodeError::Invalid("dedup key"))?;
            let key = DedupKey(u128::from_le_bytes(raw));
            if d.last_seen.insert(key, at).is_some() {
                return Err(DecodeError::Invalid("dedup key repeated"));
            }
            d.queue.push_back((at, key));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u128) -> DedupKey {
        DedupKey(n)
    }

    #[test]
    fn keys_are_pinned() {
        // Checkpoints hold these keys: they must never change (values
        // computed from the documented byte layout, outside Rust).
        let r = |device: &str, metric: &str, ts: i64, seq: Option<u64>| Reading {
            device_id: device.into(),
            metric: metric.into(),
            ts,
            value: 1.0,
            seq,
            tags: Default::default(),
        };
        let car = r("car-park-1", "occupancy", 1_700_000_000_000, None);
        assert_eq!(
            DedupKey::of(&car).0,
            194469455457941363017437514153787257414
        );
        let car = r("car-park-1", "occupancy", 1_700_000_000_000, Some(7));
        assert_eq!(
            DedupKey::of(&car).0,
            143338347123117030101357467228269866027
        );
        let long = r(&"d".repeat(300), "m", -5, None);
        assert_eq!(
            DedupKey::of(&long).0,
            155076373765320959200574124939053011534
        );
    }

    #[test]
    fn horizon_runs_on_the_partition_clock() {
        let mut d = Deduper::new(100);
        assert!(!d.is_duplicate(key(1), 0));
        assert!(d.is_duplicate(key(1), 50));
        // The duplicate refreshed the key: still within 100 of 50.
        assert!(d.is_duplicate(key(1), 150));
        assert!(!d.is_duplicate(key(2), 151));
        // An out-of-order ingest time does not move the clock back.
        assert!(d.is_duplicate(key(2), 10));
        assert!(!d.is_duplicate(key(1), 251 + 1));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn checkpoint_round_trip() {
        let mut d = Deduper::new(1000);
        for i in 0..50 {
            d.is_duplicate(key(i % 7), i as i64 * 10);
        }
        let mut w = Writer::new();
        d.encode(&mut w);
        let bytes = w.into_bytes();
        let mut back = Deduper::decode(&mut Reader::new(&bytes)).unwrap();
        for i in 0..20 {
            assert_eq!(back.is_duplicate(key(i), 600), d.is_duplicate(key(i), 600));
        }
    }
}
