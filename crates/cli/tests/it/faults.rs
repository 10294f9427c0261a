//! The fault suite: the roles as processes on loopback ([`Cluster`]),
//! load with per-device sequence numbers from the simulator over HTTP
//! (it sends what was not acknowledged again, the same readings), faults
//! injected on a schedule drawn from a printed seed (`BRAID_FAULT_SEED`
//! replays one), and every case ending with `braid verify`'s counters at
//! zero. Each case prints its counters and figures.
//!
//! Each case has a short form, run by the default tests (`scripts/check`,
//! CI; each case alone on the machine, see `.config/nextest.toml`), and a
//! long form with more faults over more time: `scripts/faults [CASE]`
//! (`BRAID_FAULT_FORM=long`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Cluster, Setup, at, runtime, wait_listening};

/// Whether the long form runs (`BRAID_FAULT_FORM=long`).
fn long() -> bool {
    std::env::var("BRAID_FAULT_FORM").is_ok_and(|f| f == "long")
}

/// `short` in the short form, `long` in the long one.
fn pick<T>(short: T, long_form: T) -> T {
    if long() { long_form } else { short }
}

/// The schedule's seed: `BRAID_FAULT_SEED`, or the clock's; printed.
fn seed(case: &str) -> u64 {
    let seed = std::env::var("BRAID_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!(
        "{case}: {} form, seed {seed} (BRAID_FAULT_SEED={seed} replays this schedule)",
        pick("short", "long")
    );
    seed
}

/// `n` fault times in `[from, to)` seconds, at least `gap` apart, sorted.
fn schedule(seed: u64, n: usize, from: f64, to: f64, gap: f64) -> Vec<f64> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    // Evenly spread slots, each jittered inside its own share.
    let slot = (to - from) / n as f64;
    (0..n)
        .map(|i| from + slot * i as f64 + (slot - gap).max(0.0) * next())
        .collect()
}

fn post(
    url: &str,
    token: Option<&str>,
    body: &Value,
    timeout: Duration,
) -> Result<(u16, Option<String>), String> {
    let rt = runtime();
    rt.block_on(async {
        let mut r = reqwest::Client::new().post(url).timeout(timeout).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.map_err(|e| e.to_string())?;
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((r.status().as_u16(), retry))
    })
}

/// A probe reading of its own device, appended to the acknowledged file
/// when the gateway acknowledges it, so verify holds it too.
fn probe(c: &Cluster, n: u64) -> Result<(u16, Option<String>), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let r = json!({"device_id": "probe-ready", "metric": "occupancy", "ts": now, "value": 1.0, "seq": n});
    let answer = post(
        &format!("http://{}/v1/readings", c.ingest),
        c.secret("writer"),
        &r,
        Duration::from_secs(15),
    );
    if matches!(answer, Ok((200..=299, _))) {
        record_acked(c, &[r]);
    }
    answer
}

fn probes_file(c: &Cluster) -> PathBuf {
    c.dir().join("probes.ndjson")
}

/// The simulator's and the probes' acknowledgements together.
fn all_acked(c: &Cluster) -> PathBuf {
    let mut text = std::fs::read_to_string(c.acked()).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(probes_file(c)).unwrap_or_default());
    let path = c.dir().join("all-acked.ndjson");
    std::fs::write(&path, text).expect("write");
    path
}

fn verify_all_clean(c: &Cluster, case: &str) -> Value {
    let (code, report) = c.verify(&all_acked(c));
    println!("{case}: braid verify: {}", report["counters"]);
    for (name, value) in report["counters"].as_object().expect("counters") {
        // The archive counters are not checked (null) before a first roll.
        let unchecked = value.is_null() && name.starts_with("archive_");
        assert!(
            value == &Value::from(0) || unchecked,
            "{case}: {name}: {report}"
        );
    }
    assert_eq!(code, Some(0), "{case}: {report}");
    report
}

fn load(c: &Cluster, seconds: u64) -> std::process::Child {
    c.home_fleet(seconds, 11)
}

fn finish(mut sim: std::process::Child) {
    let status = sim.wait().expect("simulator");
    assert!(status.success(), "the simulator failed: {status}");
}

/// How many times the simulator sent readings again.
fn resends(c: &Cluster) -> usize {
    std::fs::read_to_string(c.dir().join("simulate.log"))
        .unwrap_or_default()
        .matches("sending them again")
        .count()
}

