//! `GET /v1/forecast/{view}` over real HTTP, from baselines a batch run
//! would publish and speed states in `braid.speed`; and the alert webhook,
//! fed from `braid.alerts`, retrying a failing receiver and sending
//! nothing twice across a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_core::ViewSet;
use braid_core::agg::AggState;
use braid_core::baseline::{Baselines, Season, Trainer};
use braid_core::detect::{Alert, Detector, Detectors, Flag, Severity};
use braid_core::merge::Counters;
use braid_core::speedlog::{SpeedKey, SpeedMessage};
use braid_kafka::producer_config;
use braid_serving::ServingConfig;
use braid_testkit::{init_tracing, memory_broker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const VIEWS: &str = r#"
[[views]]
name = "hourly"
metrics = ["t"]
window = "1h"
group_by = ["device_id"]
aggregates = ["count", "mean", "quantiles"]

[[detectors]]
metric = "t"
min = 0.0
seasonal = "hourly"
"#;

const HOUR: i64 = 3_600_000;
/// A Monday 00:00 UTC.
const MONDAY: i64 = 1_704_067_200_000;

fn config(brokers: String, dir: &std::path::Path, webhook: Option<String>) -> ServingConfig {
    let set = ViewSet::parse(VIEWS).unwrap();
    let detectors = Detectors::parse(VIEWS).unwrap();
    detectors.check_views(&set).unwrap();
    ServingConfig {
        brokers,
        layout: braid_store::Layout::new(dir),
        archive: braid_store::Blobs::local(dir),
        views: set,
        http: "127.0.0.1:0".parse().unwrap(),
        openapi_extra: None,
        tokens: None,
        tls: None,
        detectors,
        alert_webhook: webhook,
    }
}

/// d1 reads (hour of day) x 10 at every hour of the week.
fn baselines(set: &ViewSet) -> Baselines {
    let view = set.get("hourly").unwrap();
    let mut t = Trainer::new(Season::default(), HOUR);
    for week in 0..3 {
        for h in 0..168 {
            let mut s = AggState::new(view.parts());
            for _ in 0..4 {
                s.fold((h % 24) as f64 * 10.0, 0);
            }
            t.add("d1", MONDAY + (week * 168 + h) * HOUR, &s);
        }
    }
    Baselines {
        run_id: "run-1".into(),
        trained_ms: MONDAY,
        metrics: [("t".to_string(), t.finish("hourly"))].into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_follow_the_baseline_and_the_recent_level() {
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(broker.brokers(), dir.path(), None);
    let set = cfg.views.clone();
    let stop = CancellationToken::new();
    let base = crate::serve_config(cfg, &stop).await;
    let http = reqwest::Client::new();
    let get = |q: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}{q}")).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // Origin: a Thursday 10:30; the hour before it read 20 over usual (110
    // at 09:00-10:00 against 90).
    let origin = MONDAY + 3 * 7 * 24 * HOUR + 3 * 24 * HOUR + 10 * HOUR + HOUR / 2;
    let q = format!("/v1/forecast/hourly?device=d1&horizon=3h&at={origin}");
    let (status, body) = get(q.clone()).await;
    assert_eq!(status, 409, "before any baseline: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("batch run"),
        "{body}"
    );

    braid_store::baselines::publish(&braid_store::Layout::new(dir.path()), &baselines(&set), 3)
        .unwrap();
    let view = set.get("hourly").unwrap();
    let mut s = AggState::new(view.parts());
    for _ in 0..6 {
        s.fold(110.0, 0);
    }
    crate::queries::publish(
        &broker.brokers(),
        &[
            SpeedMessage::Restored {
                partition: 0,
                restore_id: 1,
                boundary: 0,
            },
            SpeedMessage::State {
                key: SpeedKey {
                    view: "hourly".into(),
                    window_start: origin - HOUR / 2 - HOUR,
                    group: vec![Some("d1".into())],
                    partition: 0,
                    epoch_start: 0,
                },
                restore_id: 1,
                max_offset: 5,
                state: s,
                counters: Counters {
                    readings: 6,
                    ..Counters::default()
                },
            },
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = get(q.clone()).await;
        assert_eq!(status, 200, "{body}");
        if body["recent_windows"] == 1 {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["baseline"]["run_id"], "run-1");
    assert_eq!(body["baseline"]["usable_slots"], 168);
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{body}");
    // 11:30 usually 110, 12:30 120, 13:30 130; the level: 20 over, a day's
    // mean deviation 20 too, so carried undamped.
    for (i, p) in points.iter().enumerate() {
        let usual = 110.0 + 10.0 * i as f64;
        let v = p["value"].as_f64().unwrap();
        assert!((v - (usual + 20.0)).abs() < 2.5, "{i}: {p}");
        assert!(p["lo"].as_f64().unwrap() <= v && v <= p["hi"].as_f64().unwrap());
        assert_eq!(p["ts"].as_i64().unwrap(), origin + (i as i64 + 1) * HOUR);
    }
    // Bad questions say what is wrong.
    for (q, says) in [
        ("/v1/forecast/hourly?horizon=1h".to_string(), "device"),
        (
            format!("/v1/forecast/hourly?device=d1&horizon=30d&at={origin}"),
            "7d",
        ),
        (
            format!("/v1/forecast/hourly?device=d1&step=1ms&at={origin}"),
            "points",
        ),
    ] {
        let (status, body) = get(q.clone()).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{q}: {body}"
        );
    }
    let (status, _) = get("/v1/forecast/nope?device=d1".into()).await;
    assert_eq!(status, 404);
    // A device without history: no points, said plainly by an empty list.
    let (status, body) = get(format!("/v1/forecast/hourly?device=new&at={origin}")).await;
    assert_eq!((status, body["points"].as_array().unwrap().len()), (200, 0));
    assert_eq!(body["baseline"]["usable_slots"], 0);
    stop.cancel();
}

fn alert(i: i64) -> Alert {
    Alert {
        device_id: format!("d{i}"),
        metric: "t".into(),
        ts: MONDAY + i,
        value: 99.0,
        flag: Flag {
            detector: Detector::Seasonal,
            score: 9.0,
            expected_min: Some(0.0),
            expected_max: Some(10.0),
            severity: Severity::Warning,
        },
    }
}

/// Produces one alert into `braid.alerts`, as a speed worker does.
pub(crate) async fn send(brokers: &str, a: &Alert) {
    let producer: FutureProducer = producer_config(brokers).create().unwrap();
    producer
        .send(
            FutureRecord::to(braid_kafka::Topics::ALERTS)
                .key(&a.device_id)
                .payload(&serde_json::to_vec(a).unwrap()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// A receiver that refuses its first `refuse` requests with 503 and keeps
/// the alerts of the rest.
async fn receiver(refuse: usize) -> (String, Arc<Mutex<(usize, Vec<Alert>)>>) {
    use warp::Filter;
    let got = Arc::new(Mutex::new((0usize, Vec::new())));
    let g = got.clone();
    let route = warp::post().and(warp::body::json()).map(move |a: Alert| {
        let mut g = g.lock().unwrap();
        g.0 += 1;
        if g.0 <= refuse {
            return warp::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        g.1.push(a);
        warp::http::StatusCode::NO_CONTENT
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_retries_and_sends_each_alert_once_across_a_restart() {
    init_tracing();
    let broker = memory_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = receiver(2).await;
    for i in 0..3 {
        send(&broker.brokers(), &alert(i)).await;
    }
    let wait_for = |n: usize| {
        let got = got.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            while got.lock().unwrap().1.len() < n {
                assert!(Instant::now() < deadline, "{:?}", got.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let stop = CancellationToken::new();
    let base = crate::serve_config(
        config(broker.brokers(), dir.path(), Some(url.clone())),
        &stop,
    )
    .await;
    wait_for(3).await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"braid_alert_webhook_total{outcome="delivered"} 3"#)
            && metrics.contains(r#"braid_alert_webhook_total{outcome="failed_try"} 2"#),
        "{metrics}"
    );
    // Let the commit land, stop, send one more, start again: only the new
    // one is sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(&broker.brokers(), &alert(3)).await;
    let stop = CancellationToken::new();
    crate::serve_config(config(broker.brokers(), dir.path(), Some(url)), &stop).await;
    wait_for(4).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let devices: Vec<String> = got
        .lock()
        .unwrap()
        .1
        .iter()
        .map(|a| a.device_id.clone())
        .collect();
    assert_eq!(devices, ["d0", "d1", "d2", "d3"]);
    stop.cancel();
}
