//! Test kit: fixtures, an embedded broker on an ephemeral port, and a plain
//! from-scratch reference model of the views.
//!
//! The model is written for obviousness, not speed: it rescans the log for
//! every decision, so that the layers' incremental, checkpointed, partitioned
//! machinery can be checked against something that is easy to believe.
//! Nothing here is used by the product.

pub mod fixtures;
pub mod logs;
pub mod model;
pub mod mosquitto;
pub mod moto;
pub mod openapi;
pub mod random;

use braid_kafka::{BrokerStorage, EmbeddedBroker, ensure_topics};

/// Partitions of `braid.readings` in tests unless a test says otherwise.
pub const TEST_PARTITIONS: i32 = 4;

/// Starts an in-memory broker on an ephemeral loopback port, with Braid's
/// topics created.
pub async fn memory_broker() -> EmbeddedBroker {
    broker_with(BrokerStorage::Memory, TEST_PARTITIONS).await
}

/// Starts a broker on an ephemeral loopback port with the given storage and
/// partition count, with Braid's topics created.
pub async fn broker_with(storage: BrokerStorage, partitions: i32) -> EmbeddedBroker {
    let broker = EmbeddedBroker::start(([127, 0, 0, 1], 0).into(), storage)
        .await
        .expect("the embedded broker starts");
    ensure_topics(&broker.brokers(), partitions)
        .await
        .expect("topics are created");
    broker
}

/// Initialises test logging once (respects `RUST_LOG`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Produces `readings` into `braid.readings`, `per_message` to a message,
/// keyed by device (so one device stays in one partition), and waits for
/// every acknowledgement. `ingest_ts`, when given, is every message's
/// timestamp (the readings' accept time).
pub async fn produce(
    brokers: &str,
    readings: &[braid_core::Reading],
    per_message: usize,
    ingest_ts: Option<i64>,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = braid_kafka::producer_config(brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    let mut by_device: std::collections::BTreeMap<&str, Vec<braid_core::Reading>> =
        Default::default();
    for r in readings {
        by_device.entry(&r.device_id).or_default().push(r.clone());
    }
    let mut pending = Vec::new();
    for (device, rs) in &by_device {
        for chunk in rs.chunks(per_message.max(1)) {
            let payload = braid_core::codec::encode_message(chunk);
            let mut record = FutureRecord::to(braid_kafka::Topics::READINGS)
                .key(*device)
                .payload(&payload);
            if let Some(ts) = ingest_ts {
                record = record.timestamp(ts);
            }
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queued"),
            );
        }
    }
    for p in pending {
        p.await
            .expect("delivered")
            .map_err(|(e, _)| e)
            .expect("acknowledged");
    }
}
