//! Where simulated readings go, and what counts as delivered.
//!
//! A batch of readings is sent until it is acknowledged: straight to Kafka
//! through the ingest crate's `ReadingSink` (`acks=all`), or as one JSON
//! array to an ingest gateway's `POST /v1/readings`, which answers 2xx only
//! once Kafka acknowledged it. What is not acknowledged (a 503 or 429, a
//! 5xx, a dropped connection, a Kafka timeout) is sent again, the same
//! readings, after the `Retry-After` the gateway asks for or a growing
//! pause, as a well-behaved device does; a refusal (400, 401, 403, 413,
//! 422) is logged and not retried. Each acknowledged reading can be
//! appended to a file (NDJSON: `device_id`, `metric`, `ts`, `seq`) that
//! `braid verify --acked` checks against the log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_core::Reading;
use braid_ingest::ReadingSink;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{SimError, now_ms};

/// Where readings go.
#[derive(Clone, Debug)]
pub enum Target {
    /// Kafka bootstrap servers: straight into `braid.readings`.
    Kafka(String),
    /// An ingest gateway, `http://HOST:PORT`, with an optional bearer token.
    Http {
        /// The gateway's base URL.
        url: String,
        /// Its ingest token.
        token: Option<String>,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kafka(b) => write!(f, "Kafka at {b}"),
            Self::Http { url, .. } => write!(f, "{url}/v1/readings"),
        }
    }
}

enum Via {
    Kafka(ReadingSink),
    Http {
        client: reqwest::Client,
        url: String,
        token: Option<String>,
    },
}

/// Sends batches until they are acknowledged.
pub struct Sender {
    via: Via,
    acked: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    delivered: u64,
    refused: u64,
}

/// What one attempt came to.
enum Attempt {
    Acked,
    Refused(String),
    Retry {
        after: Option<Duration>,
        why: String,
    },
}

impl Sender {
    /// Connects to `target`; with `acked`, appends acknowledged readings
    /// there.
    pub async fn connect(target: &Target, acked: Option<&Path>) -> Result<Self, SimError> {
        let via = match target {
            Target::Kafka(brokers) => Via::Kafka(
                ReadingSink::connect(brokers, Duration::from_secs(10))
                    .await
                    .map_err(braid_ingest::SinkError::from)?,
            ),
            Target::Http { url, token } => Via::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| SimError::Http(e.to_string()))?,
                url: format!("{}/v1/readings", url.trim_end_matches('/')),
                token: token.clone(),
            },
        };
        let acked = match acked {
            None => None,
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SimError::Acked {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some((path.to_path_buf(), std::io::BufWriter::new(file)))
            }
        };
        Ok(Self {
            via,
            acked,
            delivered: 0,
            refused: 0,
        })
    }

    async fn attempt(&self, readings: &[Reading]) -> Attempt {
        match &self.via {
            Via::Kafka(sink) => match sink.send(readings, now_ms()).await {
                Ok(_) => Attempt::Acked,
                Err(e) => Attempt::Retry {
                    after: None,
                    why: e.to_string(),
                },
            },
            Via::Http { client, url, token } => {
                let mut req = client.post(url).json(readings);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                match req.send().await {
                    Err(e) => Attempt::Retry {
                        after: None,
                        why: e.to_string(),
                    },
                    Ok(r) if r.status().is_success() => Attempt::Acked,
                    Ok(r) => {
                        let status = r.status();
                        let after = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        let body = r.text().await.unwrap_or_default();
                        let why = format!("{status}: {}", body.trim());
                        if status.is_server_error() || status.as_u16() == 429 {
                            Attempt::Retry { after, why }
                        } else {
                            Attempt::Refused(why)
                        }
                    }
                }
            }
        }
    }

    /// Sends `readings` until acknowledged, refused, or `stop` (then they
    /// are not counted as delivered).
    pub async fn send(
        &mut self,
        readings: &[Reading],
        stop: &CancellationToken,
    ) -> Result<(), SimError> {
        if readings.is_empty() {
            return Ok(());
        }
        let mut pause = Duration::from_millis(100);
        loop {
            match self.attempt(readings).await {
                Attempt::Acked => return self.acknowledged(readings),
                Attempt::Refused(why) => {
                    self.refused += readings.len() as u64;
                    tracing::warn!(readings = readings.len(), reason = %why, "simulator: readings refused; not retried");
                    return Ok(());
                }
                Attempt::Retry { after, why } => {
                    let wait = after.unwrap_or(pause);
                    tracing::warn!(reason = %why, retry_in_ms = wait.as_millis() as u64, "simulator: readings not acknowledged; sending them again");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn acknowledged(&mut self, readings: &[Reading]) -> Result<(), SimError> {
        self.delivered += readings.len() as u64;
        if let Some((path, w)) = &mut self.acked {
            let io = |source| SimError::Acked {
                path: path.clone(),
                source,
            };
            for r in readings {
                let line = json!({ "device_id": r.device_id, "metric": r.metric, "ts": r.ts, "seq": r.seq });
                writeln!(w, "{line}").map_err(io)?;
            }
            w.flush().map_err(io)?;
        }
        Ok(())
    }

    /// Readings refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Flushes and returns readings acknowledged.
    pub fn finish(mut self) -> Result<u64, SimError> {
        if let Some((path, w)) = &mut self.acked {
            w.flush().map_err(|source| SimError::Acked {
                path: path.clone(),
                source,
            })?;
        }
        Ok(self.delivered)
    }
}
