//! MQTT ingest: `braid ingest --mqtt HOST:PORT` subscribes with QoS 1 to
//! `braid/<device>/readings` (the filter `braid/+/readings`) and writes what
//! devices publish into `braid.readings`, with the gateway's validation.
//!
//! A message's payload is what `POST /v1/readings` takes: a JSON object, a
//! JSON array or NDJSON. Every reading in it must be of the topic's device.
//! The valid readings go to Kafka (`acks=all`); each refused record, or the
//! whole payload when it does not parse, goes to `braid.readings.dlq` with
//! a `reason` header naming the record and field. Only once Kafka
//! acknowledged both is the message acknowledged to the MQTT broker
//! (manual PUBACK, in the order the messages came), so a gateway that dies
//! in between gets the message again from the broker's persistent session
//! (`clean_session=false`): delivered at least once, and the views drop
//! the second copy by the dedup rule. A Kafka outage holds the message
//! unacknowledged and retries it, so nothing the broker handed over is lost.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::decode::{Format, decode_body};

/// Where and how to subscribe.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// The broker, `HOST:PORT`.
    pub addr: String,
    /// The client id; the broker keeps its session (and the messages not
    /// yet acknowledged) under it, so give each gateway its own.
    pub client_id: String,
}

impl MqttConfig {
    /// The broker's host and port.
    pub fn host_port(&self) -> Result<(String, u16), MqttError> {
        self.addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| MqttError::Address(self.addr.clone()))
    }
}

/// The topic filter: one level, the device, between `braid/` and
/// `/readings`.
pub const TOPIC_FILTER: &str = "braid/+/readings";

/// Requests queued from the client to its event loop (PUBACKs, mostly).
const REQUESTS: usize = 256;

/// Why MQTT ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The address is not `HOST:PORT`.
    #[error("--mqtt `{0}`: expected HOST:PORT")]
    Address(String),
}

/// What MQTT ingest did, for its log line at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct MqttStats {
    /// Messages acknowledged to the broker.
    pub messages: u64,
    /// Readings written to `braid.readings`.
    pub readings: u64,
    /// Records (or whole payloads) sent to the dead-letter topic.
    pub dead_lettered: u64,
}

/// The device of a topic `braid/<device>/readings`.
pub fn device_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("braid/")?
        .strip_suffix("/readings")
        .filter(|d| !d.is_empty() && !d.contains('/'))
}

/// What one message came to: readings to write and dead letters (reason,
/// source) to send, the payload travelling with each.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Valid readings of the topic's device.
    pub readings: Vec<braid_core::Reading>,
    /// Each refused record, or the whole payload: the reason.
    pub refused: Vec<String>,
}

/// Decodes and validates one message of `topic` as the gateway would, and
/// refuses readings of another device than the topic's.
pub fn judge(topic: &str, payload: &[u8], now: i64, limits: &braid_core::Limits) -> Outcome {
    let Some(device) = device_of(topic) else {
        return Outcome {
            readings: Vec::new(),
            refused: vec![format!("topic `{topic}`: expected braid/<device>/readings")],
        };
    };
    let trimmed = payload.trim_ascii_start();
    let format = if trimmed.starts_with(b"[") || !trimmed.contains(&b'\n') {
        Format::Json
    } else {
        Format::Ndjson
    };
    let decoded = match decode_body(format, payload, now, limits) {
        Ok(d) => d,
        Err(e) => {
            return Outcome {
                readings: Vec::new(),
                refused: vec![e.to_string()],
            };
        }
    };
    let mut out = Outcome {
        readings: Vec::with_capacity(decoded.readings.len()),
        refused: decoded.rejected.iter().map(ToString::to_string).collect(),
    };
    for (i, r) in decoded.readings.into_iter().enumerate() {
        if r.device_id == device {
            out.readings.push(r);
        } else {
            out.refused.push(format!(
                "reading {i}: field `device_id`: `{}` published on the topic of device `{device}`",
                r.device_id
            ));
        }
    }
    out
}

