//! Property tests of the aggregate states: order and partition independence
//! to the bit, accuracy against exact big-integer references, and encodings
//! that round-trip and refuse garbage without panicking.

use braid_core::agg::{AggState, Aggregate, Column, Parts, RELATIVE_ACCURACY};
use braid_core::hash::device_hash;
use num_bigint::BigInt;
use num_traits::{Pow, Signed, Zero};
use proptest::prelude::*;

const CASES: u32 = 10_000;

fn all_parts() -> Parts {
    Parts::for_aggregates(Aggregate::ALL)
}

/// Values that stress exact summation: ordinary sensor values, near-equal
/// large values, signed zeros, subnormals, huge magnitudes.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1000.0..1000.0f64,
        2 => (-1000i32..1000).prop_map(|k| 1e6 + f64::from(k) * 1e-3),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => (1u64..1 << 52).prop_map(f64::from_bits),
        1 => (1u64..1 << 52).prop_map(|m| -f64::from_bits(m)),
        1 => -1e300..1e300f64,
        1 => -1e-300..1e-300f64,
        1 => any::<f64>().prop_filter("finite", |x| x.is_finite() && x.abs() < 1e300),
    ]
}

fn readings(max: usize) -> impl Strategy<Value = Vec<(f64, u8)>> {
    prop::collection::vec((value(), any::<u8>()), 0..max)
}

fn fold_all(parts: Parts, xs: &[(f64, u8)]) -> AggState {
    let mut s = AggState::new(parts);
    for &(v, d) in xs {
        s.fold(v, device_hash(&format!("device-{d}")));
    }
    s
}

