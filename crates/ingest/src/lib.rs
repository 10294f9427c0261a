//! Braid ingest: the decoders of outside input (JSON, NDJSON, InfluxDB line
//! protocol) and the HTTP gateway that writes readings into
//! `braid.readings`, answering only once Kafka acknowledged them.
//!
//! Shared rather than a layer: `braid up` and `braid serve` mount these
//! routes beside the serving layer's on one port, and `braid ingest` runs
//! them alone ([`run`]). What it deliberately does not do: aggregate,
//! archive or read anything back. It validates with the core's rules and
//! hands the readings to Kafka.

pub mod auth;
pub mod decode;
pub mod gateway;
pub mod line_protocol;
pub mod mqtt;
pub mod partition;
pub mod sink;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use gateway::{Gateway, GatewayConfig, system_clock};
pub use sink::{ReadingSink, SinkError};

/// What `braid ingest` needs.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Where to listen.
    pub http: SocketAddr,
    /// Gateway limits.
    pub gateway: GatewayConfig,
    /// How long a write waits for Kafka before answering 503.
    pub ack_timeout: Duration,
    /// Allow listening beyond loopback without ingest tokens.
    pub insecure: bool,
    /// An MQTT broker to subscribe to as well (see [`mqtt`]).
    pub mqtt: Option<mqtt::MqttConfig>,
    /// TLS: serve HTTPS with this certificate (see [`tls`]).
    pub tls: Option<tls::TlsFiles>,
}

/// Why ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestRunError {
    /// Kafka could not be reached at start.
    #[error(transparent)]
    Kafka(#[from] braid_kafka::KafkaError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The MQTT settings are wrong.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    /// Listening beyond loopback without tokens was not allowed.
    #[error(
        "refusing to listen on {0} beyond loopback without tokens: give --tokens FILE (make one with `braid token new`), listen on loopback, or pass --insecure"
    )]
    Insecure(SocketAddr),
}

/// Checks that `addr` may be served: beyond loopback only with tokens, or
/// when told `insecure`.
pub fn check_exposure(
    addr: SocketAddr,
    insecure: bool,
    tokens: bool,
) -> Result<(), IngestRunError> {
    if addr.ip().is_loopback() || insecure || tokens {
        Ok(())
    } else {
        Err(IngestRunError::Insecure(addr))
    }
}

/// Builds the shared gateway state.
pub async fn gateway(config: &IngestConfig) -> Result<Arc<Gateway>, IngestRunError> {
    let sink = ReadingSink::connect(&config.brokers, config.ack_timeout).await?;
    Ok(Arc::new(Gateway::new(
        sink,
        config.gateway.clone(),
        system_clock,
    )))
}

/// How long in-flight requests may take to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves the ingest routes alone until `shutdown` is cancelled, then
/// drains: `/readyz` answers 503 at once, no new connection is accepted,
/// requests in flight finish (each within the ack timeout; all within
/// [`DRAIN`]), and the producer is flushed.
pub async fn run(config: IngestConfig, shutdown: CancellationToken) -> Result<(), IngestRunError> {
    check_exposure(
        config.http,
        config.insecure,
        config.gateway.tokens.is_some(),
    )?;
    if let Some(m) = &config.mqtt {
        m.host_port()?;
    }
    let tls_config = config.tls.as_ref().map(tls::server_config).transpose()?;
    let gw = gateway(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| IngestRunError::Bind {
            addr: config.http,
            source,
        })?;
    tracing::info!(addr = %config.http, tls = tls_config.is_some(), "ingest gateway listening");
    let mqtt = config
        .mqtt
        .clone()
        .map(|m| tokio::spawn(mqtt::run(m, gw.clone(), shutdown.clone())));
    let routes = gateway::filters::routes(gw.clone());
    let draining = gw.clone();
    let stop = shutdown.clone();
    tls::serve(
        routes,
        listener,
        tls_config,
        async move {
            stop.cancelled().await;
            draining
                .metrics
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("shutting down: not ready, draining requests in flight");
        },
        DRAIN,
    )
    .await;
    if let Some(m) = mqtt {
        match m.await {
            Ok(r) => {
                r?;
            }
            Err(e) => tracing::warn!(error = %e, "MQTT ingest panicked"),
        }
    }
    gw.sink.flush(DRAIN)?;
    tracing::info!("drained and flushed");
    Ok(())
}