/// Case 1: the gateway killed with SIGKILL five times during 60 s of load
/// (short form: twice in 25 s);
/// clients send what was not acknowledged again. Nothing acknowledged is
/// lost, nothing is counted twice, and the gateway acknowledges writes
/// again within 5 s of each restart.
#[test]
fn case_1_gateway_killed() {
    let case = "case 1 (gateway kill -9)";
    let mut c = Cluster::start(Setup::default());
    let times = schedule(seed(case), pick(2, 5), 5.0, pick(20.0, 55.0), 3.0);
    let sim = load(&c, pick(25, 60));
    let start = Instant::now();
    let mut ready = Vec::new();
    for (i, t) in times.iter().enumerate() {
        at(start, *t);
        c.kill("ingest");
        c.spawn("ingest");
        let restarted = Instant::now();
        wait_listening(&c.ingest.clone(), "the gateway");
        loop {
            if let Ok((200..=299, _)) = probe(&c, i as u64) {
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(30),
                "{case}: not ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ready.push(restarted.elapsed());
    }
    finish(sim);
    let worst = ready.iter().max().copied().unwrap_or_default();
    println!(
        "{case}: kills at {times:.1?} s; acknowledging again after {ready:?} (worst {worst:?})"
    );
    assert!(
        worst < Duration::from_secs(5),
        "{case}: ready after {worst:?}"
    );
    verify_all_clean(&c, case);
}

/// Case 2: the broker stopped for 30 s three times under load (short form:
/// 12 s once). No 2xx while it is down, a 503 with Retry-After within 10 s,
/// nothing acknowledged lost, writes acknowledged within 30 s of its
/// return, the gateway's memory within its in-flight cap.
#[test]
fn case_2_broker_stopped() {
    let case = "case 2 (broker stopped)";
    let mut c = Cluster::start(Setup::default());
    let (outages, outage) = (pick(1, 3), Duration::from_secs(pick(12, 30)));
    // The load runs between outages for these many seconds.
    let gaps = schedule(seed(case), outages, 3.0, 12.0, 0.0);
    let sim = load(&c, pick(35, 150));
    let gateway = c.pid("ingest").expect("gateway pid");
    let rss_before = rss_kib(gateway);
    let mut rss_most = rss_before;
    let start = Instant::now();
    let mut figures = Vec::new();
    for (i, gap) in gaps.iter().enumerate() {
        std::thread::sleep(Duration::from_secs_f64(*gap));
        c.stop("broker");
        let down = Instant::now();
        // While it is down: never a 2xx, and a 503 with Retry-After soon.
        let mut first_503 = None;
        let mut n = 0;
        while down.elapsed() < outage {
            rss_most = rss_most.max(rss_kib(gateway));
            n += 1;
            match probe(&c, 1000 * (i as u64 + 1) + n) {
                Ok((s @ 200..=299, _)) => panic!("{case}: {s} while the broker is down"),
                Ok((503, retry)) => {
                    assert!(retry.is_some(), "{case}: a 503 without Retry-After");
                    first_503.get_or_insert(down.elapsed());
                }
                Ok((s, _)) => panic!("{case}: {s} while the broker is down"),
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let first_503 = first_503.expect("a 503 while the broker was down");
        assert!(
            first_503 < Duration::from_secs(10),
            "{case}: first 503 after {first_503:?}"
        );
        c.spawn("broker");
        let back = Instant::now();
        loop {
            n += 1;
            if let Ok((200..=299, _)) = probe(&c, 1000 * (i as u64 + 1) + n) {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(30),
                "{case}: no write within 30 s of the broker's return"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        figures.push((first_503, back.elapsed()));
    }
    println!(
        "{case}: {outages} outage(s) of {outage:?}, load between them {gaps:.1?} s, {:.0?} in all; (first 503, first 2xx after the return) per outage: {figures:?}; the simulator sent {} requests again; gateway memory {rss_before} KiB, at most {rss_most} KiB",
        start.elapsed(),
        resends(&c)
    );
    // The gateway holds at most its in-flight cap (64 MiB by default) of
    // bodies while Kafka does not acknowledge.
    assert!(
        rss_most.saturating_sub(rss_before) < 64 << 10,
        "{case}: the gateway grew from {rss_before} KiB to {rss_most} KiB"
    );
    finish(sim);
    verify_all_clean(&c, case);
}

fn newest_checkpoint(dir: &Path, p: i32) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir.join(format!("speed/checkpoints/partition={p}")))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
            .collect();
    files.sort();
    files.pop()
}

fn checkpoint_being_written(dir: &Path) -> bool {
    (0..4).any(|p| {
        std::fs::read_dir(dir.join(format!("speed/checkpoints/partition={p}")))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    })
}

/// Case 3: the speed worker killed with SIGKILL three times (short form:
/// twice), once while a
/// checkpoint is being written: every counter zero after recovery.
#[test]
fn case_3_speed_killed() {
    let case = "case 3 (speed kill -9)";
    let mut c = Cluster::start(Setup {
        checkpoint_interval: "500ms",
        ..Setup::default()
    });
    let times = schedule(seed(case), pick(2, 3), 5.0, pick(20.0, 50.0), 5.0);
    let sim = load(&c, pick(25, 60));
    let start = Instant::now();
    let mut caught = false;
    for (i, t) in times.iter().enumerate() {
        at(start, *t);
        if i == 0 {
            // Kill it with a checkpoint's temporary file on disk.
            let t = Instant::now();
            while !checkpoint_being_written(c.data_dir()) && t.elapsed() < Duration::from_secs(10) {
                std::hint::spin_loop();
            }
            caught = checkpoint_being_written(c.data_dir());
        }
        c.kill("speed");
        c.spawn("speed");
    }
    finish(sim);
    println!("{case}: kills at {times:.1?} s; the first during a checkpoint write: {caught}");
    verify_all_clean(&c, case);
}

/// Case 4: a truncated and a bit-flipped checkpoint are refused by their
/// checksum and the previous ones used: no panic, every counter zero.
#[test]
fn case_4_corrupt_checkpoints() {
    let case = "case 4 (corrupt checkpoints)";
    let _ = seed(case);
    let mut c = Cluster::start(Setup {
        checkpoint_interval: "1s",
        ..Setup::default()
    });
    let sim = load(&c, pick(14, 20));
    std::thread::sleep(Duration::from_secs(pick(8, 10)));
    c.kill("speed");
    let truncated = newest_checkpoint(c.data_dir(), 0).expect("a checkpoint of partition 0");
    let bytes = std::fs::read(&truncated).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("truncate");
    let flipped = newest_checkpoint(c.data_dir(), 1).expect("a checkpoint of partition 1");
    let mut bytes = std::fs::read(&flipped).expect("read");
    let at_byte = bytes.len() / 3;
    bytes[at_byte] ^= 0x10;
    std::fs::write(&flipped, bytes).expect("flip");
    c.spawn("speed");
    finish(sim);
    verify_all_clean(&c, case);
    let logs = c.logs("speed");
    let refused = logs.matches("checkpoint refused").count();
    println!(
        "{case}: {} truncated, {} bit-flipped; refusals logged: {refused}",
        truncated.display(),
        flipped.display()
    );
    assert!(
        refused >= 2,
        "{case}: both corrupt checkpoints refused:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "{case}: a panic:\n{logs}");
}

/// Case 5: the archiver killed with SIGKILL five times (short form: twice)
/// while writing, with
/// 1 and 3 partitions: every offset archived exactly once, every file
/// readable (verify reads them all).
#[test]
fn case_5_archiver_killed() {
    for partitions in [1, 3] {
        let case = format!("case 5 (archiver kill -9, {partitions} partitions)");
        let mut c = Cluster::start(Setup {
            partitions,
            roll_age: "1s",
            ..Setup::default()
        });
        let times = schedule(seed(&case), pick(2, 5), 3.0, pick(15.0, 40.0), 3.0);
        let sim = load(&c, pick(18, 45));
        let start = Instant::now();
        for t in &times {
            at(start, *t);
            c.kill("archive");
            c.spawn("archive");
        }
        finish(sim);
        // The last archiver catches up with the whole log.
        let t = Instant::now();
        let report = loop {
            let report = verify_all_clean(&c, &case);
            if report["archived"] == report["records"] || t.elapsed() > Duration::from_secs(60) {
                break report;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        println!(
            "{case}: kills at {times:.1?} s; {} of {} records archived",
            report["archived"], report["records"]
        );
        assert_eq!(
            report["archived"], report["records"],
            "{case}: the archive is complete"
        );
    }
}

/// Case 7: every reading delivered twice: over HTTP (the simulator sends
/// each one twice in the same request) and over MQTT (each message
/// published again, as a device does whose PUBACK was lost): none counted
/// twice, each second copy counted as a dropped duplicate.
#[test]
fn case_7_every_reading_twice() {
    let case = "case 7 (every reading twice)";
    let _ = seed(case);
    let c = Cluster::start(Setup {
        mqtt: true,
        ..Setup::default()
    });
    let sim = c.simulate(&[
        "--scenario",
        "farm",
        "--devices",
        "20",
        "--rate",
        "100",
        "--duration",
        pick("10s", "20s"),
        "--seed",
        "3",
        "--duplicate",
        "1",
        "--out-of-order",
        "0",
        "--outdated",
        "0",
        "--historical",
        "0",
    ]);
    finish(sim);
    verify_all_clean(&c, case);
    let rt = runtime();
    let v: Value = rt.block_on(async {
        reqwest::get(format!("{}/v1/views/device_summary", c.server()))
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    });
    let rows = v["rows"].as_array().expect("rows");
    let sum = |k: &str| -> u64 { rows.iter().filter_map(|r| r[k].as_u64()).sum() };
    println!(
        "{case}: readings {}, duplicates dropped {}",
        sum("readings"),
        sum("duplicates_dropped")
    );
    assert!(sum("readings") > pick(500, 1000), "{v}");
    assert_eq!(sum("readings"), sum("duplicates_dropped"), "{case}");

    // Over MQTT: each message published twice, the copy after the first
    // was acknowledged by the broker.
    let mqtt = c.mqtt.as_ref().expect("mqtt");
    let n = pick(50, 200);
    let now = now_ms();
    let readings: Vec<Value> = (0..n)
        .map(|i| json!({"device_id": format!("mqtt-{}", i % 5), "metric": "occupancy", "ts": now - 2_000 + i as i64, "value": i as f64, "seq": i}))
        .collect();
    let messages: Vec<(String, String)> = readings
        .iter()
        .map(|r| {
            (
                format!("braid/{}/readings", r["device_id"].as_str().unwrap_or("")),
                r.to_string(),
            )
        })
        .collect();
    // Until the gateway's subscription stands: the first copy of the first
    // message, sent until it is in a view.
    let t = Instant::now();
    loop {
        rt.block_on(mqtt.publish(&messages[..1]));
        std::thread::sleep(Duration::from_millis(500));
        let v = get_json(&format!(
            "{}/v1/views/device_summary?device=mqtt-0",
            c.server()
        ));
        if v["rows"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{case}: MQTT ingest never subscribed"
        );
    }
    rt.block_on(mqtt.publish(&messages));
    rt.block_on(mqtt.publish(&messages));
    record_acked(&c, &readings);
    let t = Instant::now();
    let (readings_in, dups) = loop {
        let mut got = (0, 0);
        for d in 0..5 {
            let v = get_json(&format!(
                "{}/v1/views/device_summary?device=mqtt-{d}",
                c.server()
            ));
            for r in v["rows"].as_array().into_iter().flatten() {
                got.0 += r["readings"].as_u64().unwrap_or(0);
                got.1 += r["duplicates_dropped"].as_u64().unwrap_or(0);
            }
        }
        // Every message at least twice, the probes more often.
        if got.0 == n && got.1 >= n {
            break got;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{case}: MQTT readings {got:?} of {n}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    println!(
        "{case}: over MQTT, {n} readings published twice: readings {readings_in}, duplicates dropped {dups}"
    );
    verify_all_clean(&c, case);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn get_json(url: &str) -> Value {
    let rt = runtime();
    rt.block_on(async {
        reqwest::get(url)
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    })
}

/// Posts `readings` and records them as acknowledged; panics unless 2xx.
fn post_acked(c: &Cluster, readings: &[Value]) {
    let (status, _) = post(
        &format!("http://{}/v1/readings", c.ingest),
        c.secret("writer"),
        &Value::Array(readings.to_vec()),
        Duration::from_secs(15),
    )
    .expect("post");
    assert!((200..300).contains(&status), "post: {status}");
    record_acked(c, readings);
}

/// The `home_power` row of `device` for the window starting at `start`.
fn home_row(c: &Cluster, device: &str, start: i64) -> Value {
    let v = get_json(&format!(
        "{}/v1/views/home_power?device={device}",
        c.server()
    ));
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["window_start"] == start)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Case 8: out-of-order and late data. A device's window is closed by a
/// newer reading; then 7 readings arrive for it 10 minutes late (within
/// `home_power`'s allowed lateness of 30 minutes) and 5 more for a window 3
/// hours back (historical). The late counter equals the 7 injected, the
/// historical ones are pending until the next batch run, which includes
/// every one of them; verify finds no mismatch throughout.
#[test]
fn case_8_late_and_historical_readings() {
    let case = "case 8 (late and historical)";
    let _ = seed(case);
    let c = Cluster::start(Setup::default());
    let now = now_ms();
    let minute = 60_000;
    let late_window = (now / minute - 10) * minute;
    let old_window = (now / minute - 180) * minute;
    let reading = |ts: i64, seq: u64| json!({"device_id": "late-1", "metric": "power_w", "ts": ts, "value": seq as f64, "seq": seq});
    // The partition's watermark passes the late window's end.
    post_acked(&c, &[reading(now, 0)]);
    let late: Vec<Value> = (1..=7)
        .map(|i| reading(late_window + i * 1000, i as u64))
        .collect();
    post_acked(&c, &late);
    let old: Vec<Value> = (1..=5)
        .map(|i| reading(old_window + i * 1000, 100 + i as u64))
        .collect();
    post_acked(&c, &old);

    let t = Instant::now();
    let (late_row, old_row) = loop {
        let (a, b) = (
            home_row(&c, "late-1", late_window),
            home_row(&c, "late-1", old_window),
        );
        if a["readings"] == 7 && b["pending_historical"] == 5 {
            break (a, b);
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{case}: speed rows {a} {b}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(late_row["late_readings"], 7, "{case}: {late_row}");
    assert_eq!(old_row["readings"], 0, "{case}: {old_row}");
    verify_all_clean(&c, case);

    // The next batch run that covers them applies the historical five.
    let t = Instant::now();
    let old_row = loop {
        std::thread::sleep(Duration::from_secs(3));
        c.batch_run();
        let row = home_row(&c, "late-1", old_window);
        if row["readings_batch"] == 5 {
            break row;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{case}: after batch runs {row}"
        );
    };
    assert_eq!(old_row["pending_historical"], 0, "{case}: {old_row}");
    let late_row = home_row(&c, "late-1", late_window);
    assert_eq!(
        (&late_row["readings"], &late_row["late_readings"]),
        (&json!(7), &json!(7)),
        "{case}: {late_row}"
    );
    println!("{case}: late window {late_row}\n{case}: historical window {old_row}");
    verify_all_clean(&c, case);
}

/// Case 9: event times beyond the clock and precision edges. A reading 2 h
/// ahead (the limit is 1 h) is refused with 400 naming `ts`; line protocol
/// with `precision=s` given nanoseconds lands far in the future and is
/// refused; the same instant in each precision is accepted and counted
/// once (the same reading: later copies are duplicates). Nothing refused
/// reaches the log.
#[test]
fn case_9_future_timestamps_and_precision_edges() {
    let case = "case 9 (future and precision)";
    let _ = seed(case);
    let c = Cluster::start(Setup::default());
    let base = format!("http://{}", c.ingest);
    let now = now_ms();
    let rt = runtime();
    let send = |path: &str, body: String| -> (u16, String) {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{base}{path}"))
                .header(
                    "content-type",
                    if path.starts_with("/v1/write") {
                        "text/plain"
                    } else {
                        "application/json"
                    },
                )
                .body(body)
                .send()
                .await
                .expect("post");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    };
    let future = json!({"device_id": "edge-1", "metric": "power_w", "ts": now + 7_200_000, "value": 1.0, "seq": 1});
    let (status, body) = send("/v1/readings", future.to_string());
    assert_eq!(status, 400, "{case}: {body}");
    assert!(body.contains("ts"), "{case}: the reason names ts: {body}");
    let ns = now * 1_000_000;
    let (status, body) = send(
        "/v1/write?precision=s",
        format!("power_w,device_id=edge-2 value=1 {ns}"),
    );
    assert_eq!(status, 400, "{case}: nanoseconds read as seconds: {body}");
    let secs = now / 1000;
    let mut accepted = 0;
    for (precision, ts) in [
        ("s", secs.to_string()),
        ("ms", (secs * 1000).to_string()),
        ("us", (secs * 1_000_000).to_string()),
        ("ns", (secs * 1_000_000_000).to_string()),
    ] {
        let (status, body) = send(
            &format!("/v1/write?precision={precision}"),
            format!("power_w,device_id=edge-3 value=2 {ts}"),
        );
        assert_eq!(status, 204, "{case}: precision {precision}: {body}");
        accepted += 1;
    }
    let window = (secs * 1000) / 60_000 * 60_000;
    let t = Instant::now();
    let row = loop {
        let row = home_row(&c, "edge-3", window);
        if row["readings"].as_u64().unwrap_or(0) + row["duplicates_dropped"].as_u64().unwrap_or(0)
            == accepted
        {
            break row;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{case}: {row}");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("{case}: 2 refused with 400; the same instant in 4 precisions: {row}");
    assert_eq!(
        row["readings"], 1,
        "{case}: one instant, one reading: {row}"
    );
    let report = verify_all_clean(&c, case);
    assert_eq!(
        report["records"], accepted,
        "{case}: only what was accepted is in the log: {report}"
    );
}

/// Resident memory of a process, KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Latencies of `n` probe writes, sorted.
fn probe_latencies(c: &Cluster, n: u64, first_seq: u64) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            let r = probe(c, first_seq + i);
            assert!(
                matches!(r, Ok((200..=299, _))),
                "a probe write failed: {r:?}"
            );
            t.elapsed()
        })
        .collect();
    out.sort();
    out
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// Case 10: oversized and malformed bodies, and 1,000 slow or idle
/// connections. A body over the limit is refused with 413 before it is
/// read past the limit, malformed bodies get 400, never a 5xx; with 1,000
/// connections held open (half idle, half trickling a request's headers)
/// other clients' p99 stays under 2x its baseline and the gateway's memory
/// grows by less than 64 MiB.
#[test]
fn case_10_oversized_malformed_and_slow_clients() {
    use std::io::{Read, Write};
    let case = "case 10 (bad bodies, 1,000 slow connections)";
    let _ = seed(case);
    let c = Cluster::start(Setup::default());
    let addr = c.ingest.clone();
    // A 64 MiB body announced, 2 MiB sent: the answer comes before the rest.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        64 << 20
    )
    .expect("head");
    let chunk = vec![b' '; 1 << 20];
    let mut sent = 0;
    for _ in 0..2 {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = [0u8; 64];
    let n = s.read(&mut answer).unwrap_or(0);
    let head = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 413"),
        "{case}: {head:?} after {sent} bytes"
    );
    // Malformed bodies: 400, never a 5xx.
    let rt = runtime();
    for body in [
        "{",
        "[1,2",
        "{\"device_id\":7}",
        "\u{0}\u{1}",
        "[{}]",
        "null",
    ] {
        let status = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("http://{addr}/v1/readings"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        });
        assert_eq!(status, 400, "{case}: {body:?} gave {status}");
    }
    let pid = c.pid("ingest").expect("gateway pid");
    let probes = 200;
    let baseline = probe_latencies(&c, probes, 0);
    let rss_before = rss_kib(pid);
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        if i % 2 == 0 {
            let _ = s.write_all(b"POST /v1/readings HTTP/1.1\r\nHost: x\r\n");
        }
        held.push(s);
    }
    // The trickling half sends one more header byte now and then.
    for s in held.iter_mut().step_by(2) {
        let _ = s.write_all(b"X");
    }
    let loaded = probe_latencies(&c, probes, 1000);
    let rss_after = rss_kib(pid);
    drop(held);
    let (b, l) = (p99(&baseline), p99(&loaded));
    let grown = rss_after.saturating_sub(rss_before);
    println!(
        "{case}: 413 after {sent} bytes of a 64 MiB body; p99 of writes {b:?} alone, {l:?} beside 1,000 held connections; gateway memory {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        l < b * 2 || l < Duration::from_millis(20),
        "{case}: p99 {l:?} against {b:?}"
    );
    assert!(grown < 64 << 10, "{case}: the gateway grew by {grown} KiB");
    verify_all_clean(&c, case);
}

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` when not root (mounting needs it): the case says so and
    /// checks nothing.
    fn mount(mib: u32) -> Option<Self> {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            println!("case 11 SKIPPED: it mounts a tmpfs for its data directory; run it as root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "case 11: mounting a tmpfs on {} failed", dir.display());
        Some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Case 11: the data directory's file system fills up under load. No
/// role acknowledges what it could not persist: the gateway answers 503
/// (the broker cannot write) and a role that cannot write exits with a
/// clear message or keeps retrying; once space returns and the exited
/// roles are started again, nothing acknowledged is lost.
#[test]
fn case_11_full_file_system() {
    use std::io::Write;
    let case = "case 11 (full file system)";
    let _ = seed(case);
    let Some(disk) = SmallDisk::mount(128) else {
        return;
    };
    let mut c = Cluster::start(Setup {
        data_dir: Some(disk.0.join("data")),
        ..Setup::default()
    });
    let sim = load(&c, pick(30, 50));
    std::thread::sleep(Duration::from_secs(pick(6, 10)));
    // Fill what is left.
    let filler = disk.0.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
    let full = Instant::now();
    let mut statuses: std::collections::BTreeMap<String, u32> = Default::default();
    let mut n = 0;
    while full.elapsed() < Duration::from_secs(pick(8, 15)) {
        n += 1;
        let key = match probe(&c, 50_000 + n) {
            Ok((s, _)) => s.to_string(),
            Err(_) => "no answer".into(),
        };
        *statuses.entry(key).or_default() += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let exited: Vec<&'static str> = crate::cluster::ROLES
        .into_iter()
        .filter(|r| !c.running(r))
        .collect();
    drop(f);
    std::fs::remove_file(&filler).expect("free the space");
    for r in &exited {
        let logs = c.logs(r);
        assert!(
            logs.contains("No space left on device") || logs.contains("os error 28"),
            "{case}: {r} exited without saying the disk is full:\n{logs}"
        );
        c.spawn(r);
    }
    finish(sim);
    println!("{case}: probe answers while full: {statuses:?}; exited and restarted: {exited:?}");
    let t = Instant::now();
    let mut report;
    loop {
        let (code, r) = c.verify(&all_acked(&c));
        report = r;
        if code == Some(0) || t.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    println!("{case}: braid verify: {}", report["counters"]);
    verify_all_clean(&c, case);
}

/// Appends readings acknowledged to the test itself to the probes file,
/// so verify holds them too.
fn record_acked(c: &Cluster, readings: &[Value]) {
    append_acked(&probes_file(c), readings);
}

/// Appends `readings` (device, metric, ts, seq) to an acknowledgement
/// file.
fn append_acked(path: &Path, readings: &[Value]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("acknowledgement file");
    for r in readings {
        let line = json!({"device_id": r["device_id"], "metric": r["metric"], "ts": r["ts"], "seq": r["seq"]});
        std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()).expect("write");
    }
}

/// The status of `GET url` within `timeout` (`None`: no answer).
fn status_of(url: &str, timeout: Duration) -> Option<u16> {
    runtime().block_on(async {
        reqwest::Client::new()
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    })
}

/// The sum of the counts a role printed each time it stopped
/// (`<prefix><n> records...`).
fn stopped_counts(logs: &str, prefix: &str) -> Vec<u64> {
    logs.lines()
        .filter_map(|l| l.split_once(prefix))
        .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Case 12: SIGTERM to each role under load. The gateway is not ready at
/// once (its `/readyz` answers 503 or nothing), a request in flight when
/// the signal came (half its body sent) is still answered 2xx, and it exits
/// within 10 s; the speed worker, the archiver and the replica exit within
/// 10 s, the first two with a final checkpoint and roll, so that after
/// their restarts nothing is read twice: the records each folded or
/// archived over all its lives add up to the log's. Nothing is lost.
#[test]
fn case_12_sigterm_under_load() {
    use std::io::{Read, Write};
    let case = "case 12 (SIGTERM under load)";
    let _ = seed(case);
    let mut c = Cluster::start(Setup::default());
    let sim = load(&c, pick(30, 60));
    std::thread::sleep(Duration::from_secs(5));

    // The gateway, with a request in flight.
    let reading = json!([{"device_id": "probe-term", "metric": "occupancy", "ts": now_ms(), "value": 1.0, "seq": 1}]);
    let body = reading.to_string();
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);
    let mut s = std::net::TcpStream::connect(&c.ingest).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    write!(
        s,
        "POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("head");
    s.write_all(head).expect("half the body");
    std::thread::sleep(Duration::from_millis(300));
    let readyz = format!("http://{}/readyz", c.ingest);
    assert_eq!(status_of(&readyz, Duration::from_secs(2)), Some(200));
    c.terminate("ingest");
    let term = Instant::now();
    let not_ready = loop {
        if status_of(&readyz, Duration::from_millis(200)) != Some(200) {
            break term.elapsed();
        }
        assert!(
            term.elapsed() < Duration::from_secs(5),
            "{case}: still ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(tail).expect("the rest of the body");
    let mut answer = [0u8; 64];
    let n = s.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    let answered = term.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{case}: the request in flight got {answer:?}"
    );
    record_acked(&c, reading.as_array().expect("array"));
    drop(s);
    let exited = term.elapsed() + c.wait_exit("ingest", Duration::from_secs(10));
    c.spawn("ingest");
    wait_listening(&c.ingest.clone(), "the gateway");
    let mut exits = vec![("ingest", exited)];
    for role in ["speed", "archive", "serve"] {
        std::thread::sleep(Duration::from_secs(pick(3, 10)));
        c.terminate(role);
        exits.push((role, c.wait_exit(role, Duration::from_secs(10))));
        c.spawn(role);
    }
    wait_listening(&c.serve.clone(), "the serving layer");
    finish(sim);
    println!(
        "{case}: gateway not ready {not_ready:?} after SIGTERM, the request in flight answered 200 at {answered:?}; exits after SIGTERM: {exits:?}"
    );
    // Every record archived, then each role stopped once more: what each
    // read over its lives is the log, once.
    let t = Instant::now();
    let report = loop {
        let report = verify_all_clean(&c, case);
        if report["archived"] == report["records"] || t.elapsed() > Duration::from_secs(60) {
            break report;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    c.stop("speed");
    c.stop("archive");
    let records = report["records"].as_u64().expect("records");
    let folded = stopped_counts(&c.logs("speed"), "braid speed: stopped after ");
    let archived = stopped_counts(&c.logs("archive"), "braid archive: stopped after ");
    println!(
        "{case}: {records} records in the log; folded per life {folded:?}, archived per life {archived:?}"
    );
    assert_eq!(folded.len(), 2, "{case}: two lives of the speed worker");
    assert_eq!(
        folded.iter().sum::<u64>(),
        records,
        "{case}: folded once each"
    );
    assert_eq!(archived.len(), 2, "{case}: two lives of the archiver");
    assert_eq!(
        archived.iter().sum::<u64>(),
        records,
        "{case}: archived once each"
    );
}

/// What one security try sends, and the status it must get.
#[derive(Clone, Copy, Debug)]
enum Try {
    WriteWithoutToken,
    WriteWithBadToken,
    WriteWithRevoked,
    WriteOutOfScope,
    WriteWithReadToken,
    ReadWithoutToken,
    ReadOutOfScope,
    ReadEveryDeviceScoped,
    ReadWithWriteToken,
    ReadWithRevoked,
}

impl Try {
    const ALL: [Try; 10] = [
        Try::WriteWithoutToken,
        Try::WriteWithBadToken,
        Try::WriteWithRevoked,
        Try::WriteOutOfScope,
        Try::WriteWithReadToken,
        Try::ReadWithoutToken,
        Try::ReadOutOfScope,
        Try::ReadEveryDeviceScoped,
        Try::ReadWithWriteToken,
        Try::ReadWithRevoked,
    ];

    fn expected(self) -> u16 {
        match self {
            Try::WriteWithoutToken
            | Try::WriteWithBadToken
            | Try::WriteWithRevoked
            | Try::ReadWithoutToken
            | Try::ReadWithRevoked => 401,
            _ => 403,
        }
    }
}

/// Case 13: security. No, a bad or a revoked token gives 401 (revoked with
/// `braid token revoke` while the roles run); writes outside a token's
/// devices and reads outside them give 403: 10,000 such tries, none gets
/// through. Listening beyond loopback without tokens is refused. One
/// device flooding at 10x its token's rate gets 429 while the other
/// clients' p99 grows by under 20%.
#[test]
fn case_13_tokens_scopes_and_flooding() {
    let case = "case 13 (security)";
    let seed = seed(case);
    let c = Cluster::start(Setup {
        tokens: true,
        ..Setup::default()
    });
    let sim = load(&c, pick(40, 60));
    let ingest = format!("http://{}/v1/readings", c.ingest);
    let views = format!("{}/v1/views/home_power", c.server());
    let secret = |n: &str| c.secret(n).expect("token").to_string();
    let rt = runtime();
    let get_with = |url: &str, token: Option<&str>| -> u16 {
        rt.block_on(async {
            let mut r = reqwest::Client::new().get(url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.expect("get").status().as_u16()
        })
    };
    // Before revocation the token reads; after, within a few seconds, 401.
    assert_eq!(get_with(&views, Some(&secret("to-revoke"))), 200);
    let out = crate::cluster::run(&[
        "token",
        "revoke",
        "--tokens",
        c.tokens_file().to_str().expect("path"),
        "to-revoke",
    ]);
    assert!(out.status.success(), "braid token revoke: {out:?}");
    let revoked_at = Instant::now();
    let took = loop {
        if get_with(&views, Some(&secret("to-revoke"))) == 401 {
            break revoked_at.elapsed();
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "{case}: the revoked token still reads"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // 10,000 tries that must all be refused.
    let tries = 10_000usize;
    let statuses: std::collections::BTreeMap<String, u64> = rt.block_on(async {
        let http = reqwest::Client::new();
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..tries {
            let kind = Try::ALL[(i + seed as usize) % Try::ALL.len()];
            let (http, ingest, views) = (http.clone(), ingest.clone(), views.clone());
            let token = match kind {
                Try::WriteWithoutToken | Try::ReadWithoutToken => None,
                Try::WriteWithBadToken => Some(format!("braid_guess{i:08}")),
                Try::WriteWithRevoked | Try::ReadWithRevoked => Some(secret("to-revoke")),
                Try::WriteOutOfScope => Some(secret("lot-writer")),
                Try::WriteWithReadToken => Some(secret("reader")),
                Try::ReadOutOfScope | Try::ReadEveryDeviceScoped => Some(secret("lot-reader")),
                Try::ReadWithWriteToken => Some(secret("writer")),
            };
            set.spawn(async move {
                let device = format!("home-{}", i % 20);
                let mut r = match kind {
                    Try::ReadWithoutToken
                    | Try::ReadOutOfScope
                    | Try::ReadWithWriteToken
                    | Try::ReadWithRevoked => http.get(format!("{views}?device={device}")),
                    Try::ReadEveryDeviceScoped => http.get(views),
                    _ => http.post(ingest).json(&json!([{
                        "device_id": device, "metric": "power_w",
                        "ts": now_ms(), "value": 1.0, "seq": 1_000_000 + i,
                    }])),
                };
                if let Some(t) = token {
                    r = r.bearer_auth(t);
                }
                let status = r.send().await.map_or(0, |r| r.status().as_u16());
                (kind, status)
            });
            while set.len() >= 16 {
                let (kind, status) = set.join_next().await.expect("a try").expect("join");
                assert_eq!(status, kind.expected(), "{case}: {kind:?}");
                *counts.entry(format!("{kind:?} {status}")).or_default() += 1;
            }
        }
        while let Some(r) = set.join_next().await {
            let (kind, status) = r.expect("join");
            assert_eq!(status, kind.expected(), "{case}: {kind:?}");
            *counts.entry(format!("{kind:?} {status}")).or_default() += 1;
        }
        counts
    });
    assert_eq!(statuses.values().sum::<u64>(), tries as u64);

    // Beyond loopback without tokens: refused, for the gateway and a replica.
    for args in [
        vec![
            "ingest",
            "--brokers",
            c.brokers.as_str(),
            "--http",
            "0.0.0.0:0",
        ],
        vec![
            "serve",
            "--brokers",
            c.brokers.as_str(),
            "--data-dir",
            c.data.as_str(),
            "--views",
            crate::cluster::VIEWS,
            "--http",
            "0.0.0.0:0",
        ],
    ] {
        let out = crate::cluster::run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("beyond loopback without tokens"),
            "{case}: braid {} on 0.0.0.0 without tokens: {err}",
            args[0]
        );
    }

    // One device floods at 10x its token's 20 readings/s (10 requests of 20
    // readings a second) in every other block of probe writes.
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (flooding, done) = (flooding.clone(), done.clone());
        let (url, token) = (ingest.clone(), secret("flood"));
        let acked = probes_file(&c);
        std::thread::spawn(move || {
            let rt = runtime();
            let http = reqwest::Client::new();
            let (mut ok, mut limited, mut seq) = (0u64, 0u64, 0u64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if !flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let batch: Vec<Value> = (0..20)
                    .map(|_| {
                        seq += 1;
                        json!({"device_id": "flood-1", "metric": "power_w", "ts": now_ms(), "value": 1.0, "seq": seq})
                    })
                    .collect();
                let status = rt.block_on(async {
                    http.post(&url)
                        .bearer_auth(&token)
                        .json(&batch)
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16())
                });
                match status {
                    200 => {
                        ok += 1;
                        append_acked(&acked, &batch);
                    }
                    429 => limited += 1,
                    other => panic!("the flood got {other}"),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, limited)
        })
    };
    let (mut calm, mut flooded) = (Vec::new(), Vec::new());
    let mut calm_blocks = Vec::new();
    let blocks = pick(6, 10);
    for b in 0..blocks {
        let on = b % 2 == 1;
        flooding.store(on, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let mut l = probe_latencies(&c, 200, 10_000 + 200 * b as u64);
        if !on {
            l.sort();
            calm_blocks.push(p99(&l));
        }
        if on { &mut flooded } else { &mut calm }.extend(l);
    }
    // How far apart calm blocks alone are: no comparison resolves less.
    let spread = calm_blocks.iter().max().copied().unwrap_or_default()
        - calm_blocks.iter().min().copied().unwrap_or_default();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, limited) = flood.join().expect("flood");
    calm.sort();
    flooded.sort();
    let (b, l) = (p99(&calm), p99(&flooded));
    finish(sim);
    println!(
        "{case}: revoked token refused {took:?} after `braid token revoke`; {tries} tries refused: {statuses:?}; the flood: {ok} requests of 20 readings accepted, {limited} got 429; others' write p99 {b:?} calm, {l:?} beside the flood ({:.2}x); calm blocks' p99 {calm_blocks:?}",
        l.as_secs_f64() / b.as_secs_f64()
    );
    assert!(limited > ok, "{case}: the flood was mostly refused");
    // Under 20% more, or within 5 ms or the calm blocks' own spread: the
    // p99 of a few hundred writes moves by that much between two calm
    // blocks on this machine.
    assert!(
        l.as_secs_f64() < b.as_secs_f64() * 1.2 || l < b + spread.max(Duration::from_millis(5)),
        "{case}: p99 {l:?} beside the flood against {b:?} (calm blocks {calm_blocks:?})"
    );
    verify_all_clean(&c, case);
}
