//! End to end, every role a process of its own on loopback: the embedded
//! broker, the ingest gateway, an archiver, a speed worker and a serving
//! replica, fed for a minute over HTTP by the simulator with 10%
//! out-of-order, 5% outdated, 1% historical and 2% duplicate readings. Two
//! batch runs happen during it and the speed worker is killed with
//! SIGKILL and started again once. Then `braid verify` must report every
//! counter at zero (and must catch a reading acknowledged but never
//! written), and `braid compare` must show no difference where both
//! layers hold the same readings.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const VIEWS: &str = "data/views.toml";

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// `braid ARGS` from the project root, its output in `dir/<log>.log`.
fn spawn(dir: &Path, log: &str, args: &[&str]) -> Child {
    let out = std::fs::File::create(dir.join(format!("{log}.log"))).expect("log");
    let err = out.try_clone().expect("log");
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("BRAID_BROKERS")
        .env(
            "BRAID_LOG",
            "info,tansu=warn,librdkafka=error,rdkafka=error",
        )
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("braid {args:?}: {e}"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("BRAID_BROKERS")
        .stdin(Stdio::null())
        .output()
        .expect("braid runs")
}

/// Kills every role when the test ends, however it ends.
struct Roles(Vec<Child>);

impl Drop for Roles {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_listening(addr: &str, role: &str) {
    let t = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{role} never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn batch_run(data: &str) {
    let out = run(&["batch", "run", "--data-dir", data, "--views", VIEWS]);
    assert!(
        out.status.success(),
        "braid batch run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn verify(brokers: &str, server: &str, data: &str, acked: &str) -> (Option<i32>, Value) {
    let out = run(&[
        "verify",
        "--brokers",
        brokers,
        "--server",
        server,
        "--data-dir",
        data,
        "--views",
        VIEWS,
        "--acked",
        acked,
        "--wait",
        "120s",
        "--format",
        "json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
        panic!(
            "braid verify printed no report ({}): {text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[test]
fn a_minute_of_traffic_with_a_killed_speed_worker_verifies_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let data = d.to_str().expect("utf-8 path").to_string();
    let brokers = free_addr();
    let ingest = free_addr();
    let serve = free_addr();
    let server = format!("http://{serve}");
    let acked = d.join("acked.ndjson").to_str().expect("path").to_string();
    let speed_args = [
        "speed",
        "--brokers",
        &brokers,
        "--data-dir",
        &data,
        "--views",
        VIEWS,
        "--checkpoint-interval",
        "2s",
    ];

    let mut roles = Roles(Vec::new());
    roles.0.push(spawn(
        d,
        "broker",
        &["broker", "--broker-listen", &brokers, "--data-dir", &data],
    ));
    wait_listening(&brokers, "the broker");
    roles.0.push(spawn(
        d,
        "ingest",
        &["ingest", "--brokers", &brokers, "--http", &ingest],
    ));
    roles.0.push(spawn(
        d,
        "archive",
        &[
            "archive",
            "--brokers",
            &brokers,
            "--data-dir",
            &data,
            "--roll-age",
            "5s",
        ],
    ));
    roles.0.push(spawn(d, "speed-1", &speed_args));
    let speed_slot = roles.0.len() - 1;
    roles.0.push(spawn(
        d,
        "serve",
        &[
            "serve",
            "--brokers",
            &brokers,
            "--data-dir",
            &data,
            "--views",
            VIEWS,
            "--http",
            &serve,
        ],
    ));
    wait_listening(&ingest, "the gateway");
    wait_listening(&serve, "the serving layer");

    let mut sim = spawn(
        d,
        "simulate",
        &[
            "simulate",
            "--scenario",
            "parking",
            "--devices",
            "20",
            "--rate",
            "100",
            "--http-target",
            &format!("http://{ingest}"),
            "--acked",
            &acked,
            "--duration",
            "60s",
            "--seed",
            "7",
            "--out-of-order",
            "0.1",
            "--outdated",
            "0.05",
            "--historical",
            "0.01",
            "--duplicate",
            "0.02",
        ],
    );
    let started = Instant::now();
    let at = |secs: u64| {
        let due = Duration::from_secs(secs);
        if let Some(rest) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    };
    at(20);
    batch_run(&data);
    at(28);
    let speed = &mut roles.0[speed_slot];
    speed.kill().expect("kill -9 the speed worker");
    let _ = speed.wait();
    roles.0[speed_slot] = spawn(d, "speed-2", &speed_args);
    at(45);
    batch_run(&data);
    let status = sim.wait().expect("simulator");
    assert!(status.success(), "the simulator failed: {status}");

    let (code, report) = verify(&brokers, &server, &data, &acked);
    println!("braid verify: {}", report["counters"]);
    let records = report["records"].as_u64().expect("records");
    assert!(records > 4_000, "only {records} readings went through");
    for (name, value) in report["counters"].as_object().expect("counters") {
        assert_eq!(value, &Value::from(0), "{name}: {report}");
    }
    assert_eq!(code, Some(0), "{report}");

    // A reading the client was told is durable but that never reached the
    // log is caught.
    let doctored = d.join("doctored.ndjson");
    let mut lines = std::fs::read_to_string(&acked).expect("acked");
    lines
        .push_str("{\"device_id\":\"carpark-9999\",\"metric\":\"occupancy\",\"ts\":1,\"seq\":1}\n");
    std::fs::write(&doctored, lines).expect("write");
    let (code, report) = verify(&brokers, &server, &data, doctored.to_str().expect("path"));
    assert_eq!(report["counters"]["lost_acked"], 1, "{report}");
    assert_eq!(code, Some(1));

    // Where both layers hold the same readings, they agree to the bit;
    // every other difference has a reason.
    let mut equal = 0;
    for view in ["parking_occupancy", "device_summary"] {
        let out = run(&["compare", view, "--server", &server, "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).expect("compare json");
        println!("braid compare {view}: {}", answer["summary"]);
        for row in answer["rows"].as_array().expect("rows") {
            let reasons = row["reasons"].as_array().expect("reasons");
            assert!(
                !reasons.iter().any(|r| r == "unexplained"),
                "an unexplained difference: {row}"
            );
            let same_readings = row["batch_readings"].is_u64()
                && row["batch_readings"] == row["speed_readings"]
                && row["speed_readings_after_cut"] == 0
                && row["speed_pending_historical"] == 0;
            if same_readings {
                assert_eq!(row["status"], "equal", "{row}");
            }
        }
        equal += answer["summary"]["equal"].as_u64().expect("equal");
    }
    assert!(equal > 0, "no window was held by both layers");
}
