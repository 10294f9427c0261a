//! Braid's Kafka plumbing, in one place: the topic names, the rdkafka
//! settings every role uses (an idempotent `acks=all` producer, consumers
//! that never auto-commit), topic creation, and the embedded
//! Kafka-protocol broker (the `tansu-broker` crate) that `braid up`,
//! `braid broker` and the tests run in-process.
//!
//! What it deliberately does not do: decide anything about readings. It moves
//! bytes; the core crate says what they mean, the layers what to do.
//!
//! On-disk layout (file-backed embedded broker): `<data dir>/broker/tansu.db`,
//! tansu's SQLite engine holding topics, offsets and consumer groups.

pub mod config;
pub mod drain;
#[cfg(feature = "embedded-broker")]
pub mod embedded;
pub mod rebalance;
pub mod resume;
pub mod topics;

pub use config::{KafkaError, consumer_config, producer_config};
#[cfg(feature = "embedded-broker")]
pub use embedded::{BrokerStorage, EmbeddedBroker};
pub use rebalance::{OrphanWatch, REJOIN_AFTER, RevocationContext, rejoin_if_stalled};
pub use resume::{Resume, Step};
pub use topics::{Topics, ensure_topics};
