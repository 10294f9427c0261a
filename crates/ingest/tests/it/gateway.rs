//! The gateway over real HTTP against the embedded broker: acknowledged
//! readings are in the topic exactly once; bad input is refused with the
//! record and field and nothing written; limits answer 413; a stopped broker
//! answers 503 with Retry-After and never 2xx.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::codec::decode_message;
use braid_core::{Limits, Reading};
use braid_ingest::gateway::filters::routes;
use braid_ingest::{Gateway, GatewayConfig, ReadingSink};
use braid_kafka::{BrokerStorage, EmbeddedBroker, Topics, consumer_config, ensure_topics};
use braid_testkit::{broker_with, init_tracing, memory_broker};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NOW: i64 = 1_700_000_000_000;

fn clock() -> i64 {
    NOW
}

struct Server {
    url: String,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(brokers: &str, config: GatewayConfig, ack: Duration) -> Server {
    let sink = ReadingSink::connect(brokers, ack).await.expect("sink");
    let gw = Arc::new(Gateway::new(sink, config, clock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(
        warp::serve(routes(gw))
            .incoming(listener)
            .graceful(async move { s.cancelled().await })
            .run(),
    );
    Server {
        url: format!("http://{addr}"),
        stop,
    }
}

/// Every reading in braid.readings, with its message timestamp.
async fn topic_contents(brokers: &str, group: &str, expect: usize) -> Vec<(Reading, i64)> {
    let consumer: StreamConsumer = consumer_config(brokers, group).create().expect("consumer");
    consumer.subscribe(&[Topics::READINGS]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(if expect == 0 { 4 } else { 30 });
    while Instant::now() < deadline && (out.len() < expect || expect == 0) {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            let ts = m.timestamp().to_millis().expect("timestamp");
            for r in decode_message(m.payload().expect("payload")).expect("json") {
                out.push((r.expect("valid"), ts));
            }
        }
    }
    // Anything beyond `expect` arriving shortly after is a duplicate.
    if expect > 0 {
        let settle = Instant::now() + Duration::from_secs(1);
        while Instant::now() < settle {
            if let Ok(Ok(m)) =
                tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
            {
                out.extend(
                    decode_message(m.payload().expect("payload"))
                        .expect("json")
                        .into_iter()
                        .map(|r| (r.expect("valid"), 0)),
                );
            }
        }
    }
    out
}

fn readings_json(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"device_id": format!("d{}", i % 50), "metric": "m", "ts": NOW - i as i64, "value": i as f64, "seq": i}))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_are_in_the_topic_exactly_once() {
    init_tracing();
    let broker = memory_broker().await;
    let server = serve(
        &broker.brokers(),
        GatewayConfig::default(),
        Duration::from_secs(5),
    )
    .await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/readings", server.url))
        .json(&readings_json(1000))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.expect("json")["accepted"], 1000);
    // One object, NDJSON and line protocol too.
    let one = json!({"device_id": "solo", "metric": "m", "ts": NOW, "value": 1});
    let r = http
        .post(format!("{}/v1/readings", server.url))
        .json(&one)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let nd = "{\"device_id\":\"nd\",\"metric\":\"m\",\"ts\":1,\"value\":1}\n{\"device_id\":\"nd\",\"metric\":\"m\",\"ts\":2,\"value\":2}\n";
    let r = http
        .post(format!("{}/v1/readings", server.url))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let lp = "room,device_id=lp,zone=n temp=21.5,hum=40i 1700000000000000000\n";
    let r = http
        .post(format!("{}/write?db=x", server.url))
        .body(lp)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 204);

    let got = topic_contents(&broker.brokers(), "exactly-once", 1005).await;
    assert_eq!(
        got.len(),
        1005,
        "every acknowledged reading once, none twice"
    );
    let mut seqs: BTreeMap<String, usize> = BTreeMap::new();
    for (r, ts) in &got {
        *seqs
            .entry(format!("{}/{}/{:?}/{}", r.device_id, r.metric, r.seq, r.ts))
            .or_default() += 1;
        assert!(*ts == NOW || *ts == 0, "ingest_ts is the accept time");
    }
    assert!(seqs.values().all(|&n| n == 1));
    let lp_readings: Vec<&Reading> = got
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.device_id == "lp")
        .collect();
    assert_eq!(lp_readings.len(), 2);
    assert!(
        lp_readings
            .iter()
            .any(|r| r.metric == "room_temp" && r.value == 21.5 && r.ts == NOW)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_record_and_field_and_nothing_written() {
    init_tracing();
    let broker = memory_broker().await;
    let server = serve(
        &broker.brokers(),
        GatewayConfig::default(),
        Duration::from_secs(5),
    )
    .await;
    let http = reqwest::Client::new();
    let mut body = readings_json(5);
    body[3]["value"] = json!("high");
    let r = http
        .post(format!("{}/v1/readings", server.url))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.expect("json");
    assert_eq!(err["record"]["index"], 3, "{err}");
    assert_eq!(err["record"]["field"], "value", "{err}");
    assert!(
        err["error"]
            .as_str()
            .expect("text")
            .contains("record 3: field `value`"),
        "{err}"
    );

    let far = json!([{"device_id": "a", "metric": "m", "ts": NOW + 2 * 3_600_000, "value": 1}]);
    let r = http
        .post(format!("{}/v1/readings", server.url))
        .json(&far)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["record"]["field"],
        "ts"
    );

    let r = http
        .post(format!("{}/v1/readings", server.url))
        .header("content-type", "application/json")
        .body("{\"device_id\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}/v1/write", server.url))
        .body("m value=1\n")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("line 1: field `device_id`")
    );
    let r = http
        .post(format!("{}/v1/readings", server.url))
        .header("content-type", "text/csv")
        .body("a,b")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 415);

    assert!(
        topic_contents(&broker.brokers(), "nothing", 0)
            .await
            .is_empty(),
        "a refused request wrote something"
    );

    // accept_partial writes the valid ones and lists the rest.
    let r = http
        .post(format!("{}/v1/readings?accept_partial=true", server.url))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 422);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["accepted"], 4);
    assert_eq!(answer["rejected"][0]["index"], 3);
    assert_eq!(
        topic_contents(&broker.brokers(), "partial", 4).await.len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    init_tracing();
    let broker = memory_broker().await;
    let config = GatewayConfig {
        max_body_bytes: 10_000,
        max_inflated_bytes: 50_000,
        limits: Limits::default(),
        ..GatewayConfig::default()
    };
    let server = serve(&broker.brokers(), config, Duration::from_secs(5)).await;
    let http = reqwest::Client::new();
    // Only the headers are sent: the answer must come before any body.
    let addr = server.url.trim_start_matches("http://").to_string();
    let status = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        tcp.write_all(b"POST /v1/readings HTTP/1.1\r\nhost: braid\r\ncontent-type: application/json\r\ncontent-length: 20000\r\n\r\n")
            .expect("write headers");
        let mut buf = [0u8; 64];
        let n = tcp.read(&mut buf).expect("an answer before the body");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .expect("join");
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Small gzip that inflates past the cap.
    let bomb = vec![b' '; 200_000];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&bomb).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < 10_000);
    let r = http
        .post(format!("{}/v1/readings", server.url))
        .header("content-encoding", "gzip")
        .body(gz)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
    assert!(r.text().await.expect("text").contains("inflated"));
    // A gzip body under both caps is accepted.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&serde_json::to_vec(&readings_json(100)).expect("json"))
        .expect("gzip");
    let r = http
        .post(format!("{}/v1/readings", server.url))
        .header("content-encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_gives_503_and_writes_resume_after() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = BrokerStorage::Dir(dir.path().join("broker"));
    let broker = broker_with(storage.clone(), 2).await;
    let addr = broker.addr();
    let server = serve(
        &broker.brokers(),
        GatewayConfig::default(),
        Duration::from_secs(5),
    )
    .await;
    let http = reqwest::Client::new();
    let send = |n: usize| {
        let http = http.clone();
        let url = format!("{}/v1/readings", server.url);
        async move {
            http.post(url)
                .json(&readings_json(n))
                .send()
                .await
                .expect("send")
        }
    };
    assert_eq!(send(10).await.status(), 200);
    broker.stop().await;

    let t = Instant::now();
    let r = send(10).await;
    let took = t.elapsed();
    assert_eq!(r.status(), 503, "never a 2xx while the broker is down");
    assert!(took < Duration::from_secs(10), "503 took {took:?}");
    assert!(r.headers().contains_key("retry-after"));

    let broker = EmbeddedBroker::start(addr, storage).await.expect("restart");
    ensure_topics(&broker.brokers(), 2).await.expect("topics");
    let t = Instant::now();
    loop {
        let r = send(10).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "writes did not resume: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_and_rate_writes() {
    use braid_ingest::auth::{Tokens, hash_secret};
    init_tracing();
    let broker = memory_broker().await;
    let tokens = Tokens::parse(&format!(
        "[[tokens]]\nname = \"lots\"\nsha256 = \"{}\"\ndevices = [\"lot-*\"]\nrate = 2\n",
        hash_secret("secret-1")
    ))
    .expect("tokens");
    let config = GatewayConfig {
        tokens: Some(Arc::new(tokens)),
        ..GatewayConfig::default()
    };
    let server = serve(&broker.brokers(), config, Duration::from_secs(5)).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/readings", server.url);
    let body = |devices: &[&str]| {
        let rs: Vec<serde_json::Value> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| serde_json::json!({"device_id": d, "metric": "occupancy", "ts": NOW - 1000, "value": 1, "seq": i}))
            .collect();
        serde_json::to_vec(&rs).expect("json")
    };
    let post = |token: Option<&str>, devices: &[&str]| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body(devices));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = post(None, &["lot-1"]).await.expect("post");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        post(Some("wrong"), &["lot-1"])
            .await
            .expect("post")
            .status(),
        401
    );
    let r = post(Some("secret-1"), &["lot-1", "meter-9"])
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let text = r.text().await.expect("text");
    assert!(text.contains("may not write device `meter-9`"), "{text}");
    let r = post(Some("secret-1"), &["lot-1", "lot-2", "lot-3"])
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = post(Some("secret-1"), &["lot-4", "lot-5"])
        .await
        .expect("post");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Only the three in-scope readings of the accepted request were written.
    let got = topic_contents(&broker.brokers(), "tokens-check", 3).await;
    let devices: std::collections::BTreeSet<String> =
        got.iter().map(|(r, _)| r.device_id.clone()).collect();
    assert_eq!(
        devices,
        ["lot-1", "lot-2", "lot-3"].map(String::from).into()
    );
}

