//! Readings into `braid.readings`, acknowledged only when durable.
//!
//! Readings of one request are grouped by partition (Kafka's murmur2 of the
//! device id) and packed into as few messages as that allows: one per
//! partition, split only past [`MAX_MESSAGE_BYTES`]. Every message carries
//! the accept time as its Kafka timestamp, which becomes the readings'
//! `ingest_ts`. [`ReadingSink::send`] returns only after Kafka acknowledged
//! every message with `acks=all`, or fails: a caller never reports success
//! for data that is not durable. A failed send may still land later (the
//! idempotent producer keeps retrying until its delivery timeout); a client
//! that retries with the same readings is then covered by the dedup rule.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use braid_core::Reading;
use braid_core::codec::encode_message;
use braid_kafka::{KafkaError, Topics, producer_config};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use thiserror::Error;

use crate::partition::partition_for;

/// Largest payload Braid puts in one message (Kafka's default limit is 1 MB).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// Why readings were not acknowledged.
#[derive(Debug, Error)]
pub enum SinkError {
    /// Kafka did not acknowledge in time: retry later.
    #[error("kafka did not acknowledge within {0:?}; retry later")]
    Timeout(Duration),
    /// Kafka refused or failed a message.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// A producer into `braid.readings`.
///
/// After a failed send the producer is rebuilt (at most every
/// [`REBUILD_AFTER`]): a broker that restarted may no longer know the
/// idempotent producer's id, and tansu 0.6's SQLite engine then fails every
/// produce of the old session instead of asking for a new one. Nothing
/// acknowledged is affected: what the old producer still held was answered
/// with a 503.
#[derive(Clone)]
pub struct ReadingSink {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    producer: RwLock<FutureProducer>,
    last_rebuild: Mutex<Instant>,
    partitions: AtomicI32,
    ack_timeout: Duration,
}

/// Least time between two rebuilds of the producer.
pub const REBUILD_AFTER: Duration = Duration::from_secs(3);

impl ReadingSink {
    /// Connects to `brokers` and learns the partition count of
    /// `braid.readings`. `ack_timeout` bounds how long a send waits.
    pub async fn connect(brokers: &str, ack_timeout: Duration) -> Result<Self, KafkaError> {
        Self::with_config(Self::producer_config(brokers), ack_timeout).await
    }

    /// The gateway's producer settings: Braid's durable producer with a
    /// shorter linger (0.5 ms, not 2), since every HTTP answer waits for its
    /// acknowledgement. Measured with 64 connections sending one reading a
    /// request: twice the requests/s of 2 ms; 0 ms sends so many small
    /// batches that the in-flight limit makes it slower than 2 ms.
    pub fn producer_config(brokers: &str) -> ClientConfig {
        let mut c = producer_config(brokers);
        c.set("linger.ms", "0.5");
        c
    }

    /// As [`ReadingSink::connect`] with explicit client settings.
    pub async fn with_config(
        config: ClientConfig,
        ack_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let producer: FutureProducer = config
            .create()
            .map_err(|e| KafkaError::client("creating the producer", e))?;
        let sink = Self {
            inner: Arc::new(Inner {
                config,
                producer: RwLock::new(producer),
                last_rebuild: Mutex::new(Instant::now()),
                partitions: AtomicI32::new(0),
                ack_timeout,
            }),
        };
        sink.refresh_partitions().await?;
        Ok(sink)
    }

