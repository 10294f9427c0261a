//! The pure decisions of the core against plain from-scratch models: the
//! dedup rule against an all-pairs scan, window assignment against
//! enumeration.

use braid_core::dedup::{DedupKey, Deduper};
use braid_core::window::Windowing;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Deduper decides exactly what the rule says, read literally: a record
    /// is a duplicate when an earlier record of the partition had the same key
    /// at a clock (running max of ingest time) within the horizon.
    #[test]
    fn dedup_matches_the_literal_rule(
        events in prop::collection::vec((0u8..6, 0i64..50), 0..120),
        horizon in 0i64..40,
    ) {
        let mut d = Deduper::new(horizon);
        let mut clocks = Vec::new();
        let mut clock = i64::MIN;
        for (i, &(key, step)) in events.iter().enumerate() {
            // Ingest times wander: mostly forward, sometimes back.
            let ingest = step * 3 + i as i64 - 25;
            clock = clock.max(ingest);
            clocks.push(clock);
            let expected = (0..i).any(|j| events[j].0 == key && clocks[j] >= clock - horizon);
            let got = d.is_duplicate(DedupKey(u128::from(key)), ingest);
            prop_assert_eq!(got, expected, "record {}", i);
        }
    }

    /// Every window returned contains the time, and every aligned window
    /// that contains it is returned.
    #[test]
    fn windows_match_enumeration(ts in -1_000_000i64..1_000_000, hop in 1i64..50, k in 1i64..6) {
        let w = Windowing::new(hop * k, hop).unwrap();
        let got: Vec<i64> = w.assign(ts).map(|b| b.start).collect();
        let mut expected: Vec<i64> = (ts - hop * k - hop..=ts + hop)
            .filter(|s| s.rem_euclid(hop) == 0 && *s <= ts && ts < s + hop * k)
            .collect();
        expected.reverse();
        prop_assert_eq!(got, expected);
    }
}
