//! `scripts/bench core`: fold rate of each aggregate state, in values per
//! second on one core, beside a plain `f64` loop over the same slice that
//! computes count, sum, min, max and sum of squares (the ceiling: what the
//! exact states cost on top of naive arithmetic).
//!
//! Two ways of folding: `slice` folds the whole slice at once (the batch
//! layer's way, inside DataFusion), `value` one value at a time (the speed
//! layer's way, as readings arrive).
//!
//! Range: 1,000,000 sensor-like values (around 20.0 with noise, a few
//! outliers) folded into one state, best of 7 runs. Distinct devices folds
//! precomputed device hashes (the speed layer hashes each id once).

use std::hint::black_box;
use std::time::Instant;

use braid_core::agg::{AggState, Aggregate, Parts};
use braid_core::hash::device_hash;

const N: usize = 1_000_000;
const RUNS: usize = 7;

fn values() -> Vec<f64> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..N)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            if i % 1000 == 0 {
                1e4 * u
            } else {
                20.0 + (u - 0.5) * 4.0
            }
        })
        .collect()
}

fn best(mut f: impl FnMut()) -> f64 {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn plain(xs: &[f64]) -> (u64, f64, f64, f64, f64) {
    let (mut n, mut sum, mut min, mut max, mut sq) =
        (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &x in xs {
        n += 1;
        sum += x;
        sq += x * x;
        min = min.min(x);
        max = max.max(x);
    }
    (n, sum, min, max, sq)
}

fn main() {
    let xs = values();
    let hashes: Vec<u64> = (0..N)
        .map(|i| device_hash(&format!("device-{}", i % 5000)))
        .collect();
    let ceiling = best(|| {
        black_box(plain(black_box(&xs)));
    });
    let cases: Vec<(&str, Vec<Aggregate>)> = vec![
        ("count", vec![Aggregate::Count]),
        ("sum", vec![Aggregate::Sum]),
        ("min", vec![Aggregate::Min]),
        ("max", vec![Aggregate::Max]),
        ("mean", vec![Aggregate::Mean]),
        ("stddev", vec![Aggregate::Stddev]),
        (
            "count+sum+min+max+mean+stddev",
            vec![
                Aggregate::Count,
                Aggregate::Sum,
                Aggregate::Min,
                Aggregate::Max,
                Aggregate::Mean,
                Aggregate::Stddev,
            ],
        ),
        ("quantiles", vec![Aggregate::Quantiles]),
        ("distinct_devices", vec![Aggregate::DistinctDevices]),
        ("all eight", Aggregate::ALL.to_vec()),
    ];
    println!("braid-core fold rate: {N} values into one state, best of {RUNS} runs, one core");
    println!();
    println!("| state | fold | values/s | ns/value | x plain loop |");
    println!("|---|---|---:|---:|---:|");
    println!(
        "| plain f64 loop (count, sum, min, max, sum of squares) | slice | {:.0} | {:.2} | 1.00 |",
        N as f64 / ceiling,
        ceiling * 1e9 / N as f64
    );
    for (name, aggs) in cases {
        let parts = Parts::for_aggregates(aggs);
        let by_slice = best(|| {
            let mut s = AggState::new(parts);
            s.fold_slice(black_box(&xs), black_box(&hashes));
            black_box(s);
        });
        let by_value = best(|| {
            let mut s = AggState::new(parts);
            for (&x, &h) in xs.iter().zip(&hashes) {
                s.fold(x, h);
            }
            black_box(s);
        });
        for (mode, t) in [("slice", by_slice), ("value", by_value)] {
            println!(
                "| {name} | {mode} | {:.0} | {:.2} | {:.2} |",
                N as f64 / t,
                t * 1e9 / N as f64,
                t / ceiling
            );
        }
    }
}