    fn producer(&self) -> FutureProducer {
        match self.inner.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the producer with a fresh one (a new idempotent session),
    /// unless that was done less than [`REBUILD_AFTER`] ago.
    fn rebuild_after_failure(&self) {
        let Ok(mut last) = self.inner.last_rebuild.lock() else {
            return;
        };
        if last.elapsed() < REBUILD_AFTER {
            return;
        }
        *last = Instant::now();
        match self.inner.config.create::<FutureProducer>() {
            Ok(fresh) => {
                let old = match self.inner.producer.write() {
                    Ok(mut p) => std::mem::replace(&mut *p, fresh),
                    Err(_) => return,
                };
                tracing::info!("kafka producer rebuilt after a failed send");
                // Dropping purges and joins the old client: not on a runtime thread.
                std::thread::spawn(move || drop(old));
            }
            Err(e) => tracing::warn!(error = %e, "rebuilding the kafka producer failed"),
        }
    }

    /// Re-reads the partition count of `braid.readings`.
    pub async fn refresh_partitions(&self) -> Result<i32, KafkaError> {
        let producer = self.producer();
        let n = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(Topics::READINGS), Duration::from_secs(10))
                .map_err(|e| KafkaError::client("reading metadata of braid.readings", e))
                .map(|m| {
                    m.topics()
                        .first()
                        .map_or(0, |t| t.partitions().len() as i32)
                })
        })
        .await
        .map_err(|e| KafkaError::Broker(format!("metadata task: {e}")))??;
        if n == 0 {
            return Err(KafkaError::Broker(format!(
                "topic {} has no partitions: create it first (braid up and braid broker do)",
                Topics::READINGS
            )));
        }
        self.inner.partitions.store(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Partitions of `braid.readings` as last read.
    pub fn partitions(&self) -> i32 {
        self.inner.partitions.load(Ordering::Relaxed)
    }

    /// Sends `readings` stamped with `ingest_ts` and waits for every
    /// acknowledgement. Returns the number of Kafka messages used.
    pub async fn send(&self, readings: &[Reading], ingest_ts: i64) -> Result<usize, SinkError> {
        let result = self.send_once(readings, ingest_ts).await;
        if result.is_err() {
            self.rebuild_after_failure();
        }
        result
    }

    async fn send_once(&self, readings: &[Reading], ingest_ts: i64) -> Result<usize, SinkError> {
        let producer = self.producer();
        let ack_timeout = self.inner.ack_timeout;
        let batches = pack(readings, self.partitions());
        let mut pending = Vec::with_capacity(batches.len());
        for (partition, payload, key) in &batches {
            let mut record = FutureRecord::to(Topics::READINGS)
                .payload(payload.as_slice())
                .partition(*partition)
                .timestamp(ingest_ts);
            if let Some(k) = key {
                record = record.key(k.as_str());
            }
            match producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return Err(KafkaError::client("queueing readings", e).into()),
            }
        }
        let all = futures::future::join_all(pending);
        let results = tokio::time::timeout(ack_timeout, all)
            .await
            .map_err(|_| SinkError::Timeout(ack_timeout))?;
        for r in results {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(KafkaError::client("writing readings", e).into()),
                Err(_) => return Err(SinkError::Timeout(ack_timeout)),
            }
        }
        Ok(batches.len())
    }

    /// Writes `payload` to `braid.readings.dlq` with its `reason` and
    /// `source` as headers, and waits for the acknowledgement.
    pub async fn dead_letter(
        &self,
        payload: &[u8],
        reason: &str,
        source: &str,
    ) -> Result<(), SinkError> {
        let headers = braid_kafka::topics::dead_letter_headers(reason, source);
        let record = FutureRecord::to(Topics::READINGS_DLQ)
            .key(source)
            .payload(payload)
            .headers(headers);
        let ack_timeout = self.inner.ack_timeout;
        let result = match self.producer().send_result(record) {
            Err((e, _)) => Err(KafkaError::client("queueing a dead letter", e).into()),
            Ok(delivery) => match tokio::time::timeout(ack_timeout, delivery).await {
                Err(_) | Ok(Err(_)) => Err(SinkError::Timeout(ack_timeout)),
                Ok(Ok(Err((e, _)))) => Err(KafkaError::client("writing a dead letter", e).into()),
                Ok(Ok(Ok(_))) => Ok(()),
            },
        };
        if result.is_err() {
            self.rebuild_after_failure();
        }
        result
    }

    /// Waits until everything queued is delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer()
            .flush(timeout)
            .map_err(|e| KafkaError::client("flushing the producer", e))
    }
}

/// Groups readings by partition and encodes each group into messages of at
/// most [`MAX_MESSAGE_BYTES`] (a single larger reading goes alone). A message
/// whose readings all come from one device is keyed by it.
pub fn pack(readings: &[Reading], partitions: i32) -> Vec<(i32, Vec<u8>, Option<String>)> {
    let mut by_partition: BTreeMap<i32, Vec<&Reading>> = BTreeMap::new();
    for r in readings {
        by_partition
            .entry(partition_for(&r.device_id, partitions))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for (partition, rs) in by_partition {
        let owned: Vec<Reading> = rs.into_iter().cloned().collect();
        let mut start = 0;
        while start < owned.len() {
            // Grow the chunk while it fits; estimate from the first reading.
            let mut end = owned.len();
            loop {
                let payload = encode_message(&owned[start..end]);
                if payload.len() <= MAX_MESSAGE_BYTES || end - start == 1 {
                    let chunk = &owned[start..end];
                    let key = chunk
                        .iter()
                        .all(|r| r.device_id == chunk[0].device_id)
                        .then(|| chunk[0].device_id.clone());
                    out.push((partition, payload, key));
                    break;
                }
                end = start + (end - start).div_ceil(2);
            }
            start = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::codec::decode_message;

    fn r(device: &str, i: usize) -> Reading {
        Reading {
            device_id: device.into(),
            metric: "m".into(),
            ts: i as i64,
            value: i as f64,
            seq: Some(i as u64),
            tags: Default::default(),
        }
    }

    #[test]
    fn one_message_per_partition_and_nothing_lost() {
        let readings: Vec<Reading> = (0..1000).map(|i| r(&format!("d{}", i % 37), i)).collect();
        let packed = pack(&readings, 4);
        assert!(packed.len() <= 4);
        let mut seen = 0;
        for (p, payload, _) in &packed {
            for rr in decode_message(payload).unwrap() {
                let rr = rr.unwrap();
                assert_eq!(partition_for(&rr.device_id, 4), *p);
                seen += 1;
            }
        }
        assert_eq!(seen, 1000);
    }

    #[test]
    fn large_groups_split_under_the_limit() {
        let readings: Vec<Reading> = (0..40_000).map(|i| r("one-device", i)).collect();
        let packed = pack(&readings, 4);
        assert!(packed.len() > 1);
        assert!(packed.iter().all(|(_, p, k)| p.len() <= MAX_MESSAGE_BYTES && k.as_deref() == Some("one-device")));
        let total: usize = packed
            .iter()
            .map(|(_, p, _)| decode_message(p).unwrap().len())
            .sum();
        assert_eq!(total, 40_000);
    }
}
