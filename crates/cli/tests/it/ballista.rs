//! `braid batch run --ballista`: a scheduler and two executors as processes
//! on loopback run the batch plan; its output is the local run's, byte for
//! byte, for a full run and for an incremental one, and for an archive the
//! executors read from S3 (moto).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use braid_batch::archive::{EncodedRoll, write_roll};
use braid_batch::import::{publish_import, write_import};
use braid_core::{Position, Record};
use braid_store::views::{current_run, read_current};
use braid_store::{Blobs, Layout};
use braid_testkit::fixtures::reading;
use braid_testkit::moto::Moto;

use super::cluster::{run_env, runtime, wait_listening};
use super::s3::direct_options;
use super::views;

/// A child killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Rolls of `n` records per partition from offset `from`: 300 devices,
/// every 7th record a duplicate of the one before (same device, time and
/// value at a new offset), every 11th late by up to 20 minutes.
fn archive(dir: &Path, from: i64, n: i64) {
    for records in records_of(from, n) {
        for chunk in records.chunks(5_000) {
            write_roll(dir, chunk[0].position.partition, chunk).expect("roll");
        }
    }
}

/// The records of [`archive`], per partition.
fn records_of(from: i64, n: i64) -> Vec<Vec<Record>> {
    (0..3)
        .map(|p| {
            (from..from + n)
                .map(|i| {
                    let k = if i % 7 == 0 { i - 1 } else { i };
                    let late = if k % 11 == 0 { (k % 1200) * 1000 } else { 0 };
                    let ts = 1_700_000_000_000 + k * 1000 - late;
                    Record {
                        reading: reading(
                            &format!("dev-{}", k % 300),
                            "power_w",
                            ts,
                            (k % 97) as f64,
                        ),
                        ingest_ts: 1_700_000_000_000 + i * 1000 + 10,
                        position: Position {
                            partition: p,
                            offset: i,
                            index: 0,
                        },
                    }
                })
                .collect()
        })
        .collect()
}

/// Each view's published Parquet file and the run's fold states.
fn published(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let layout = Layout::new(dir);
    let mut out = Vec::new();
    for v in &views().views {
        let run = current_run(&layout, &v.name).unwrap().expect("a run");
        for f in ["part-0.parquet", "folders.bin"] {
            let bytes = std::fs::read(layout.run(&v.name, &run).join(f)).expect("the run's file");
            out.push((format!("{}/{f}", v.name), bytes));
        }
    }
    out
}

/// An import of 2,000 readings of an old meter.
fn imported() -> Vec<Record> {
    (0..2_000)
        .map(|i| Record {
            reading: reading(
                "meter-old",
                "power_w",
                1_690_000_000_000 + i * 60_000,
                i as f64,
            ),
            ingest_ts: 1_690_000_000_000 + i * 60_000,
            position: Position {
                partition: -1,
                offset: i,
                index: 0,
            },
        })
        .collect()
}

fn batch_run(dir: &Path, extra: &[&str]) -> String {
    batch_run_env(dir, extra, &[])
}

fn batch_run_env(dir: &Path, extra: &[&str], env: &[(String, String)]) -> String {
    let data = dir.display().to_string();
    let mut args = vec!["batch", "run", "--data-dir", &data];
    args.extend_from_slice(extra);
    let out = run_env(&args, env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "braid batch run {extra:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The published runs of `remote` and `local` are the same bytes; where
/// not, says which window differs first.
fn assert_same(remote: &Path, local: &Path) {
    let (a, b) = (published(remote), published(local));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if x == y {
            continue;
        }
        for v in &views().views {
            let read = |d: &Path| read_current(&Layout::new(d), v).unwrap().unwrap();
            let (r, l) = (read(remote), read(local));
            assert_eq!(
                r.manifest.records_read, l.manifest.records_read,
                "{}: records read",
                v.name
            );
            assert_eq!(r.windows.len(), l.windows.len(), "{}: windows", v.name);
            for ((kr, sr), (kl, sl)) in r.windows.iter().zip(&l.windows) {
                assert_eq!(kr, kl, "{}: window keys", v.name);
                assert!(
                    sr.1 == sl.1 && format!("{:?}", sr.0) == format!("{:?}", sl.0),
                    "{}: window {kr:?}: Ballista {sr:?}, local {sl:?}",
                    v.name
                );
            }
        }
        panic!("{name}: the Ballista run's bytes differ from the local run's");
    }
}

#[test]
fn a_ballista_run_writes_the_local_runs_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = tmp.path().join("remote");
    let local = tmp.path().join("local");
    for d in [&remote, &local] {
        archive(d, 0, 20_000);
        write_import(d, &imported()).expect("import");
    }

    let cluster = Ballista::start(tmp.path(), &[]);
    let url = cluster.url.clone();
    let t = Instant::now();
    let out = batch_run(&remote, &["--ballista", &url]);
    assert!(out.contains("(62000 records, full"), "{out}");
    let remote_took = t.elapsed();
    batch_run(&local, &[]);
    assert_same(&remote, &local);
    cluster.assert_both_ran();

    // More archive, then an incremental run on the cluster: the fold states
    // it continues from came back from the executors through the plan.
    for d in [&remote, &local] {
        archive(d, 20_000, 10_000);
    }
    let out = batch_run(&remote, &["--ballista", &url, "--incremental"]);
    assert!(out.contains("incremental"), "{out}");
    batch_run(&local, &[]);
    assert_same(&remote, &local);
    eprintln!("ballista full run: {remote_took:?}");
}

