//! A batch run and speed states side by side: the merged answer in every
//! format, the comparison with its reasons, the contracts on completeness,
//! and the routes around them (`/metrics`, `/openapi.json`, the dashboard).
//!
//! The test publishes `braid.speed` messages itself (as a speed worker
//! would) and writes a batch run with the store's own writer (as a batch
//! run would), so every number below is known in advance.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use braid_core::ViewSet;
use braid_core::agg::AggState;
use braid_core::merge::{Counters, Cut, EpochSpan};
use braid_core::speedlog::{SpeedKey, SpeedMessage};
use braid_store::Layout;
use braid_store::views::{Manifest, StagedRun};
use braid_testkit::{init_tracing, memory_broker};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::queries::publish;

const VIEWS: &str = r#"
[[views]]
name = "per_device"
window = "1m"
group_by = ["device_id"]
aggregates = ["count", "sum", "max"]
expected_devices = 5
"#;

const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;
const T1: i64 = T0 + 60_000;

fn state(set: &ViewSet, device: &str, values: &[f64]) -> AggState {
    let mut s = AggState::new(set.views[0].parts());
    for &v in values {
        s.fold(v, braid_core::hash::device_hash(device));
    }
    s
}

fn counters(readings: u64, pending_historical: u64) -> Counters {
    Counters {
        readings,
        pending_historical,
        ..Counters::default()
    }
}

/// A speed state of `device` in window `start`, epoch `epoch_start`.
fn speed(
    set: &ViewSet,
    start: i64,
    device: &str,
    epoch_start: i64,
    values: &[f64],
    pending: u64,
) -> SpeedMessage {
    SpeedMessage::State {
        key: SpeedKey {
            view: set.views[0].name.clone(),
            window_start: start,
            group: vec![Some(device.to_string())],
            partition: 0,
            epoch_start,
        },
        restore_id: 1,
        max_offset: epoch_start + 9,
        state: state(set, device, values),
        counters: counters(values.len() as u64, pending),
    }
}

/// Publishes run `run` of the view, cut at offset 10 of partition 0.
fn publish_run(set: &ViewSet, layout: &Layout, run: &str) {
    let view = &set.views[0];
    let mut windows = BTreeMap::new();
    let mut put = |start: i64, device: &str, values: &[f64]| {
        windows.insert(
            (start, vec![Some(device.to_string())]),
            (state(set, device, values), counters(values.len() as u64, 0)),
        );
    };
    put(T0, "d0", &[1.0, 2.0, 3.0]);
    put(T0, "d1", &[4.0, 9.0]);
    put(T0, "d2", &[6.0]);
    put(T1, "d0", &[7.0]);
    let staged = StagedRun::new(layout, &view.name, run).unwrap();
    staged.write_rows(view, &windows).unwrap();
    staged
        .publish(&Manifest {
            started_ms: 1,
            finished_ms: 2,
            imports: vec!["import-1".into()],
            records_read: 7,
            ..Manifest::new(view, set, run, Cut([(0, 10)].into()), &windows)
        })
        .unwrap();
}

async fn get(http: &reqwest::Client, url: &str) -> reqwest::Response {
    http.get(url).send().await.unwrap()
}

async fn text(http: &reqwest::Client, url: &str) -> String {
    get(http, url).await.text().await.unwrap()
}

async fn json(http: &reqwest::Client, url: &str) -> Value {
    get(http, url).await.json().await.unwrap()
}

