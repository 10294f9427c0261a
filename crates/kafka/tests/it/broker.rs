//! The embedded broker through rdkafka: many readings through a consumer
//! group with none lost, and a file-backed broker that keeps them across a
//! restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use braid_core::Reading;
use braid_core::codec::{decode_message, encode_message};
use braid_kafka::{
    BrokerStorage, EmbeddedBroker, Topics, consumer_config, ensure_topics, producer_config,
};
use braid_testkit::fixtures::fleet;
use braid_testkit::{broker_with, init_tracing, memory_broker};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Sends readings packed `per_message` to a message, keyed by device, and
/// waits for every acknowledgement.
async fn produce(brokers: &str, readings: &[Reading], per_message: usize) {
    let producer: FutureProducer = producer_config(brokers).create().expect("producer");
    let mut by_device: std::collections::BTreeMap<&str, Vec<Reading>> = Default::default();
    for r in readings {
        by_device.entry(&r.device_id).or_default().push(r.clone());
    }
    let mut pending = Vec::new();
    for (device, rs) in &by_device {
        for chunk in rs.chunks(per_message) {
            let payload = encode_message(chunk);
            let producer = producer.clone();
            let key = device.to_string();
            pending.push(tokio::spawn(async move {
                producer
                    .send(
                        FutureRecord::to(Topics::READINGS)
                            .key(&key)
                            .payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }));
        }
    }
    for p in pending {
        p.await.expect("join").expect("acknowledged");
    }
}

/// Reads until `expected` readings arrived or the deadline passed; returns
/// every (device, seq) seen, with repeats.
async fn consume(
    brokers: &str,
    group: &str,
    expected: usize,
    deadline: Duration,
) -> Vec<(String, u64)> {
    let consumer: StreamConsumer = consumer_config(brokers, group).create().expect("consumer");
    consumer.subscribe(&[Topics::READINGS]).expect("subscribe");
    let mut seen = Vec::with_capacity(expected);
    let started = Instant::now();
    while seen.len() < expected && started.elapsed() < deadline {
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await else {
            continue;
        };
        let msg = msg.expect("message");
        let payload = msg.payload().expect("payload");
        for r in decode_message(payload).expect("json") {
            let r = r.expect("reading");
            seen.push((r.device_id, r.seq.expect("seq")));
        }
    }
    seen
}

fn assert_exactly(seen: &[(String, u64)], expected: &[Reading]) {
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a reading was delivered twice");
    let wanted: BTreeSet<_> = expected
        .iter()
        .map(|r| (r.device_id.clone(), r.seq.unwrap_or_default()))
        .collect();
    let missing = wanted.difference(&unique).count();
    assert_eq!(missing, 0, "{missing} readings lost");
    assert_eq!(unique, wanted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_readings_through_a_consumer_group() {
    init_tracing();
    let broker = memory_broker().await;
    let readings = fleet(200, 500, 1_700_000_000_000, 1000);
    assert_eq!(readings.len(), 100_000);
    produce(&broker.brokers(), &readings, 100).await;
    let seen = consume(
        &broker.brokers(),
        "it-100k",
        readings.len(),
        Duration::from_secs(120),
    )
    .await;
    assert_exactly(&seen, &readings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_backed_broker_keeps_readings_across_a_restart() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = BrokerStorage::Dir(dir.path().join("broker"));
    let broker = broker_with(storage.clone(), 2).await;
    let addr = broker.addr();
    let readings = fleet(20, 100, 1_700_000_000_000, 1000);
    produce(&broker.brokers(), &readings, 50).await;
    broker.stop().await;

    // Same files, same address: a new process would see the same.
    let broker = EmbeddedBroker::start(addr, storage).await.expect("restart");
    ensure_topics(&broker.brokers(), 2)
        .await
        .expect("topics exist already");
    let seen = consume(
        &broker.brokers(),
        "it-restart",
        readings.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_exactly(&seen, &readings);
    assert!(
        dir.path().join("broker/tansu.db").exists(),
        "the sqlite file is where the layout says"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_address_is_a_clear_error() {
    let broker = memory_broker().await;
    let err = EmbeddedBroker::start(broker.addr(), BrokerStorage::Memory)
        .await
        .expect_err("the port is taken");
    assert!(err.to_string().contains("already in use"), "{err}");
}
