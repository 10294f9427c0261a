//! Test kit: fixtures, an embedded broker on an ephemeral port, and a plain
//! from-scratch reference model of the views.
//!
//! The model is written for obviousness, not speed: it rescans the log for
//! every decision, so that the layers' incremental, checkpointed, partitioned
//! machinery can be checked against something that is easy to believe.
//! Nothing here is used by the product.

pub mod fixtures;
pub mod model;

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
