//! `braid up` as a user runs it: one process, readings in over HTTP, views
//! out over HTTP; stopped and started again on the same data directory, it
//! answers the same numbers (nothing lost, nothing counted twice).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Up {
    child: Child,
    base: String,
}

fn start(data_dir: &std::path::Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args([
            "up",
            "--broker-listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("BRAID_BROKERS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("braid up starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("braid up printed its address")
            .expect("line");
        if let Some(rest) = line.split("query ").nth(1) {
            break rest.split("/v1/views").next().expect("url").to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Up { child, base }
}

fn stop(mut up: Up) {
    let _ = Command::new("kill")
        .args(["-TERM", &up.child.id().to_string()])
        .status();
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = up.child.try_wait() {
            assert!(status.success(), "braid up exited with {status}");
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "braid up did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn total_readings(http: &reqwest::Client, base: &str) -> u64 {
    let Ok(resp) = http
        .get(format!("{base}/v1/views/device_summary"))
        .send()
        .await
    else {
        return 0;
    };
    let Ok(v) = resp.json::<Value>().await else {
        return 0;
    };
    v["rows"].as_array().map_or(0, |rows| {
        rows.iter().filter_map(|r| r["readings"].as_u64()).sum()
    })
}

async fn wait_for(http: &reqwest::Client, base: &str, want: u64) {
    let t = Instant::now();
    loop {
        let got = total_readings(http, base).await;
        if got == want {
            return;
        }
        assert!(
            got < want,
            "counted {got} readings, more than the {want} sent"
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "only {got} of {want} readings reached the view"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_in_views_out_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let body: Vec<Value> = (0..200)
        .map(|i| json!({"device_id": format!("probe-{}", i % 8), "metric": "soil_moisture", "ts": now - i * 1000, "value": i, "seq": i}))
        .collect();
    let http = reqwest::Client::new();

    let up = start(dir.path());
    let r = http
        .post(format!("{}/v1/readings", up.base))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let lp = format!("meter,device_id=home-1 power_w=1200 {}\n", now * 1_000_000);
    let r = http
        .post(format!("{}/v1/write", up.base))
        .body(lp)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 204);
    wait_for(&http, &up.base, 201).await;
    let views: Value = get_json(&http, &format!("{}/v1/views", up.base)).await;
    assert_eq!(views["views"].as_array().map(Vec::len), Some(4));
    stop(up);

    // Same data directory: the broker's files and the speed checkpoints.
    let up = start(dir.path());
    wait_for(&http, &up.base, 201).await;
    // A retried request is deduplicated.
    let r = http
        .post(format!("{}/v1/readings", up.base))
        .json(&body[..10])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_for(&http, &up.base, 201).await;
    stop(up);
    // The archive holds the log: every reading sent, the retried ten too,
    // each once.
    assert_eq!(archived_rows(&dir.path().join("archive/readings")), 211);

    // A batch run, as cron runs it, recomputes the views from the archive;
    // served again, every reading is counted once, now from the batch run.
    let out = batch_run(dir.path());
    assert!(
        out.status.success(),
        "braid batch run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("device_summary: "), "{printed}");
    let up = start(dir.path());
    wait_for(&http, &up.base, 201).await;
    let v: Value = get_json(&http, &format!("{}/v1/views/device_summary", up.base)).await;
    assert!(v["batch"]["run_id"].is_string(), "{v}");
    let rows = v["rows"].as_array().expect("rows");
    let from_batch: u64 = rows
        .iter()
        .filter_map(|r| r["readings_batch"].as_u64())
        .sum();
    assert_eq!(from_batch, 201, "every reading is in the batch run: {v}");
    assert!(rows.iter().all(|r| r["source"] == "batch"), "{v}");
    let dups: u64 = rows
        .iter()
        .filter_map(|r| r["duplicates_dropped"].as_u64())
        .sum();
    assert_eq!(dups, 10, "the batch run drops the same retried ten: {v}");
    let batch_only: Value = get_json(
        &http,
        &format!("{}/v1/views/device_summary?source=batch", up.base),
    )
    .await;
    assert_eq!(
        batch_only["rows"].as_array().map(Vec::len),
        Some(rows.len())
    );

    // New readings in windows the batch run already holds: those windows
    // are now batch+speed, and still every reading counts once.
    let more: Vec<Value> = (0..20)
        .map(|i| json!({"device_id": format!("probe-{}", i % 8), "metric": "soil_moisture", "ts": now - i * 1000 - 500, "value": i, "seq": 1000 + i}))
        .collect();
    let r = http
        .post(format!("{}/v1/readings", up.base))
        .json(&more)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    wait_for(&http, &up.base, 221).await;
    let v: Value = get_json(&http, &format!("{}/v1/views/device_summary", up.base)).await;
    let rows = v["rows"].as_array().expect("rows");
    let sum = |k: &str| -> u64 { rows.iter().filter_map(|r| r[k].as_u64()).sum() };
    assert_eq!(
        (sum("readings_batch"), sum("readings_speed")),
        (201, 20),
        "{v}"
    );
    assert!(rows.iter().any(|r| r["source"] == "batch+speed"), "{v}");

    // `braid compare`: the batch run against everything the speed layer
    // folded, the new readings named as not yet archived.
    let compare = |format: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_braid"))
            .args([
                "compare",
                "device_summary",
                "--server",
                &up.base,
                "--format",
                format,
            ])
            .args(extra)
            .output()
            .expect("braid compare");
        assert!(out.status.success(), "braid compare: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let c: Value = serde_json::from_str(&compare("json", &[])).expect("json");
    let rows = c["rows"].as_array().expect("rows");
    let sum = |k: &str| -> u64 { rows.iter().filter_map(|r| r[k].as_u64()).sum() };
    assert_eq!(
        (sum("batch_readings"), sum("speed_readings")),
        (201, 221),
        "{c}"
    );
    assert_eq!(sum("speed_readings_after_cut"), 20, "{c}");
    assert!(
        rows.iter()
            .filter(|r| r["status"] != "equal")
            .all(|r| r["reasons"] == json!(["not_yet_archived"])),
        "only the new readings differ: {c}"
    );
    assert!(c["summary"]["equal"].as_u64() > Some(0), "{c}");
    let printed = compare("table", &[]);
    assert!(printed.contains("not_yet_archived"), "{printed}");
    assert!(
        printed.contains(&format!("{} windows:", rows.len())),
        "{printed}"
    );
    let parquet = dir.path().join("compare.parquet");
    compare("parquet", &["--output", parquet.to_str().expect("path")]);
    let file = std::fs::File::open(&parquet).expect("the export");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let n: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(n, rows.len());
    notebook_example(dir.path(), &parquet);
    stop(up);
}

/// Runs the README's notebook example (DuckDB and polars over the
/// comparison's export and the archive) where it expects to run: a
/// project root with the data directory at `data/run`.
fn notebook_example(data_dir: &std::path::Path, export: &std::path::Path) {
    let readme = include_str!("../../../../README.md");
    let code = readme
        .split("<!-- notebook example: crates/cli/tests/it/up.rs runs this block -->\n```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README's notebook example");
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("data")).expect("mkdir");
    std::os::unix::fs::symlink(data_dir, root.path().join("data/run")).expect("symlink");
    std::os::unix::fs::symlink(export, root.path().join("compare.parquet")).expect("symlink");
    let out = Command::new("python3")
        .args(["-c", code])
        .current_dir(root.path())
        .output()
        .expect("python3 runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README's notebook example failed (pip install duckdb polars): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The differing windows and their reason, and the archive's readings.
    assert!(printed.contains("not_yet_archived"), "{printed}");
    assert!(printed.contains("probe-"), "{printed}");
    assert!(
        printed.contains("211") || printed.contains("231"),
        "{printed}"
    );
}

#[test]
fn an_overlapping_batch_run_exits_at_once_with_75() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _held = braid_batch::recompute::lock(&braid_store::Layout::new(dir.path())).expect("lock");
    let out = batch_run(dir.path());
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another batch run holds"), "{err}");
}

/// `braid batch run` on `data_dir`, from the repository root, as cron runs it.
fn batch_run(data_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["batch", "run"])
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("braid batch run")
}

fn archived_rows(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += archived_rows(&p);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            let f = std::fs::File::open(&p).expect("open");
            let meta = parquet::file::reader::SerializedFileReader::new(f).expect("parquet");
            n += parquet::file::reader::FileReader::metadata(&meta)
                .file_metadata()
                .num_rows() as usize;
        }
    }
    n
}
