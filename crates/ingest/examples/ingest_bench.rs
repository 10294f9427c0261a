//! The ingest bench's server and its raw-producer baseline.
//!
//! `ingest_bench` starts the embedded broker (in memory, 4 partitions), the
//! gateway on one port and a bare warp handler (reads the body, answers
//! `{}`) on another, writes the two request bodies (1 reading, 1,000
//! readings) to files, prints `gateway URL`, `bare URL`, `body1 FILE`,
//! `body1000 FILE`, `ready`, and serves until stdin closes. Then, with the
//! servers stopped, it measures the raw rdkafka producer into the same
//! broker with the gateway's batching (`sink::pack` of 1,000 readings,
//! `acks=all`, idempotent, `RAW_IN_FLIGHT` batches in flight like the
//! bench's connections, default 8) for `RAW_SECONDS` (default 10) and
//! prints `raw READINGS_PER_S`.

#![allow(clippy::unwrap_used)] // a bench harness: fail loudly

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_ingest::gateway::filters::routes;
use braid_ingest::sink::pack;
use braid_ingest::{Gateway, GatewayConfig, ReadingSink};
use braid_kafka::Topics;
use rdkafka::producer::{FutureProducer, FutureRecord};
use warp::Filter;

fn readings_json(n: usize, now: i64) -> String {
    let rs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"device_id":"dev-{:04}","metric":"power_w","ts":{},"value":{}.5,"seq":{i}}}"#,
                i % 1000,
                now - 60_000 + i as i64,
                i % 97
            )
        })
        .collect();
    format!("[{}]", rs.join(","))
}

async fn raw_producer(brokers: &str, partitions: i32, seconds: u64, in_flight: usize) -> f64 {
    let now = braid_ingest::system_clock();
    let readings: Vec<braid_core::Reading> =
        serde_json::from_str(&readings_json(1000, now)).unwrap();
    let batches = Arc::new(pack(&readings, partitions));
    let producer: FutureProducer = braid_ingest::sink::ReadingSink::producer_config(brokers)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (producer, batches) = (producer.clone(), batches.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                // One request's worth: every message of the batch, then
                // every acknowledgement, as the gateway does.
                let pending: Vec<_> = batches
                    .iter()
                    .map(|(p, payload, key)| {
                        let mut r = FutureRecord::to(Topics::READINGS)
                            .payload(payload.as_slice())
                            .partition(*p);
                        if let Some(k) = key {
                            r = r.key(k.as_str());
                        }
                        producer.send_result(r).map_err(|(e, _)| e).unwrap()
                    })
                    .collect();
                for d in futures::future::join_all(pending).await {
                    d.unwrap().map_err(|(e, _)| e).unwrap();
                }
                sent += 1000;
            }
            sent
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let broker = braid_testkit::memory_broker().await;
    let brokers = broker.brokers();
    let sink = ReadingSink::connect(&brokers, Duration::from_secs(10))
        .await
        .unwrap();
    let partitions = sink.partitions();
    let gw = Arc::new(Gateway::new(
        sink,
        GatewayConfig::default(),
        braid_ingest::system_clock,
    ));
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!(
        "gateway http://{}/v1/readings",
        gateway.local_addr().unwrap()
    );
    println!("bare http://{}/v1/readings", bare.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let now = braid_ingest::system_clock();
    for n in [1, 1000] {
        let path = dir.path().join(format!("body{n}.json"));
        std::fs::write(&path, readings_json(n, now)).unwrap();
        println!("body{n} {}", path.display());
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (s1, s2) = (stop.clone(), stop.clone());
    let g = tokio::spawn(
        warp::serve(routes(gw))
            .incoming(gateway)
            .graceful(async move { s1.cancelled().await })
            .run(),
    );
    let bare_route = warp::post()
        .and(warp::path!("v1" / "readings"))
        .and(warp::body::content_length_limit(1 << 20))
        .and(warp::body::bytes())
        .map(|b: bytes::Bytes| warp::reply::json(&serde_json::json!({ "bytes": b.len() })));
    let b = tokio::spawn(
        warp::serve(bare_route)
            .incoming(bare)
            .graceful(async move { s2.cancelled().await })
            .run(),
    );
    println!("ready");
    tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
    })
    .await
    .unwrap();
    stop.cancel();
    let _ = g.await;
    let _ = b.await;
    let rate = raw_producer(
        &brokers,
        partitions,
        env_or("RAW_SECONDS", 10),
        env_or("RAW_IN_FLIGHT", 8),
    )
    .await;
    println!("raw {rate:.0}");
    drop(broker);
}