/// A serving replica over the speed states and batch run below, on an
/// ephemeral port.
pub(crate) struct Fixture {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: CancellationToken,
    _broker: braid_kafka::EmbeddedBroker,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Epoch [0, 10) is sealed and the run holds it; epoch 10 is after the
/// cut. d1 left one historical reading pending (the run applied it: 9);
/// d2 came only from an import; d3 only after the cut.
pub(crate) async fn fixture() -> Fixture {
    fixture_with(None).await
}

/// [`fixture`] served with read tokens.
pub(crate) async fn fixture_with(
    tokens: Option<std::sync::Arc<braid_ingest::auth::Tokens>>,
) -> Fixture {
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let set = ViewSet::parse(VIEWS).unwrap();
    let stop = CancellationToken::new();
    publish(
        &broker.brokers(),
        &[
            SpeedMessage::Restored {
                partition: 0,
                restore_id: 1,
                boundary: 0,
            },
            speed(&set, T0, "d0", 0, &[1.0, 2.0, 3.0], 0),
            speed(&set, T0, "d1", 0, &[4.0], 1),
            speed(&set, T1, "d0", 0, &[7.0], 0),
            SpeedMessage::Sealed {
                restore_id: 1,
                span: EpochSpan {
                    partition: 0,
                    start: 0,
                    end: 10,
                },
            },
            speed(&set, T0, "d0", 10, &[5.0], 0),
            speed(&set, T0, "d3", 10, &[8.0], 0),
            SpeedMessage::Progress {
                restore_id: 1,
                partition: 0,
                next_offset: 20,
                max_event_ts: Some(T1 + 30_000),
            },
        ],
    )
    .await;
    let base =
        crate::serve_with_tokens(broker.brokers(), dir.path(), set.clone(), tokens, &stop).await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = json(&http, &format!("{base}/v1/status")).await;
        if status["speed"]["messages_applied"] == 8 {
            break;
        }
        assert!(Instant::now() < deadline, "feed never caught up: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Published once the feed holds every state, so that loading the run
    // drops all three covered states at once.
    publish_run(&set, &Layout::new(dir.path()), "run-1");
    Fixture {
        base,
        stop,
        _broker: broker,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_speed_side_by_side() {
    let fx = fixture().await;
    let base = &fx.base;
    let http = reqwest::Client::new();

    // The merged answer: batch(cut) + speed(epochs at or after the cut).
    let mut answer = json(&http, &format!("{base}/v1/views/per_device")).await;
    answer.as_object_mut().unwrap().remove("freshness_ms");
    let expected = serde_json::json!({
        "view": "per_device",
        "watermark": T1 + 25_000,
        "batch": { "run_id": "run-1", "finished_ms": 2, "cut": { "0": 10 } },
        // Every message of the fixture's braid.speed read.
        "speed_position": { "0": 8 },
        "rows": [
            row(T0, "d0", 4, 11.0, 5.0, "batch+speed", "closed", 3, 1, 0, 0.8),
            row(T0, "d1", 2, 13.0, 9.0, "batch", "final", 2, 0, 0, 0.8),
            row(T0, "d2", 1, 6.0, 6.0, "batch", "final", 1, 0, 0, 0.8),
            row(T0, "d3", 1, 8.0, 8.0, "speed", "closed", 0, 1, 0, 0.8),
            row(T1, "d0", 1, 7.0, 7.0, "batch", "open", 1, 0, 0, 0.2),
        ],
    });
    assert_eq!(answer, expected);
    let csv = text(
        &http,
        &format!("{base}/v1/views/per_device?format=csv&device=d0"),
    )
    .await;
    assert_eq!(
        csv,
        format!(
            "window_start,window_end,device_id,count,sum,max,source,state,readings,readings_batch,readings_speed,late_readings,pending_historical,duplicates_dropped,reporting_devices,expected_devices,completeness\n\
             {T0},{T1},d0,4.0,11.0,5.0,batch+speed,closed,4,3,1,0,0,0,4,5,0.8\n\
             {T1},{},d0,1.0,7.0,7.0,batch,open,1,1,0,0,0,0,1,5,0.2\n",
            T1 + 60_000
        )
    );
    let r = get(&http, &format!("{base}/v1/views/per_device?format=arrow")).await;
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = r.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
    let schema = batches[0].schema();
    // The header rides on the schema, the same as the JSON answer's.
    let header = &schema.metadata;
    assert_eq!(header["braid.view"], "\"per_device\"");
    let batch: Value = serde_json::from_str(&header["braid.batch"]).unwrap();
    assert_eq!(batch, expected["batch"]);
    assert_eq!(header["braid.watermark"], (T1 + 25_000).to_string());
    assert!(header.contains_key("braid.freshness_ms"));
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        &names[..6],
        [
            "window_start",
            "window_end",
            "device_id",
            "count",
            "sum",
            "max"
        ]
    );
    let sums = batches[0]
        .column_by_name("sum")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap();
    assert_eq!(sums.values().to_vec(), vec![11.0, 13.0, 6.0, 8.0, 7.0]);

    // Contracts on completeness: 4 of 5 devices report in T0, 1 in T1.
    let r = get(
        &http,
        &format!("{base}/v1/views/per_device?min_completeness=0.5"),
    )
    .await;
    assert_eq!(r.status(), 409);
    let body = r.text().await.unwrap();
    assert!(body.contains("1 of 5 windows fall short"), "{body}");
    let r = get(
        &http,
        &format!("{base}/v1/views/per_device?min_completeness=0.5&to={T1}"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = get(
        &http,
        &format!("{base}/v1/views/per_device?min_completeness=2"),
    )
    .await;
    assert_eq!(r.status(), 400);

    // The comparison: speed's values include the states dropped once the run
    // covered them.
    let cmp = json(&http, &format!("{base}/v1/compare/per_device")).await;
    assert_eq!(
        cmp["summary"],
        serde_json::json!({
            "windows": 5, "equal": 1, "differing": 2, "only_batch": 1, "only_speed": 1,
            "reasons": { "imported": 1, "not_yet_archived": 2, "pending": 1 },
        }),
        "{cmp}"
    );
    let rows = cmp["rows"].as_array().unwrap();
    let find = |start: i64, d: &str| {
        rows.iter()
            .find(|r| r["window_start"] == start && r["device_id"] == d)
            .unwrap()
    };
    let d0 = find(T0, "d0");
    assert_eq!(d0["status"], "differ");
    assert_eq!(d0["reasons"], serde_json::json!(["not_yet_archived"]));
    assert_eq!(d0["batch_sum"], 6.0);
    assert_eq!(d0["speed_sum"], 11.0);
    assert_eq!(d0["diff_sum"], -5.0);
    assert_eq!(d0["speed_readings_after_cut"], 1);
    let d1 = find(T0, "d1");
    assert_eq!(d1["reasons"], serde_json::json!(["pending"]));
    assert_eq!(d1["diff_count"], 1.0);
    assert_eq!(find(T0, "d2")["status"], "only_batch");
    assert_eq!(find(T0, "d2")["reasons"], serde_json::json!(["imported"]));
    assert_eq!(find(T0, "d3")["status"], "only_speed");
    assert_eq!(find(T1, "d0")["status"], "equal");
    assert_eq!(find(T1, "d0")["reasons"], serde_json::json!([]));
    let csv = text(
        &http,
        &format!("{base}/v1/compare/per_device?format=csv&device=d1"),
    )
    .await;
    assert_eq!(
        csv,
        format!(
            "window_start,window_end,device_id,status,reasons,batch_count,speed_count,diff_count,batch_sum,speed_sum,diff_sum,batch_max,speed_max,diff_max,batch_readings,batch_late_readings,batch_pending_historical,batch_duplicates_dropped,speed_readings,speed_late_readings,speed_pending_historical,speed_duplicates_dropped,speed_readings_after_cut\n\
             {T0},{T1},d1,differ,pending,2.0,1.0,1.0,13.0,4.0,9.0,9.0,4.0,5.0,2,0,0,0,1,0,1,0,0\n"
        )
    );
    let status = json(&http, &format!("{base}/v1/status")).await;
    assert_eq!(status["speed"]["compare_states_kept"], 3, "{status}");
    assert_eq!(status["speed"]["partitions"]["0"]["states"], 2);

    // The routes around the answers.
    let metrics = text(&http, &format!("{base}/metrics")).await;
    for line in [
        r#"braid_http_requests_total{route="/v1/compare/{view}",code="200"} 2"#,
        r#"braid_http_requests_total{route="/v1/views/{view}",code="409"} 1"#,
        r#"braid_batch_run_rows{view="per_device"} 4"#,
        r#"braid_serving_speed_messages_total{outcome="applied"} 8"#,
        "braid_serving_compare_states 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(!metrics.contains("d0"), "no per-device labels");
    let doc = json(&http, &format!("{base}/openapi.json")).await;
    assert!(doc["paths"]["/v1/compare/{view}"]["get"].is_object());
    let page = text(&http, &format!("{base}/")).await;
    assert!(page.contains("/assets/app.js"), "{page}");
    assert_eq!(
        get(&http, &format!("{base}/assets/app.js")).await.status(),
        200
    );
    assert_eq!(
        get(&http, &format!("{base}/assets/nope.js")).await.status(),
        404
    );
}

#[allow(clippy::too_many_arguments)]
fn row(
    start: i64,
    device: &str,
    count: u64,
    sum: f64,
    max: f64,
    source: &str,
    state: &str,
    readings_batch: u64,
    readings_speed: u64,
    pending: u64,
    completeness: f64,
) -> Value {
    serde_json::json!({
        "window_start": start,
        "window_end": start + 60_000,
        "device_id": device,
        "count": count as f64,
        "sum": sum,
        "max": max,
        "source": source,
        "state": state,
        "readings": readings_batch + readings_speed,
        "readings_batch": readings_batch,
        "readings_speed": readings_speed,
        "late_readings": 0,
        "pending_historical": pending,
        "duplicates_dropped": 0,
        "reporting_devices": (completeness * 5.0).round() as u64,
        "expected_devices": 5,
        "completeness": completeness,
    })
}
