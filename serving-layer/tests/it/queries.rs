//! Rows of a view as the API answers them, from `braid.speed` messages that
//! the test publishes itself (as a speed worker would): epochs merged, stale
//! restores ignored, metadata carried; contracts that cannot be met say so.

use std::time::{Duration, Instant};

use braid_core::ViewSet;
use braid_core::agg::AggState;
use braid_core::merge::{Counters, EpochSpan};
use braid_core::speedlog::{SpeedKey, SpeedMessage};
use braid_kafka::{Topics, producer_config};
use braid_testkit::{init_tracing, memory_broker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const VIEWS: &str = r#"
[[views]]
name = "per_device"
window = "1m"
group_by = ["device_id"]
aggregates = ["count", "mean", "max"]
expected_devices = 5
"#;

const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;

pub(crate) async fn publish(brokers: &str, msgs: &[SpeedMessage]) {
    let producer: FutureProducer = producer_config(brokers).create().unwrap();
    for m in msgs {
        let payload = m.to_bytes();
        producer
            .send(
                FutureRecord::to(Topics::SPEED)
                    .partition(m.partition())
                    .key("k")
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// The readings of every row of an answer.
fn readings(answer: &Value) -> u64 {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["readings"].as_u64().unwrap())
        .sum()
}

/// The body of `GET url`.
async fn text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// The state of one device in one epoch: `values`, with counters.
fn state(
    set: &ViewSet,
    device: &str,
    epoch_start: i64,
    restore_id: u64,
    values: &[f64],
    dups: u64,
) -> SpeedMessage {
    let view = &set.views[0];
    let mut s = AggState::new(view.parts());
    for &v in values {
        s.fold(v, braid_core::hash::device_hash(device));
    }
    SpeedMessage::State {
        key: SpeedKey {
            view: view.name.clone(),
            window_start: T0,
            group: vec![Some(device.to_string())],
            partition: 0,
            epoch_start,
        },
        restore_id,
        max_offset: epoch_start + values.len() as i64,
        state: s,
        counters: Counters {
            readings: values.len() as u64,
            duplicates_dropped: dups,
            ..Counters::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_carry_values_and_metadata() {
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let set = ViewSet::parse(VIEWS).unwrap();
    let stop = CancellationToken::new();
    // Three devices; d0 spread over two epochs, and a zombie's state that
    // must not count.
    publish(
        &broker.brokers(),
        &[
            SpeedMessage::Restored {
                partition: 0,
                restore_id: 1,
                boundary: 0,
            },
            state(&set, "d0", 0, 1, &[0.0, 3.0, 6.0, 9.0], 1),
            state(&set, "d1", 0, 1, &[1.0, 4.0], 0),
            SpeedMessage::Sealed {
                restore_id: 1,
                span: EpochSpan {
                    partition: 0,
                    start: 0,
                    end: 10,
                },
            },
            SpeedMessage::Restored {
                partition: 0,
                restore_id: 2,
                boundary: 10,
            },
            state(&set, "d0", 10, 1, &[100.0], 0),
            state(&set, "d0", 10, 2, &[12.0, 15.0, 18.0, 21.0, 24.0, 27.0], 0),
            state(
                &set,
                "d1",
                10,
                2,
                &[7.0, 10.0, 13.0, 16.0, 19.0, 22.0, 25.0, 28.0],
                0,
            ),
            state(
                &set,
                "d2",
                10,
                2,
                &[2.0, 5.0, 8.0, 11.0, 14.0, 17.0, 20.0, 23.0, 26.0, 29.0],
                0,
            ),
            SpeedMessage::Progress {
                restore_id: 2,
                partition: 0,
                next_offset: 40,
                max_event_ts: Some(T0 + 29_000),
            },
        ],
    )
    .await;
    let set2 = set.clone();
    let base = crate::serve(broker.brokers(), dir.path(), set, &stop).await;

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let a: Value = http
            .get(format!("{base}/v1/views/per_device?from={T0}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let total = readings(&a);
        if total == 30 {
            break a;
        }
        assert!(Instant::now() < deadline, "rows never added up: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rows = answer["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let d0 = rows.iter().find(|r| r["device_id"] == "d0").unwrap();
    assert_eq!(d0["count"], 10.0);
    assert_eq!(d0["max"], 27.0);
    assert_eq!(d0["mean"], 13.5);
    assert_eq!(d0["duplicates_dropped"], 1);
    assert_eq!(d0["source"], "speed");
    assert_eq!(d0["window_start"], T0);
    assert_eq!(d0["window_end"], T0 + 60_000);
    assert_eq!(d0["reporting_devices"], 3);
    assert_eq!(d0["expected_devices"], 5);
    assert!(answer["watermark"].is_i64());

    let one = http
        .get(format!("{base}/v1/views/per_device?device=d1"))
        .send()
        .await
        .unwrap();
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    let csv = text(&http, &format!("{base}/v1/views/per_device?format=csv")).await;
    assert!(
        csv.starts_with("window_start,window_end,device_id,count,mean,max,source"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 4);

    let r = http
        .get(format!("{base}/v1/views/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{base}/v1/views/per_device?source=batch"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("no batch run"));
    let r = http
        .get(format!("{base}/v1/views/per_device?from=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let status: Value = http
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["speed"]["caught_up"], true);

    // The answer cache: a repeated query is answered from it, with the
    // same rows, and a message read makes the kept answer outdated.
    let url = format!("{base}/v1/views/per_device?from={T0}");
    let hits = || async {
        let m = text(&http, &format!("{base}/metrics")).await;
        m.lines()
            .find_map(|l| l.strip_prefix(r#"braid_serving_answer_cache_total{outcome="hit"} "#))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no answer cache hits in /metrics: {m}"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = hits().await;
        let again: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(again["rows"], answer["rows"]);
        if hits().await > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a repeated query never hit the cache"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let more: Vec<f64> = (0..11).map(f64::from).collect();
    publish(&broker.brokers(), &[state(&set2, "d2", 10, 2, &more, 0)]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        let total = readings(&a);
        if total == 31 {
            break;
        }
        assert_eq!(total, 30, "{a}");
        assert!(
            Instant::now() < deadline,
            "the new state never showed: a kept answer outlived its table"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
}

/// With read tokens, a view answers only a token with `read` access whose
/// devices cover the query: 401 without one (or with a write-only token's
/// secret mistyped), 403 outside its scope, for a view that mixes devices,
/// or for a write-only token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_tokens_scope_queries() {
    use braid_ingest::auth::{Tokens, hash_secret};
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let views = format!(
        "{VIEWS}\n[[views]]\nname = \"per_metric\"\nwindow = \"1m\"\ngroup_by = [\"metric\"]\naggregates = [\"count\"]\n"
    );
    let set = ViewSet::parse(&views).unwrap();
    let tokens = Tokens::parse(&format!(
        "[[tokens]]\nname = \"d1-reader\"\nsha256 = \"{}\"\naccess = [\"read\"]\ndevices = [\"d1\"]\n\n\
         [[tokens]]\nname = \"all-reader\"\nsha256 = \"{}\"\naccess = [\"read\"]\ndevices = [\"*\"]\n\n\
         [[tokens]]\nname = \"writer\"\nsha256 = \"{}\"\ndevices = [\"*\"]\n",
        hash_secret("r1"),
        hash_secret("ra"),
        hash_secret("w")
    ))
    .unwrap();
    let stop = CancellationToken::new();
    publish(
        &broker.brokers(),
        &[
            SpeedMessage::Restored {
                partition: 0,
                restore_id: 1,
                boundary: 0,
            },
            state(&set, "d1", 0, 1, &[1.0], 0),
            state(&set, "d2", 0, 1, &[2.0], 0),
        ],
    )
    .await;
    let base = crate::serve_with_tokens(
        broker.brokers(),
        dir.path(),
        set,
        Some(std::sync::Arc::new(tokens)),
        &stop,
    )
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = get("/v1/views/per_device?device=d1", None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    for (path, token, status) in [
        ("/v1/views/per_device?device=d1", Some("nope"), 401),
        ("/v1/views/per_device?device=d1", Some("w"), 403),
        ("/v1/views/per_device?device=d2", Some("r1"), 403),
        ("/v1/views/per_device", Some("r1"), 403),
        ("/v1/compare/per_device?device=d2", Some("r1"), 403),
        ("/v1/views/per_metric?device=d1", Some("r1"), 403),
        ("/v1/views/per_device?device=d1", Some("r1"), 200),
        ("/v1/compare/per_device?device=d1", Some("r1"), 200),
        ("/v1/views/per_device", Some("ra"), 200),
        ("/v1/views/per_metric", Some("ra"), 200),
    ] {
        let r = get(path, token).await.unwrap();
        let got = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(got, status, "{path} with {token:?}: {body}");
        if status == 403 {
            assert!(body.contains("may not"), "{body}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a: Value = get("/v1/views/per_device?device=d1", Some("r1"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = a["rows"].as_array().unwrap();
        if !rows.is_empty() {
            assert!(rows.iter().all(|r| r["device_id"] == "d1"), "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "no rows: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
}

/// Alerts in `braid.alerts` are answered by `GET /v1/alerts` (a repeat
/// kept once, newest first, filtered by device) and new ones streamed by
/// `GET /v1/alerts/stream` as server-sent events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_and_streamed() {
    use braid_core::detect::{Alert, Detector, Flag, Severity};
    use futures::StreamExt;
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let set = ViewSet::parse(VIEWS).unwrap();
    let alert = |device: &str, ts: i64| Alert {
        device_id: device.into(),
        metric: "t".into(),
        ts,
        value: 99.0,
        flag: Flag {
            detector: Detector::Max,
            score: 9.9,
            expected_min: None,
            expected_max: Some(10.0),
            severity: Severity::Critical,
        },
    };
    let brokers = broker.brokers();
    let send = |a: Alert| {
        let brokers = brokers.clone();
        async move { crate::forecasts::send(&brokers, &a).await }
    };
    send(alert("d1", T0)).await;
    send(alert("d1", T0)).await;
    send(alert("d2", T0 + 1000)).await;
    let stop = CancellationToken::new();
    let base = crate::serve(broker.brokers(), dir.path(), set, &stop).await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = loop {
        let a: Value = http
            .get(format!("{base}/v1/alerts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if a["total"] == 2 {
            break a;
        }
        assert!(Instant::now() < deadline, "{a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let list = all["alerts"].as_array().unwrap();
    assert_eq!(list[0]["device_id"], "d2");
    assert_eq!(list[1]["expected_max"], 10.0);
    assert_eq!(list[1]["expected_min"], Value::Null);
    assert_eq!(list[1]["detector"], "max");
    let one: Value = http
        .get(format!("{base}/v1/alerts?device=d1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["alerts"].as_array().unwrap().len(), 1);
    let status: Value = http
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["alerts"]["available"], true);
    // The stream: a new alert arrives as an event.
    let stream = http
        .get(format!("{base}/v1/alerts/stream?device=d3"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut body = stream.bytes_stream();
    send(alert("d4", T0 + 3000)).await;
    send(alert("d3", T0 + 2000)).await;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text.contains("\"device_id\":\"d3\"") {
        assert!(Instant::now() < deadline, "{text}");
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(1), body.next()).await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
    assert!(
        text.contains("event:alert") || text.contains("event: alert"),
        "{text}"
    );
    assert!(!text.contains("\"d4\""), "filtered by device: {text}");
    stop.cancel();
}
