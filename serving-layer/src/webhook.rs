//! The optional alert webhook: every alert in `braid.alerts` POSTed as
//! JSON (the alert's own form, as `GET /v1/alerts` gives it) to one URL.
//!
//! The sender is a Kafka consumer group of its own (`braid-alert-webhook`):
//! with several replicas each alert is sent by one of them, and the group's
//! committed offset moves past an alert only once it was delivered (a 2xx)
//! or given up on after [`ATTEMPTS`] tries, so a restart sends nothing
//! twice that was delivered and skips nothing that was not (at least once;
//! a receiver can key on device, metric, ts and detector). A new group
//! starts at the topic's beginning.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use braid_core::detect::Alert;
use braid_kafka::{KafkaError, Topics, consumer_config};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

/// The consumer group of the webhook senders.
pub const GROUP: &str = "braid-alert-webhook";
/// Tries per alert before it is given up on.
pub const ATTEMPTS: u32 = 5;
/// How long one POST may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What the sender did, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Alerts delivered (2xx).
    pub delivered: AtomicU64,
    /// Failed tries (retried, or given up on).
    pub failures: AtomicU64,
    /// Alerts given up on after every try failed.
    pub dropped: AtomicU64,
}

/// Starts sending every alert to `url` until `shutdown`.
pub fn start(
    brokers: &str,
    url: &str,
    shutdown: CancellationToken,
) -> Result<Arc<WebhookStats>, KafkaError> {
    let consumer: StreamConsumer = consumer_config(brokers, GROUP)
        .create()
        .map_err(|e| KafkaError::client("creating the webhook consumer", e))?;
    consumer
        .subscribe(&[Topics::ALERTS])
        .map_err(|e| KafkaError::client("subscribing to braid.alerts", e))?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| KafkaError::Broker(format!("building the webhook client: {e}")))?;
    let stats = Arc::new(WebhookStats::default());
    let s = stats.clone();
    let url = url.to_string();
    tracing::info!(url = %url, "alert webhook on");
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = consumer.recv() => m,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook: reading braid.alerts");
                    continue;
                }
            };
            match serde_json::from_slice::<Alert>(m.payload().unwrap_or_default()) {
                Ok(a) => {
                    if !deliver(&client, &url, &a, &s, &shutdown).await {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(url = %url, device = %a.device_id, metric = %a.metric, ts = a.ts, "webhook: alert given up on after {ATTEMPTS} tries");
                    }
                }
                Err(e) => {
                    tracing::warn!(offset = m.offset(), error = %e, "webhook: an unreadable alert in braid.alerts; skipped")
                }
            }
            if let Err(e) = consumer.commit_message(&m, CommitMode::Async) {
                tracing::warn!(error = %e, "webhook: committing the offset");
            }
        }
    });
    Ok(stats)
}

/// POSTs one alert, retrying with backoff (0.5 s, 1 s, 2 s, ...).
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    a: &Alert,
    s: &WebhookStats,
    shutdown: &CancellationToken,
) -> bool {
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match client.post(url).json(a).send().await {
            Ok(r) if r.status().is_success() => {
                s.delivered.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Ok(r) => {
                tracing::warn!(url = %url, status = %r.status(), attempt, "webhook refused an alert")
            }
            Err(e) => tracing::warn!(url = %url, error = %e, attempt, "webhook unreachable"),
        }
        s.failures.fetch_add(1, Ordering::Relaxed);
        if attempt < ATTEMPTS {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait *= 2;
        }
    }
    false
}