/// The exact value of a finite f64 in units of 2^-1074, computed from its
/// bits independently of the core crate.
fn units(x: f64) -> BigInt {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as usize;
    let frac = bits & ((1 << 52) - 1);
    let mag = if exp == 0 {
        BigInt::from(frac)
    } else {
        BigInt::from(frac | 1 << 52) << (exp - 1)
    };
    if bits >> 63 == 1 { -mag } else { mag }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Any permutation and any split, merged in any order, gives the same
    /// state to the bit, and so the same results to the bit.
    #[test]
    fn order_and_partitioning_do_not_matter(
        xs in readings(64),
        seed in any::<u64>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let parts = all_parts();
        let reference = fold_all(parts, &xs);
        let mut shuffled = xs.clone();
        // A deterministic shuffle from the seed (Fisher-Yates, splitmix64).
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            shuffled.swap(i, (z ^ (z >> 31)) as usize % (i + 1));
        }
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(shuffled.len() + 1)).collect();
        bounds.push(0);
        bounds.push(shuffled.len());
        bounds.sort_unstable();
        let mut pieces: Vec<AggState> = bounds
            .windows(2)
            .map(|w| fold_all(parts, &shuffled[w[0]..w[1]]))
            .collect();
        // Merge right to left, unlike the fold order.
        let mut merged = AggState::new(parts);
        while let Some(p) = pieces.pop() {
            let mut p = p;
            p.merge(&merged);
            merged = p;
        }
        prop_assert_eq!(merged.to_bytes(), reference.to_bytes());
        for col in Aggregate::ALL.iter().flat_map(|a| a.columns()) {
            let (a, b) = (merged.value(*col), reference.value(*col));
            prop_assert_eq!(a.map(f64::to_bits), b.map(f64::to_bits), "column {:?}", col);
        }
    }

    /// Folding a slice at once gives the state of folding it value by
    /// value, across block boundaries and with any prefix already folded.
    #[test]
    fn slice_fold_equals_value_fold(xs in readings(2500), split in any::<prop::sample::Index>()) {
        let parts = all_parts();
        let by_value = fold_all(parts, &xs);
        let (head, tail) = xs.split_at(split.index(xs.len() + 1));
        let mut by_slice = fold_all(parts, head);
        let values: Vec<f64> = tail.iter().map(|p| p.0).collect();
        let hashes: Vec<u64> = tail.iter().map(|p| device_hash(&format!("device-{}", p.1))).collect();
        by_slice.fold_slice(&values, &hashes);
        prop_assert_eq!(by_slice.to_bytes(), by_value.to_bytes());
    }

    /// Mean and sample stddev within 1e-12 relative of exact big-integer
    /// references (a two-pass deviation, not the state's one-pass formula);
    /// where the result is subnormal, within half a unit of the last place.
    #[test]
    fn mean_and_stddev_are_accurate(xs in readings(48)) {
        let state = fold_all(all_parts(), &xs);
        let n = xs.len() as u64;
        let a: BigInt = xs.iter().map(|&(x, _)| units(x)).sum();
        let nb = BigInt::from(n);
        if let Some(mean) = state.value(Column::Mean) {
            let b = units(mean);
            let err = (&b * &nb - &a).abs();
            if mean.abs() >= f64::MIN_POSITIVE {
                prop_assert!(err * BigInt::from(1_000_000_000_000u64) <= a.abs(), "mean {}", mean);
            } else {
                prop_assert!(err * 2 <= nb, "subnormal mean {}", mean);
            }
        } else {
            prop_assert_eq!(n, 0);
        }
        if let Some(sd) = state.value(Column::Stddev) {
            prop_assert!(n >= 2);
            // Sum of (n a_i - A)^2 over n^2 (n - 1), in units of 2^-2148.
            let dev: BigInt = xs.iter().map(|&(x, _)| {
                let d = &nb * units(x) - &a;
                &d * &d
            }).sum();
            let denom = &nb * &nb * BigInt::from(n - 1);
            let b = units(sd);
            if sd >= f64::MIN_POSITIVE {
                let err = (&b * &b * &denom - &dev).abs();
                prop_assert!(err * BigInt::from(500_000_000_000u64) <= dev, "stddev {}", sd);
            } else {
                let four = BigInt::from(4) * &dev;
                let lo: BigInt = Pow::pow(BigInt::from(2) * &b - BigInt::from(1), 2u32) * &denom;
                let hi: BigInt = Pow::pow(BigInt::from(2) * &b + BigInt::from(1), 2u32) * &denom;
                prop_assert!(lo <= four || b.is_zero(), "subnormal stddev {}", sd);
                prop_assert!(four <= hi, "subnormal stddev {}", sd);
            }
        } else {
            prop_assert!(n < 2);
        }
        // Count, min, max and sum are exact.
        prop_assert_eq!(state.value(Column::Count), Some(n as f64));
        let exact_sum_units = a.clone();
        if let Some(sum) = state.value(Column::Sum).filter(|s| s.is_finite()) {
            let err: BigInt = (units(sum) - exact_sum_units).abs();
            // Correct rounding: within half a unit of the sum's last place.
            let ulp = if sum.abs() >= f64::MIN_POSITIVE {
                units(sum.abs().next_up()) - units(sum.abs())
            } else {
                BigInt::from(1)
            };
            prop_assert!(err * 2 <= ulp, "sum {}", sum);
        }
        if n > 0 {
            let min = xs.iter().map(|p| p.0).min_by(f64::total_cmp).unwrap();
            let max = xs.iter().map(|p| p.0).max_by(f64::total_cmp).unwrap();
            prop_assert_eq!(state.value(Column::Min).map(f64::to_bits), Some(min.to_bits()));
            prop_assert_eq!(state.value(Column::Max).map(f64::to_bits), Some(max.to_bits()));
        }
    }

    /// Quantiles within 1% relative of the exact element of the same rank,
    /// over values spanning a range the sketch keeps at full accuracy.
    #[test]
    fn quantiles_are_within_one_percent(
        xs in prop::collection::vec(prop_oneof![
            4 => 1e-6..1e6f64,
            2 => -1e6..-1e-6f64,
            1 => Just(0.0),
            1 => (1u32..100).prop_map(f64::from),
        ], 1..300),
    ) {
        let parts = Parts::for_aggregates([Aggregate::Quantiles]);
        let mut state = AggState::new(parts);
        for &x in &xs {
            state.fold(x, 0);
        }
        let mut sorted = xs.clone();
        sorted.sort_by(f64::total_cmp);
        let sketch = state.value(Column::P50).unwrap();
        let exact = sorted[((0.5 * (sorted.len() - 1) as f64).floor()) as usize];
        prop_assert!((sketch - exact).abs() <= exact.abs() * RELATIVE_ACCURACY, "p50 {} vs {}", sketch, exact);
        for col in [Column::P90, Column::P95, Column::P99] {
            let qq = col.quantile().unwrap();
            let exact = sorted[((qq * (sorted.len() - 1) as f64).floor()) as usize];
            let got = state.value(col).unwrap();
            prop_assert!((got - exact).abs() <= exact.abs() * RELATIVE_ACCURACY, "{:?} {} vs {}", col, got, exact);
        }
    }

    /// Encodings round-trip bit for bit, for every combination of parts.
    #[test]
    fn encoding_round_trips(xs in readings(80), mask in 0u8..=255) {
        let aggs: Vec<Aggregate> = Aggregate::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, a)| *a)
            .collect();
        let state = fold_all(Parts::for_aggregates(aggs), &xs);
        let bytes = state.to_bytes();
        let back = AggState::from_bytes(&bytes).unwrap();
        prop_assert_eq!(back.to_bytes(), bytes);
        for col in Aggregate::ALL.iter().flat_map(|a| a.columns()) {
            prop_assert_eq!(back.value(*col).map(f64::to_bits), state.value(*col).map(f64::to_bits));
        }
    }

    /// Damaged encodings are refused or decode to a valid state; never a
    /// panic. Whatever decodes re-encodes to exactly its input.
    #[test]
    fn damaged_encodings_never_panic(xs in readings(40), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
        let mut bytes = fold_all(all_parts(), &xs).to_bytes();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let truncated = &bytes[..cut.index(bytes.len() + 1)];
        for input in [&bytes[..], truncated] {
            if let Ok(state) = AggState::from_bytes(input) {
                prop_assert_eq!(state.to_bytes(), input.to_vec());
            }
        }
    }
}

