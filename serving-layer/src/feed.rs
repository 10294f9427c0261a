//! The speed feed: `braid.speed` read from the beginning into a
//! [`SpeedTable`], kept current by a thread of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use braid_core::speedlog::{SpeedMessage, SpeedTable};
use braid_kafka::{KafkaError, Topics, consumer_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// The speed view as this replica knows it.
#[derive(Default)]
pub struct SpeedFeed {
    /// The table.
    pub table: RwLock<SpeedTable>,
    /// Whether the feed has read everything that was in the topic when it
    /// started (the replica is ready).
    pub caught_up: AtomicBool,
    /// Messages applied.
    pub applied: AtomicU64,
    /// Messages ignored (stale restores, older values).
    pub ignored: AtomicU64,
    /// Messages that did not decode.
    pub undecodable: AtomicU64,
    /// Epoch ms of the last message read.
    pub last_message_ms: AtomicU64,
    /// The end offset of each `braid.readings` partition, read every few
    /// seconds: the speed layer's lag is this less its next offset.
    pub readings_end: RwLock<std::collections::BTreeMap<i32, i64>>,
}

impl SpeedFeed {
    /// Per partition, how many readings the speed layer has not yet folded
    /// (`None` until both ends are known).
    pub fn lag(&self, partition: i32) -> Option<i64> {
        let end = *self.readings_end.read().ok()?.get(&partition)?;
        let next = self
            .table
            .read()
            .ok()?
            .partitions()
            .get(&partition)?
            .progress?
            .0;
        Some((end - next).max(0))
    }
}

/// Starts reading `braid.speed` into a new feed on a thread of its own.
pub fn start(brokers: &str, shutdown: CancellationToken) -> Result<Arc<SpeedFeed>, KafkaError> {
    // Each replica reads the whole topic itself: no group coordination, no
    // commits. The group id is only a label.
    let consumer: BaseConsumer = consumer_config(brokers, "braid-serving")
        .create()
        .map_err(|e| KafkaError::client("creating the speed-feed consumer", e))?;
    let md = consumer
        .fetch_metadata(Some(Topics::SPEED), Duration::from_secs(10))
        .map_err(|e| KafkaError::client("reading metadata of braid.speed", e))?;
    let partitions: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(KafkaError::Broker(format!(
            "topic {} does not exist: create Braid's topics first",
            Topics::SPEED
        )));
    }
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(Topics::SPEED, p, Offset::Beginning)
            .map_err(|e| KafkaError::client("assigning braid.speed", e))?;
        let (_, high) = consumer
            .fetch_watermarks(Topics::SPEED, p, Duration::from_secs(10))
            .map_err(|e| KafkaError::client("reading braid.speed watermarks", e))?;
        ends.push((p, high));
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::client("assigning braid.speed", e))?;
    let feed = Arc::new(SpeedFeed::default());
    let f = feed.clone();
    let stop = shutdown.clone();
    std::thread::Builder::new()
        .name("braid-speed-feed".into())
        .spawn(move || read_loop(consumer, ends, f, stop))
        .map_err(|e| KafkaError::Broker(format!("spawning the speed feed: {e}")))?;
    let ends: BaseConsumer = consumer_config(brokers, "braid-serving")
        .create()
        .map_err(|e| KafkaError::client("creating the lag consumer", e))?;
    let f = feed.clone();
    std::thread::Builder::new()
        .name("braid-lag".into())
        .spawn(move || lag_loop(ends, f, shutdown))
        .map_err(|e| KafkaError::Broker(format!("spawning the lag reader: {e}")))?;
    Ok(feed)
}

/// Reads the end offsets of `braid.readings` every two seconds.
fn lag_loop(consumer: BaseConsumer, feed: Arc<SpeedFeed>, shutdown: CancellationToken) {
    let timeout = Duration::from_secs(2);
    while !shutdown.is_cancelled() {
        let parts: Vec<i32> = consumer
            .fetch_metadata(Some(Topics::READINGS), timeout)
            .ok()
            .and_then(|md| {
                md.topics()
                    .first()
                    .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            })
            .unwrap_or_default();
        for p in parts {
            if let Ok((_, high)) = consumer.fetch_watermarks(Topics::READINGS, p, timeout)
                && let Ok(mut ends) = feed.readings_end.write()
            {
                ends.insert(p, high);
            }
        }
        for _ in 0..20 {
            if shutdown.is_cancelled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn read_loop(
    consumer: BaseConsumer,
    ends: Vec<(i32, i64)>,
    feed: Arc<SpeedFeed>,
    shutdown: CancellationToken,
) {
    let mut pending: std::collections::BTreeMap<i32, i64> =
        ends.into_iter().filter(|(_, end)| *end > 0).collect();
    if pending.is_empty() {
        feed.caught_up.store(true, Ordering::Relaxed);
    }
    while !shutdown.is_cancelled() {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading braid.speed; retrying");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if let Some(&end) = pending.get(&msg.partition())
            && msg.offset() + 1 >= end
        {
            pending.remove(&msg.partition());
            if pending.is_empty() {
                feed.caught_up.store(true, Ordering::Relaxed);
                tracing::info!("speed feed caught up");
            }
        }
        feed.last_message_ms.store(
            msg.timestamp().to_millis().unwrap_or(0).max(0) as u64,
            Ordering::Relaxed,
        );
        let (partition, next) = (msg.partition(), msg.offset() + 1);
        match SpeedMessage::from_bytes(msg.payload().unwrap_or_default()) {
            Ok(m) => {
                let applied = match feed.table.write() {
                    Ok(mut t) => {
                        t.read_to(partition, next);
                        t.apply(m)
                    }
                    Err(_) => false,
                };
                let counter = if applied {
                    &feed.applied
                } else {
                    &feed.ignored
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if let Ok(mut t) = feed.table.write() {
                    t.read_to(partition, next);
                }
                feed.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "undecodable braid.speed message skipped");
            }
        }
    }
}
