//! The archive and the published views open as they are in DuckDB and
//! polars (both from PyPI; `.ci/run` installs them): same row counts, same
//! sums, hive partitions by event date and partition read back.

use std::path::Path;
use std::process::Command;

use braid_batch::archive::write_roll;
use braid_batch::recompute::{RunConfig, run};
use braid_core::{Position, Record, ViewSet};
use braid_testkit::fixtures::reading;

const SCRIPT: &str = r#"
import json, sys, duckdb, polars as pl
d = sys.argv[1]
con = duckdb.connect()
n, total, parts, dates = con.execute(
    f"select count(*), sum(value), count(distinct partition), count(distinct date) "
    f"from read_parquet('{d}/archive/readings/**/*.parquet', hive_partitioning = true)"
).fetchone()
rows, readings = con.execute(
    f"select count(*), sum(readings) from read_parquet('{d}/views/device_summary/*/part-0.parquet')"
).fetchone()
lf = pl.scan_parquet(f"{d}/archive/readings/**/*.parquet", hive_partitioning=True)
pn = lf.select(pl.len()).collect().item()
ps = lf.select(pl.col("value").sum()).collect().item()
print(json.dumps({"n": n, "sum": total, "partitions": parts, "dates": dates,
                  "view_rows": rows, "view_readings": int(readings), "polars_n": pn, "polars_sum": ps}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_and_polars_read_the_archive_and_the_views() {
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400_000;
    let base = 1_700_000_000_000 / day * day;
    // Two partitions; readings over three event dates; rolls spanning dates.
    let mut sum = 0.0;
    for p in 0..2 {
        let records: Vec<Record> = (0..300)
            .map(|i| {
                let v = f64::from(i + 100 * p);
                sum += v;
                Record {
                    reading: reading(
                        &format!("d{}", i % 7),
                        "m",
                        base + i64::from(i) * 900_000,
                        v,
                    ),
                    ingest_ts: base + i64::from(i) * 900_000 + 1000,
                    position: Position {
                        partition: p,
                        offset: i64::from(i),
                        index: 0,
                    },
                }
            })
            .collect();
        for chunk in records.chunks(120) {
            write_roll(dir.path(), p, chunk).unwrap();
        }
    }
    let views = ViewSet::parse(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/views.toml"))
            .unwrap(),
    )
    .unwrap();
    let report = run(RunConfig::new(dir.path().to_path_buf(), views))
        .await
        .unwrap();
    assert_eq!(report.records, 600);

    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "DuckDB/polars could not read the archive (pip install duckdb polars): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"], 600);
    assert_eq!(v["sum"].as_f64(), Some(sum));
    assert_eq!(v["partitions"], 2);
    assert_eq!(v["dates"], 4);
    assert_eq!(v["polars_n"], 600);
    assert_eq!(v["polars_sum"].as_f64(), Some(sum));
    assert_eq!(v["view_readings"], 600);
    assert!(v["view_rows"].as_u64().unwrap() > 0);
}