/// Handles one message until Kafka acknowledged all of it (retrying while
/// Kafka cannot, until `shutdown`); whether it may be acknowledged.
async fn handle(gw: &Gateway, p: &Publish, shutdown: &CancellationToken) -> Option<(u64, u64)> {
    let now = (gw.clock)();
    let outcome = judge(&p.topic, &p.payload, now, &gw.config.limits);
    let source = format!("mqtt:{}", p.topic);
    let mut pause = Duration::from_millis(200);
    loop {
        let mut sent = Ok(());
        if !outcome.readings.is_empty() {
            sent = gw.sink.send(&outcome.readings, now).await.map(|_| ());
        }
        if sent.is_ok() {
            for reason in &outcome.refused {
                sent = gw.sink.dead_letter(&p.payload, reason, &source).await;
                if sent.is_err() {
                    break;
                }
            }
        }
        match sent {
            Ok(()) => {
                gw.metrics.accepted(outcome.readings.len());
                return Some((outcome.readings.len() as u64, outcome.refused.len() as u64));
            }
            Err(e) => {
                tracing::warn!(topic = %p.topic, error = %e, "kafka did not acknowledge an MQTT message; holding it and retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Subscribes and ingests until `shutdown`; the messages in hand are
/// finished (or left unacknowledged, for the broker to deliver again).
pub async fn run(
    config: MqttConfig,
    gw: Arc<Gateway>,
    shutdown: CancellationToken,
) -> Result<MqttStats, MqttError> {
    let (host, port) = config.host_port()?;
    let mut options = MqttOptions::new(config.client_id.clone(), host, port);
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_manual_acks(true)
        .set_clean_session(false)
        .set_max_packet_size(gw.config.max_body_bytes + 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(options, REQUESTS);
    // Handled in parallel, acknowledged in arrival order. Unbounded so the
    // event loop is never held up (it must run for the PUBACKs to go out):
    // the broker bounds what it sends before those PUBACKs (mosquitto: 20
    // messages in flight per client by default).
    let (tx, mut rx) =
        mpsc::unbounded_channel::<(Publish, tokio::task::JoinHandle<Option<(u64, u64)>>)>();
    let acker = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut stats = MqttStats::default();
            while let Some((p, work)) = rx.recv().await {
                // Not finished (shutdown) or not acknowledged (the
                // connection went): the broker delivers it again.
                if let Ok(Some((readings, dead))) = work.await
                    && client.ack(&p).await.is_ok()
                {
                    stats.messages += 1;
                    stats.readings += readings;
                    stats.dead_lettered += dead;
                }
            }
            stats
        })
    };
    tracing::info!(broker = %config.addr, filter = TOPIC_FILTER, "MQTT ingest connecting");
    let mut pause = Duration::from_millis(200);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                pause = Duration::from_millis(200);
                tracing::info!(broker = %config.addr, session_present = ack.session_present, "MQTT connected");
                if let Err(e) = client.try_subscribe(TOPIC_FILTER, QoS::AtLeastOnce) {
                    tracing::warn!(error = %e, "subscribing to {TOPIC_FILTER}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let (gw, stop) = (gw.clone(), shutdown.clone());
                let work = {
                    let p = p.clone();
                    tokio::spawn(async move { handle(&gw, &p, &stop).await })
                };
                if tx.send((p, work)).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(broker = %config.addr, error = %e, "MQTT connection lost; reconnecting in {pause:?}");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    drop(tx);
    // Acknowledge what was finished; keep polling so the PUBACKs go out.
    let mut acker = acker;
    let stats = loop {
        tokio::select! {
            done = &mut acker => break done.unwrap_or_default(),
            _ = events.poll() => {}
            () = tokio::time::sleep(crate::DRAIN) => {
                tracing::warn!("MQTT messages still in hand after {:?}; the broker delivers them again", crate::DRAIN);
                break MqttStats::default();
            }
        }
    };
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
    tracing::info!(
        messages = stats.messages,
        readings = stats.readings,
        dead_lettered = stats.dead_lettered,
        "MQTT ingest stopped"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_names_the_device() {
        assert_eq!(device_of("braid/lot-7/readings"), Some("lot-7"));
        assert_eq!(device_of("braid//readings"), None);
        assert_eq!(device_of("braid/a/b/readings"), None);
        assert_eq!(device_of("other/a/readings"), None);
    }

    #[test]
    fn readings_of_another_device_are_refused_by_record_and_field() {
        let limits = braid_core::Limits::default();
        let now = 1_700_000_000_000;
        let body = format!(
            r#"[{{"device_id":"d1","metric":"m","ts":{now},"value":1,"seq":1}},
                {{"device_id":"d2","metric":"m","ts":{now},"value":2,"seq":2}},
                {{"device_id":"d1","metric":"m","ts":{now},"value":"x","seq":3}}]"#
        );
        let o = judge("braid/d1/readings", body.as_bytes(), now, &limits);
        assert_eq!(o.readings.len(), 1);
        assert_eq!(o.refused.len(), 2, "{:?}", o.refused);
        assert!(
            o.refused.iter().any(|r| r.contains("value")),
            "{:?}",
            o.refused
        );
        assert!(
            o.refused
                .iter()
                .any(|r| r.contains("device_id") && r.contains("d2")),
            "{:?}",
            o.refused
        );
        let nd = format!(
            "{{\"device_id\":\"d1\",\"metric\":\"m\",\"ts\":{now},\"value\":1}}\n{{\"device_id\":\"d1\",\"metric\":\"m\",\"ts\":{now},\"value\":2}}\n"
        );
        assert_eq!(
            judge("braid/d1/readings", nd.as_bytes(), now, &limits)
                .readings
                .len(),
            2
        );
        let broken = judge("braid/d1/readings", b"{", now, &limits);
        assert!(broken.readings.is_empty() && broken.refused.len() == 1);
        assert_eq!(judge("nope", b"{}", now, &limits).refused.len(), 1);
    }
}
