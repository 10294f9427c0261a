//! The alerts the speed layer raised: read from `braid.alerts` (the whole
//! topic, by every replica), the newest kept for `GET /v1/alerts` and each
//! new one pushed to `GET /v1/alerts/stream` (server-sent events).
//!
//! A worker that restarts from a checkpoint judges some readings again and
//! may raise an alert twice: alerts are kept once per (device, metric,
//! event time, detector).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_core::detect::Alert;
use braid_kafka::{KafkaError, Topics, consumer_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Alerts kept for `GET /v1/alerts`.
pub const KEPT: usize = 1_000;

type Key = (String, String, i64, String);

/// The alerts feed of a replica.
pub struct AlertFeed {
    recent: Mutex<(VecDeque<Alert>, HashSet<Key>)>,
    stream: broadcast::Sender<Alert>,
    /// Alerts read (after dropping repeats).
    pub total: AtomicU64,
}

impl Default for AlertFeed {
    fn default() -> Self {
        Self {
            recent: Mutex::new((VecDeque::new(), HashSet::new())),
            stream: broadcast::channel(256).0,
            total: AtomicU64::new(0),
        }
    }
}

fn key(a: &Alert) -> Key {
    (
        a.device_id.clone(),
        a.metric.clone(),
        a.ts,
        format!("{:?}", a.flag.detector),
    )
}

impl AlertFeed {
    /// Takes one alert in, unless it is a repeat.
    pub fn push(&self, a: Alert) {
        let Ok(mut r) = self.recent.lock() else {
            return;
        };
        let (list, seen) = &mut *r;
        if !seen.insert(key(&a)) {
            return;
        }
        list.push_back(a.clone());
        while list.len() > KEPT {
            if let Some(old) = list.pop_front() {
                seen.remove(&key(&old));
            }
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        let _ = self.stream.send(a);
    }

    /// The kept alerts matching `device` and `metric`, newest first, at most
    /// `limit`.
    pub fn recent(&self, device: Option<&str>, metric: Option<&str>, limit: usize) -> Vec<Alert> {
        let Ok(r) = self.recent.lock() else {
            return Vec::new();
        };
        r.0.iter()
            .rev()
            .filter(|a| device.is_none_or(|d| a.device_id == d))
            .filter(|a| metric.is_none_or(|m| a.metric == m))
            .take(limit)
            .cloned()
            .collect()
    }

    /// New alerts from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.stream.subscribe()
    }
}

/// Starts reading `braid.alerts` from its start until `shutdown`.
pub fn start(brokers: &str, shutdown: CancellationToken) -> Result<Arc<AlertFeed>, KafkaError> {
    let consumer: BaseConsumer = consumer_config(brokers, "braid-serving-alerts")
        .create()
        .map_err(|e| KafkaError::client("creating the alerts consumer", e))?;
    let md = consumer
        .fetch_metadata(Some(Topics::ALERTS), Duration::from_secs(10))
        .map_err(|e| KafkaError::client("reading metadata of braid.alerts", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in md
        .topics()
        .first()
        .map(|t| t.partitions())
        .unwrap_or_default()
    {
        tpl.add_partition_offset(Topics::ALERTS, p.id(), Offset::Beginning)
            .map_err(|e| KafkaError::client("assigning braid.alerts", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::client("assigning braid.alerts", e))?;
    let feed = Arc::new(AlertFeed::default());
    let f = feed.clone();
    std::thread::Builder::new()
        .name("braid-alerts-feed".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => match serde_json::from_slice::<Alert>(m.payload().unwrap_or_default()) {
                        Ok(a) => f.push(a),
                        Err(e) => tracing::warn!(offset = m.offset(), error = %e, "an unreadable alert in braid.alerts; skipped"),
                    },
                    Some(Err(e)) => tracing::warn!(error = %e, "reading braid.alerts"),
                    None => {}
                }
            }
        })
        .map_err(|e| KafkaError::Broker(format!("spawning the alerts feed: {e}")))?;
    Ok(feed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::detect::{Detector, Flag, Severity};

    fn alert(device: &str, ts: i64) -> Alert {
        Alert {
            device_id: device.into(),
            metric: "m".into(),
            ts,
            value: 1.0,
            flag: Flag {
                detector: Detector::Max,
                score: 2.0,
                expected_min: Some(0.0),
                expected_max: Some(0.5),
                severity: Severity::Critical,
            },
        }
    }

    #[test]
    fn repeats_are_kept_once_and_the_newest_come_first() {
        let f = AlertFeed::default();
        f.push(alert("a", 1));
        f.push(alert("a", 1));
        f.push(alert("b", 2));
        assert_eq!(f.total.load(Ordering::Relaxed), 2);
        let r = f.recent(None, None, 10);
        assert_eq!(r.iter().map(|a| a.ts).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(f.recent(Some("a"), None, 10).len(), 1);
        for i in 0..(KEPT as i64 + 5) {
            f.push(alert("c", 100 + i));
        }
        assert_eq!(f.recent(None, None, usize::MAX).len(), KEPT);
    }
}