/// Distinct devices stay near exact for small fleets whatever the split.
#[test]
fn distinct_devices_counts_small_fleets() {
    let parts = Parts::for_aggregates([Aggregate::DistinctDevices]);
    let mut a = AggState::new(parts);
    let mut b = AggState::new(parts);
    for i in 0..500u32 {
        let target = if i % 3 == 0 { &mut a } else { &mut b };
        target.fold(1.0, device_hash(&format!("d{}", i % 250)));
    }
    a.merge(&b);
    let n = a.value(Column::DistinctDevices).unwrap();
    assert!((n - 250.0).abs() <= 2.0, "{n}");
}

/// Large magnitudes that would overflow a naive sum of squares still give
/// a finite, exact deviation.
#[test]
fn stddev_survives_huge_and_tiny_magnitudes() {
    let parts = Parts::for_aggregates([Aggregate::Stddev]);
    let mut s = AggState::new(parts);
    for x in [1e300, -1e300] {
        s.fold(x, 0);
    }
    let sd = s.value(Column::Stddev).unwrap();
    assert!((sd - 1e300 * 2f64.sqrt()).abs() / sd < 1e-15, "{sd}");
    let mut t = AggState::new(parts);
    for x in [3e-310, -3e-310, 3e-310, -3e-310] {
        t.fold(x, 0);
    }
    let sd = t.value(Column::Stddev).unwrap();
    let expect = 3e-310 * (4.0f64 / 3.0).sqrt();
    assert!((sd - expect).abs() <= 5e-324, "{sd} vs {expect}");
}
