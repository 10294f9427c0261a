//! End to end, every role a process of its own on loopback: the embedded
//! broker, the ingest gateway, an archiver, a speed worker and a serving
//! replica, fed for a minute over HTTP by the simulator with 10%
//! out-of-order, 5% outdated, 1% historical and 2% duplicate readings. Two
//! batch runs happen during it (the second with imported history) and the
//! speed worker is killed with SIGKILL and started again once. Then `braid
//! verify` must report every counter at zero (and must catch a reading
//! acknowledged but never written), and `braid compare` must show no
//! difference where both layers hold the same readings.

use std::time::Instant;

use serde_json::Value;

use crate::cluster::{Cluster, Setup, at, run};

#[test]
fn a_minute_of_traffic_with_a_killed_speed_worker_verifies_clean() {
    let mut c = Cluster::start(Setup::default());
    let acked = c.acked();
    let mut sim = c.simulate(&[
        "--scenario",
        "parking",
        "--devices",
        "20",
        "--rate",
        "100",
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
    ]);
    let started = Instant::now();
    at(started, 20.0);
    c.batch_run();
    at(started, 28.0);
    c.kill("speed");
    c.spawn("speed");
    // History backfilled straight into the archive: the next batch run
    // includes it, and verify must count it from the run's manifest.
    c.import_history();
    at(started, 45.0);
    c.batch_run();
    let status = sim.wait().expect("simulator");
    assert!(status.success(), "the simulator failed: {status}");

    let report = c.verify_clean("end to end");
    let records = report["records"].as_u64().expect("records");
    assert!(records > 4_000, "only {records} readings went through");

    // A reading the client was told is durable but that never reached the
    // log is caught.
    let doctored = c.dir().join("doctored.ndjson");
    let mut lines = std::fs::read_to_string(&acked).expect("acked");
    lines
        .push_str("{\"device_id\":\"carpark-9999\",\"metric\":\"occupancy\",\"ts\":1,\"seq\":1}\n");
    std::fs::write(&doctored, lines).expect("write");
    let (code, report) = c.verify(&doctored);
    assert_eq!(report["counters"]["lost_acked"], 1, "{report}");
    assert_eq!(code, Some(1));

    // Where both layers hold the same readings, they agree to the bit;
    // every other difference has a reason.
    let mut equal = 0;
    for view in ["parking_occupancy", "device_summary"] {
        let out = run(&["compare", view, "--server", &c.server(), "--format", "json"]);
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