/// The in-flight cap: while requests hold its room, another write gets 503
/// with Retry-After before its body is read; once they are answered, writes
/// pass again. `/metrics` counts what happened, `/readyz` is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_answers_503_before_reading() {
    init_tracing();
    let broker = memory_broker().await;
    let config = GatewayConfig {
        max_body_bytes: 8 << 10,
        max_in_flight_bytes: 12 << 10,
        ..GatewayConfig::default()
    };
    let server = serve(&broker.brokers(), config, Duration::from_secs(5)).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    // A request announcing 8 KiB and sending none of it holds 8 of the 12.
    let mut holder = std::net::TcpStream::connect(&addr).expect("connect");
    holder
        .write_all(b"POST /v1/readings HTTP/1.1\r\nhost: braid\r\ncontent-type: application/json\r\ncontent-length: 8000\r\n\r\n")
        .expect("headers");
    let http = reqwest::Client::new();
    let body = serde_json::to_vec(&readings_json(70)).expect("json");
    assert!(
        body.len() > 4 << 10 && body.len() < 8 << 10,
        "{}",
        body.len()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = loop {
        let r = http
            .post(format!("{}/v1/readings", server.url))
            .body(body.clone())
            .send()
            .await
            .expect("send");
        if r.status() == 503 {
            break r;
        }
        assert!(Instant::now() < deadline, "never held: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(busy.headers()["retry-after"], "1");
    let text = busy.text().await.expect("text");
    assert!(text.contains("in flight"), "{text}");
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http
            .post(format!("{}/v1/readings", server.url))
            .body(body.clone())
            .send()
            .await
            .expect("send");
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "room never returned: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bad = json!([{"device_id": "d", "metric": "m", "ts": NOW, "value": "x", "seq": 1}]);
    let r = http
        .post(format!("{}/v1/readings", server.url))
        .json(&bad)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "braid_ingest_requests_total{outcome=\"busy\"}",
        "braid_ingest_requests_total{outcome=\"accepted\"}",
        "braid_ingest_readings_refused_total{field=\"value\"} 1",
        "braid_ingest_readings_accepted_total",
        "braid_ingest_draining 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let ready = http
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
}
