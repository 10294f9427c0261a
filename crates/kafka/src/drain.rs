//! Reading a whole topic from the beginning, every partition, outside any
//! consumer group: what `braid verify` and the tests do to see the log as
//! it is.
//!
//! High watermarks from the broker do not decide when a topic has been
//! read: tansu 0.6 answers ListOffsets with a stale high watermark after
//! idempotent produces, so a reader drains until the topic has been quiet
//! for a while (call it once producers are done).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use crate::{KafkaError, consumer_config};

/// A consumer assigned every partition of `topic` from the beginning
/// (its group id is never used to join a group or commit).
pub fn assign_all(brokers: &str, topic: &str) -> Result<BaseConsumer, KafkaError> {
    let consumer: BaseConsumer = consumer_config(brokers, "braid-reader")
        .create()
        .map_err(|e| KafkaError::client("creating a reader", e))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| KafkaError::client(format!("reading metadata of {topic}"), e))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| KafkaError::client(format!("assigning {topic}"), e))?;
        }
    }
    if tpl.count() == 0 {
        return Err(KafkaError::Topic(format!(
            "topic {topic} has no partitions"
        )));
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::client(format!("assigning {topic}"), e))?;
    Ok(consumer)
}

/// Calls `each` for every message of `topic`, partition by partition in
/// offset order (partitions interleaved), until no message has arrived for
/// `quiet`; fails after `timeout` or on a consumer error. Returns messages
/// read.
pub fn drain_topic(
    brokers: &str,
    topic: &str,
    quiet: Duration,
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, KafkaError> {
    let consumer = assign_all(brokers, topic)?;
    let deadline = Instant::now() + timeout;
    let mut quiet_since = Instant::now();
    let mut read = 0;
    while quiet_since.elapsed() < quiet {
        if Instant::now() >= deadline {
            return Err(KafkaError::Topic(format!(
                "{topic} was still being written after {timeout:?} ({read} messages read)"
            )));
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        quiet_since = Instant::now();
        let m = m.map_err(|e| KafkaError::client(format!("reading {topic}"), e))?;
        each(&m);
        read += 1;
    }
    Ok(read)
}