/// The executors read the archive, an import included, from S3 themselves
/// (the client sends them the store's URL, they take the credentials from
/// their own AWS_* variables): the run is the local run's, byte for byte.
#[test]
fn a_ballista_run_reads_the_archive_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("archive");
    let url = "s3://archive/braid";
    let mut env = Moto::env(&moto.addr);
    env.push(("BRAID_ARCHIVE_URL".into(), url.into()));
    let store = Blobs::open_with(url, &direct_options(&moto.addr)).expect("open");
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = tmp.path().join("remote");
    let local = tmp.path().join("local");
    runtime().block_on(async {
        for records in records_of(0, 20_000) {
            for chunk in records.chunks(5_000) {
                let roll = EncodedRoll::encode(chunk[0].position.partition, chunk)
                    .expect("encode")
                    .expect("a roll");
                roll.publish(&store).await.expect("publish");
            }
        }
        publish_import(&store, &imported()).await.expect("import");
    });
    archive(&local, 0, 20_000);
    write_import(&local, &imported()).expect("import");
    let cluster = Ballista::start(tmp.path(), &env);
    let out = batch_run_env(&remote, &["--ballista", &cluster.url], &env);
    assert!(out.contains("(62000 records, full"), "{out}");
    batch_run(&local, &[]);
    assert_same(&remote, &local);
    cluster.assert_both_ran();
    assert!(!remote.join("archive").exists());
}

/// A Ballista scheduler and two executors of one slot each, as processes
/// with `env`, their logs and work directories under `dir`.
struct Ballista {
    /// `df://HOST:PORT`.
    url: String,
    executors: Vec<(Proc, PathBuf)>,
    _scheduler: Proc,
}

impl Ballista {
    fn start(dir: &Path, env: &[(String, String)]) -> Self {
        let mut scheduler = Command::new(env!("CARGO_BIN_EXE_braid"))
            .args(["batch", "scheduler", "--bind", "127.0.0.1:0"])
            .env("BRAID_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("scheduler.log")).expect("log"))
            .spawn()
            .expect("the scheduler starts");
        let stdout = scheduler.stdout.take().expect("stdout");
        let scheduler = Proc(scheduler);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the scheduler's first line");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("an address")
            .to_string();
        let mut executors = Vec::new();
        for e in 0..2 {
            let (port, grpc) = (free_port(), free_port());
            let work = dir.join(format!("executor-{e}"));
            std::fs::create_dir_all(&work).expect("work dir");
            let child = Command::new(env!("CARGO_BIN_EXE_braid"))
                .args(["batch", "executor", "--scheduler", &addr, "--slots", "1"])
                .args([
                    "--port",
                    &port.to_string(),
                    "--grpc-port",
                    &grpc.to_string(),
                ])
                .arg("--work-dir")
                .arg(&work)
                .env("BRAID_LOG", "info,braid_batch=debug")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("executor-{e}.log"))).expect("log"))
                .spawn()
                .expect("an executor starts");
            executors.push((Proc(child), work));
            wait_listening(&format!("127.0.0.1:{grpc}"), "executor");
        }
        // Executors register with their first heartbeat.
        std::thread::sleep(Duration::from_secs(2));
        Self {
            url: format!("df://{addr}"),
            executors,
            _scheduler: scheduler,
        }
    }

    /// Asserts that both executors ran tasks.
    fn assert_both_ran(&self) {
        for (_, work) in &self.executors {
            let used = std::fs::read_dir(work).map_or(0, Iterator::count);
            assert!(used > 0, "{} ran no task", work.display());
        }
    }
}
