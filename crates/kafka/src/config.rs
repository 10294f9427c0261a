//! rdkafka client settings shared by every role.
//!
//! Producers are idempotent with `acks=all`, so a reading acknowledged to a
//! device is on every in-sync replica and a retried send is never written
//! twice. Consumers never auto-commit: each role stores its own position
//! (the archiver in file names, the speed layer in checkpoints), so a crash
//! can never skip a record that was not yet durable downstream.

use std::time::Duration;

use rdkafka::ClientConfig;
use thiserror::Error;

/// A failure talking to Kafka, with what the caller should do about it.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// The client library refused or failed an operation.
    #[error("kafka: {context}: {source}")]
    Client {
        /// What was being done.
        context: String,
        /// rdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The broker did not answer in time; retrying may succeed.
    #[error("kafka: {0}: timed out (is the broker at the configured address running?)")]
    Timeout(String),
    /// The embedded broker could not start.
    #[error("embedded broker: {0}")]
    Broker(String),
    /// A topic is not as expected (missing, empty, never quiet).
    #[error("kafka: {0}")]
    Topic(String),
}

impl KafkaError {
    /// Wraps an rdkafka error with what was being done.
    pub fn client(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Client {
            context: context.into(),
            source,
        }
    }

    /// Whether the same call may succeed later (broker down or slow), as
    /// opposed to a configuration error that retrying cannot fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Client { source, .. } => source.rdkafka_error_code().is_some_and(|c| {
                use rdkafka::types::RDKafkaErrorCode as C;
                matches!(
                    c,
                    C::MessageTimedOut
                        | C::RequestTimedOut
                        | C::AllBrokersDown
                        | C::BrokerTransportFailure
                        | C::QueueFull
                        | C::NotEnoughReplicas
                        | C::LeaderNotAvailable
                        | C::NotLeaderForPartition
                )
            }),
            Self::Broker(_) | Self::Topic(_) => false,
        }
    }
}

/// How long a produce may wait for its acknowledgement before it fails
/// (and the gateway answers 503 rather than 2xx).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for a producer whose acknowledgements mean "durable".
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set("socket.keepalive.enable", "true")
        .set("log_level", "4");
    c
}

/// Settings for a consumer in `group` that commits nothing by itself and
/// starts at the beginning of the log when the group has no position.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "100")
        .set("log_level", "4");
    c
}
