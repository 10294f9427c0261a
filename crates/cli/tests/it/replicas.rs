//! Two `braid serve` replicas behind one load balancer must answer alike.
//! Each reads `braid.speed` on its own, so at a given instant one may be a
//! few messages ahead; every answer says what it was made from (the batch
//! run and the speed position), and two answers made from the same pair
//! must have the same rows, to the bit. Checked while a fleet sends
//! readings and a batch run is published mid-flow, then once both have
//! read everything.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, Setup, runtime, wait_listening};

const VIEWS: [&str; 2] = ["home_power", "device_summary"];

/// One answer of each replica to `path`, asked at the same time.
async fn both(http: &reqwest::Client, a: &str, b: &str, path: &str) -> (Value, Value) {
    let get = |server: &str| {
        let url = format!("http://{server}{path}");
        let http = http.clone();
        async move {
            http.get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"))
                .json::<Value>()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
        }
    };
    tokio::join!(get(a), get(b))
}

/// Whether two answers were made from the same batch run and position.
fn same_source(x: &Value, y: &Value) -> bool {
    x["batch"]["run_id"] == y["batch"]["run_id"] && x["speed_position"] == y["speed_position"]
}

/// Asserts two answers of the same source agree on everything made from
/// it.
fn assert_same_answer(view: &str, x: &Value, y: &Value) {
    assert_eq!(x["watermark"], y["watermark"], "{view}: watermarks differ");
    let (rx, ry) = (x["rows"].as_array(), y["rows"].as_array());
    assert_eq!(
        rx.map(Vec::len),
        ry.map(Vec::len),
        "{view}: row counts differ at {}",
        x["speed_position"]
    );
    for (i, (a, b)) in rx
        .into_iter()
        .flatten()
        .zip(ry.into_iter().flatten())
        .enumerate()
    {
        assert_eq!(a, b, "{view}: row {i} differs at {}", x["speed_position"]);
    }
}

#[test]
fn two_replicas_answer_alike_while_data_flows() {
    let mut c = Cluster::start(Setup::default());
    c.spawn("serve-b");
    wait_listening(&c.serve_b.clone(), "the second replica");
    let mut sim = c.home_fleet(25, 7);
    let rt = runtime();
    let http = reqwest::Client::new();
    let (a, b) = (c.serve.clone(), c.serve_b.clone());
    let start = Instant::now();
    let mut batch_done = false;
    let (mut asked, mut matched, mut matched_rows, mut runs) = (0, 0, 0, Vec::new());
    while sim.try_wait().expect("simulator").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the simulator never finished"
        );
        if !batch_done && start.elapsed() > Duration::from_secs(12) {
            c.batch_run();
            batch_done = true;
        }
        for view in VIEWS {
            let (x, y) = rt.block_on(both(&http, &a, &b, &format!("/v1/views/{view}")));
            asked += 1;
            if same_source(&x, &y) {
                assert_same_answer(view, &x, &y);
                matched += 1;
                matched_rows += x["rows"].as_array().map_or(0, Vec::len);
                if !runs.contains(&x["batch"]["run_id"]) {
                    runs.push(x["batch"]["run_id"].clone());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sim.wait().expect("simulator").success(),
        "the simulator failed"
    );
    println!(
        "while data flowed: {matched} of {asked} answer pairs made from the same run and position \
         ({matched_rows} rows compared), runs seen {runs:?}"
    );
    assert!(
        matched >= 5,
        "too few answer pairs from the same source to compare ({matched} of {asked})"
    );
    assert!(
        runs.iter().any(Value::is_null) && runs.iter().any(|r| !r.is_null()),
        "answers compared both before and after the batch run was published: {runs:?}"
    );
    // Once the flow stops both replicas read to the same position.
    for view in VIEWS {
        let t = Instant::now();
        loop {
            let (x, y) = rt.block_on(both(&http, &a, &b, &format!("/v1/views/{view}")));
            if same_source(&x, &y) && x["rows"].as_array().is_some_and(|r| !r.is_empty()) {
                assert_same_answer(view, &x, &y);
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{view}: the replicas never reached the same position: {} and {}",
                x["speed_position"],
                y["speed_position"]
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
