//! Braid's roles as real processes on loopback, for the end-to-end test
//! and the fault suite: the embedded broker (file-backed), the ingest
//! gateway, an archiver, a speed worker and a serving replica, each of
//! which can be killed with SIGKILL, stopped and started again on the
//! same data directory; the simulator over HTTP; `braid batch run` and
//! `braid verify` as a user runs them.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The view definitions every role uses.
pub const VIEWS: &str = "data/views.toml";

/// The roles, in start order.
pub const ROLES: [&str; 5] = ["broker", "ingest", "archive", "speed", "serve"];

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Waits until something listens on `addr`; the time it took.
pub fn wait_listening(addr: &str, role: &str) -> Duration {
    let t = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{role} never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// A runtime for a test's few async calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `braid ARGS` from the project root, to completion.
pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// [`run`] with environment variables set.
pub fn run_env(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("BRAID_BROKERS")
        .stdin(Stdio::null())
        .output()
        .expect("braid runs")
}

/// How the roles are set up.
pub struct Setup {
    /// Partitions of braid.readings.
    pub partitions: i32,
    /// The archiver's roll age.
    pub roll_age: &'static str,
    /// The speed layer's checkpoint interval.
    pub checkpoint_interval: &'static str,
    /// The data directory (absent: a fresh temporary one).
    pub data_dir: Option<PathBuf>,
    /// Tokens for the gateway and the replica (made with `braid token
    /// new`, see [`TOKENS`]); the simulator, probes and verify use them.
    pub tokens: bool,
    /// An MQTT broker (mosquitto) the gateway subscribes to.
    pub mqtt: bool,
    /// Environment variables of every role, `braid batch run` and
    /// `braid verify` (e.g. `BRAID_ARCHIVE_URL` and the `AWS_*` ones).
    pub env: Vec<(String, String)>,
}

/// The tokens of a cluster with tokens: (name, access, devices, rate).
pub const TOKENS: [(&str, &str, &[&str], Option<&str>); 6] = [
    ("writer", "write", &["*"], None),
    ("reader", "read", &["*"], None),
    ("lot-writer", "write", &["lot-*"], None),
    ("lot-reader", "read", &["lot-*"], None),
    ("to-revoke", "read,write", &["*"], None),
    ("flood", "write", &["flood-*"], Some("20")),
];

impl Default for Setup {
    fn default() -> Self {
        Self {
            partitions: 4,
            roll_age: "5s",
            checkpoint_interval: "2s",
            data_dir: None,
            tokens: false,
            mqtt: false,
            env: Vec::new(),
        }
    }
}

/// Running roles on one data directory.
pub struct Cluster {
    tmp: Option<tempfile::TempDir>,
    /// Logs and the test's own files.
    root: PathBuf,
    data_dir: PathBuf,
    /// The data directory.
    pub data: String,
    /// The broker's address.
    pub brokers: String,
    /// The gateway's address.
    pub ingest: String,
    /// The serving replica's address.
    pub serve: String,
    /// A second replica's address (role `serve-b`, started only when
    /// asked).
    pub serve_b: String,
    setup: Setup,
    roles: BTreeMap<&'static str, Child>,
    starts: BTreeMap<&'static str, u32>,
    secrets: BTreeMap<&'static str, String>,
    /// The MQTT broker, with [`Setup::mqtt`].
    pub mqtt: Option<braid_testkit::mosquitto::Mosquitto>,
}

impl Cluster {
    /// Starts every role and waits for the broker, gateway and replica to
    /// listen.
    pub fn start(setup: Setup) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let data_dir = setup.data_dir.clone().unwrap_or_else(|| root.clone());
        std::fs::create_dir_all(&data_dir).expect("the data directory");
        let data = data_dir.to_str().expect("utf-8 path").to_string();
        let mut c = Self {
            tmp: Some(tmp),
            root,
            data_dir,
            data,
            brokers: free_addr(),
            ingest: free_addr(),
            serve: free_addr(),
            serve_b: free_addr(),
            setup,
            roles: BTreeMap::new(),
            starts: BTreeMap::new(),
            secrets: BTreeMap::new(),
            mqtt: None,
        };
        if c.setup.mqtt {
            c.mqtt = Some(braid_testkit::mosquitto::Mosquitto::start());
        }
        if c.setup.tokens {
            for (name, access, devices, rate) in TOKENS {
                let file = c.tokens_file();
                let mut args = vec![
                    "token",
                    "new",
                    "--tokens",
                    file.to_str().expect("utf-8 path"),
                    "--name",
                    name,
                    "--access",
                    access,
                ];
                for d in devices {
                    args.extend(["--device", d]);
                }
                if let Some(r) = rate {
                    args.extend(["--rate", r]);
                }
                let out = run(&args);
                assert!(out.status.success(), "braid token new: {out:?}");
                let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
                c.secrets.insert(name, secret);
            }
        }
        for role in ROLES {
            c.spawn(role);
            if role == "broker" {
                // Listening is not enough: the gateway needs the topics,
                // which the broker creates before it says it listens.
                let t = Instant::now();
                while !c.logs("broker").contains("braid broker: listening") {
                    assert!(
                        t.elapsed() < Duration::from_secs(60),
                        "the broker never started: {}",
                        c.logs("broker")
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        wait_listening(&c.ingest.clone(), "the gateway");
        wait_listening(&c.serve.clone(), "the serving layer");
        c
    }

    /// Where the roles' logs and the test's own files go (the data
    /// directory too, unless the setup names another).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The serving layer's URL.
    pub fn server(&self) -> String {
        format!("http://{}", self.serve)
    }

    /// The tokens file (with [`Setup::tokens`]).
    pub fn tokens_file(&self) -> PathBuf {
        self.root.join("tokens.toml")
    }

    /// The secret of token `name` (with [`Setup::tokens`]).
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(String::as_str)
    }

    /// Where the simulator writes what was acknowledged.
    pub fn acked(&self) -> PathBuf {
        self.dir().join("acked.ndjson")
    }

    fn args(&self, role: &str) -> Vec<String> {
        let mut args = self.role_args(role);
        if self.setup.tokens && matches!(role, "ingest" | "serve" | "serve-b") {
            args.push("--tokens".into());
            args.push(self.tokens_file().to_string_lossy().into_owned());
        }
        if let (Some(m), "ingest") = (&self.mqtt, role) {
            args.extend(["--mqtt".into(), m.addr.clone()]);
        }
        args
    }

    fn role_args(&self, role: &str) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (b, d) = (self.brokers.as_str(), self.data.as_str());
        match role {
            "broker" => s(&[
                "broker",
                "--broker-listen",
                b,
                "--data-dir",
                d,
                "--partitions",
                &self.setup.partitions.to_string(),
            ]),
            "ingest" => s(&["ingest", "--brokers", b, "--http", &self.ingest]),
            "archive" => s(&[
                "archive",
                "--brokers",
                b,
                "--data-dir",
                d,
                "--roll-age",
                self.setup.roll_age,
            ]),
            "speed" => s(&[
                "speed",
                "--brokers",
                b,
                "--data-dir",
                d,
                "--views",
                VIEWS,
                "--checkpoint-interval",
                self.setup.checkpoint_interval,
            ]),
            "serve" | "serve-b" => s(&[
                "serve",
                "--brokers",
                b,
                "--data-dir",
                d,
                "--views",
                VIEWS,
                "--http",
                if role == "serve" {
                    &self.serve
                } else {
                    &self.serve_b
                },
            ]),
            other => panic!("no role {other}"),
        }
    }

    /// Starts `role` (again), its output in `<data>/<role>-<n>.log`.
    pub fn spawn(&mut self, role: &'static str) {
        let n = self.starts.entry(role).or_default();
        *n += 1;
        let log = self.root.join(format!("{role}-{n}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_braid"))
            .args(self.args(role))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .env_remove("BRAID_BROKERS")
            .env(
                "BRAID_LOG",
                "info,tansu=warn,librdkafka=error,rdkafka=error",
            )
            .envs(self.setup.env.iter().map(|(k, v)| (k, v)))
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("braid {role}: {e}"));
        self.roles.insert(role, child);
    }

    /// Kills `role` with SIGKILL.
    pub fn kill(&mut self, role: &'static str) {
        if let Some(mut c) = self.roles.remove(role) {
            c.kill().expect("kill -9");
            let _ = c.wait();
        }
    }

    /// Stops `role` with SIGTERM and waits for it to exit.
    pub fn stop(&mut self, role: &'static str) {
        self.terminate(role);
        self.wait_exit(role, Duration::from_secs(30));
    }

    /// Sends `role` SIGTERM, not waiting.
    pub fn terminate(&self, role: &str) {
        if let Some(pid) = self.pid(role) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits for `role` to exit (panics after `limit`, killing it); how
    /// long it took.
    pub fn wait_exit(&mut self, role: &'static str, limit: Duration) -> Duration {
        let t = Instant::now();
        if let Some(mut c) = self.roles.remove(role) {
            while c.try_wait().ok().flatten().is_none() {
                if t.elapsed() > limit {
                    let _ = c.kill();
                    panic!("{role} did not exit within {limit:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        t.elapsed()
    }

    /// Whether `role` is still running (reaped if it exited).
    pub fn running(&mut self, role: &'static str) -> bool {
        match self.roles.get_mut(role).map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.roles.remove(role);
                false
            }
            None => false,
        }
    }

    /// The process id of `role`, while it runs.
    pub fn pid(&self, role: &str) -> Option<u32> {
        self.roles.get(role).map(Child::id)
    }

    /// What every start of `role` logged.
    pub fn logs(&self, role: &str) -> String {
        let n = self.starts.get(role).copied().unwrap_or(0);
        (1..=n)
            .map(|i| {
                std::fs::read_to_string(self.dir().join(format!("{role}-{i}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// `braid simulate` over HTTP to the gateway, writing acknowledged
    /// readings to [`Cluster::acked`], with `extra` flags.
    pub fn simulate(&self, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.dir().join("simulate.log")).expect("log");
        let err = log.try_clone().expect("log");
        let token: Vec<&str> = self
            .secret("writer")
            .map(|t| vec!["--token", t])
            .unwrap_or_default();
        Command::new(env!("CARGO_BIN_EXE_braid"))
            .args(["simulate", "--http-target"])
            .arg(format!("http://{}", self.ingest))
            .arg("--acked")
            .arg(self.acked())
            .args(token)
            .args(extra)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .env("BRAID_LOG", "info")
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("braid simulate")
    }

    /// [`Cluster::simulate`] with 20 smart-home meters sending 100
    /// readings/s in all for `seconds`, from `seed`.
    pub fn home_fleet(&self, seconds: u64, seed: u64) -> Child {
        self.simulate(&[
            "--scenario",
            "home",
            "--devices",
            "20",
            "--rate",
            "100",
            "--duration",
            &format!("{seconds}s"),
            "--seed",
            &seed.to_string(),
        ])
    }

    /// `braid import` of 50 readings of `carpark-old` a day ago (with the
    /// roles' environment), to completion.
    pub fn import_history(&self) {
        let day_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
            - 86_400_000;
        let csv: String = std::iter::once("device_id,metric,ts,value\n".to_string())
            .chain(
                (0..50).map(|i| format!("carpark-old,occupancy,{},{}\n", day_ago + i * 60_000, i)),
            )
            .collect();
        let history = self.dir().join("history.csv");
        std::fs::write(&history, csv).expect("csv");
        let path = history.to_str().expect("path");
        let out = run_env(&["import", path, "--data-dir", &self.data], &self.setup.env);
        assert!(
            out.status.success(),
            "braid import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `braid batch run`, as cron runs it, to completion.
    pub fn try_batch_run(&self) -> Output {
        run_env(
            &["batch", "run", "--data-dir", &self.data, "--views", VIEWS],
            &self.setup.env,
        )
    }

    /// [`Cluster::try_batch_run`]; panics if it fails.
    pub fn batch_run(&self) {
        let out = self.try_batch_run();
        assert!(
            out.status.success(),
            "braid batch run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `braid verify --format json` against `acked`: exit code and report.
    pub fn verify(&self, acked: &Path) -> (Option<i32>, Value) {
        let acked = acked.to_str().expect("path");
        let token: Vec<&str> = self
            .secret("reader")
            .map(|t| vec!["--token", t])
            .unwrap_or_default();
        let out = run_env(
            &[
                &["verify"][..],
                &token,
                &[
                    "--brokers",
                    &self.brokers,
                    "--server",
                    &self.server(),
                    "--data-dir",
                    &self.data,
                    "--views",
                    VIEWS,
                    "--acked",
                    acked,
                    "--wait",
                    "120s",
                    "--format",
                    "json",
                ],
            ]
            .concat(),
            &self.setup.env,
        );
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

    /// Verifies and asserts every counter is zero; returns the report.
    pub fn verify_clean(&self, case: &str) -> Value {
        let (code, report) = self.verify(&self.acked());
        println!("{case}: braid verify: {}", report["counters"]);
        for (name, value) in report["counters"].as_object().expect("counters") {
            assert_eq!(value, &Value::from(0), "{case}: {name}: {report}");
        }
        assert_eq!(code, Some(0), "{case}: {report}");
        report
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.roles.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            // Keep the logs and data of a failed case for a look.
            if let Some(t) = self.tmp.take() {
                let _ = t.keep();
            }
            eprintln!(
                "the roles' logs and data are kept in {}",
                self.root.display()
            );
        }
    }
}

/// Runs `f` at `secs` after `start` (at once if that has passed).
pub fn at(start: Instant, secs: f64) {
    let due = Duration::from_secs_f64(secs);
    if let Some(rest) = due.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
}
