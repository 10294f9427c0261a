//! Braid's serving layer: the merge of batch and speed views with
//! per-window metadata, the query API, the comparison and the dashboard.
//!
//! Each replica reads `braid.speed` from the beginning into a table
//! ([`feed`]), keeping per key the newest absolute state, by the rules of
//! `braid_core::speedlog`, and reads each view's published batch run
//! ([`batch`]) when `CURRENT` moves. Queries ([`query`]) answer
//! `batch(cut) ⊕ speed(epochs at or after cut)` per window and group with
//! the core's `merge_window`, and label every row with its source, state
//! (open, closed, final) and counters. [`compare`] sets batch against
//! speed per window with the reasons they differ. Routes: [`api`];
//! `/metrics`: [`metrics`]; the page at `/`: [`dashboard`]. A replica holds
//! no state of its own, so replicas behind a load balancer answer alike.
//!
//! It meets the other layers only through Kafka topics and stored views,
//! never through their code.

pub mod alerts;
pub mod api;
pub mod batch;
pub mod cache;
pub mod compare;
pub mod dashboard;
pub mod feed;
pub mod forecast;
pub mod metrics;
pub mod query;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use braid_core::ViewSet;
use tokio_util::sync::CancellationToken;

/// What the serving layer needs to run.
#[derive(Clone, Debug)]
pub struct ServingConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Where the published batch views and baselines are (the data
    /// directory's, or another store's: [`braid_store::Layout::publish_in`]).
    pub layout: braid_store::Layout,
    /// The archive store (pending imports are listed from it).
    pub archive: braid_store::Blobs,
    /// The views served.
    pub views: ViewSet,
    /// Where `braid serve` listens alone.
    pub http: SocketAddr,
    /// OpenAPI `paths` of other routes served beside these (the ingest
    /// routes in `braid up`), added to `/openapi.json`.
    pub openapi_extra: Option<serde_json::Value>,
    /// Read tokens: when set, views and comparisons need a token with
    /// `read` access covering the devices asked for.
    pub tokens: Option<Arc<braid_ingest::auth::Tokens>>,
    /// TLS: serve HTTPS with this certificate.
    pub tls: Option<braid_ingest::tls::TlsFiles>,
    /// The anomaly detectors (forecasts use their bounds).
    pub detectors: braid_core::detect::Detectors,
    /// POST every new alert here as JSON, if set.
    pub alert_webhook: Option<String>,
}

/// The OpenAPI document of the query routes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A running replica's shared state.
pub struct Serving {
    /// The views.
    pub views: ViewSet,
    /// The speed side.
    pub feed: Arc<feed::SpeedFeed>,
    /// The batch side.
    pub batch: batch::BatchViews,
    /// The archive store (pending imports).
    pub archive: braid_store::Blobs,
    /// Requests served, for `/metrics`.
    pub http: metrics::HttpMetrics,
    /// The OpenAPI document `/openapi.json` serves.
    pub openapi: serde_json::Value,
    /// Read tokens (see [`ServingConfig::tokens`]).
    pub tokens: Option<Arc<braid_ingest::auth::Tokens>>,
    /// The alerts from `braid.alerts`.
    pub alerts: Arc<alerts::AlertFeed>,
    /// The seasonal baselines, for forecasts.
    pub baselines: forecast::BaselineCache,
    /// The anomaly detectors.
    pub detectors: braid_core::detect::Detectors,
    /// The alert webhook's counts, when one is set.
    pub webhook: Option<Arc<webhook::WebhookStats>>,
    /// Merged answers kept while what they were made from is unchanged.
    pub answers: cache::AnswerCache,
}

/// How many bytes of JSON rows a replica keeps ([`cache::AnswerCache`]).
pub const ANSWER_CACHE_BYTES: usize = 64 << 20;

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServingRunError {
    /// Kafka could not be read.
    #[error(transparent)]
    Kafka(#[from] braid_kafka::KafkaError),
    /// The certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] braid_ingest::tls::TlsError),
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Starts the replica's feeds; they stop with `shutdown`.
pub fn start(
    config: &ServingConfig,
    shutdown: CancellationToken,
) -> Result<Arc<Serving>, ServingRunError> {
    let alerts = alerts::start(&config.brokers, shutdown.clone())?;
    let webhook = config
        .alert_webhook
        .as_deref()
        .map(|url| webhook::start(&config.brokers, url, shutdown.clone()))
        .transpose()?;
    let feed = feed::start(&config.brokers, shutdown)?;
    let mut openapi: serde_json::Value =
        serde_json::from_str(OPENAPI).unwrap_or(serde_json::Value::Null);
    if let (Some(paths), Some(serde_json::Value::Object(extra))) = (
        openapi.get_mut("paths").and_then(|p| p.as_object_mut()),
        &config.openapi_extra,
    ) {
        paths.extend(extra.clone());
    }
    Ok(Arc::new(Serving {
        views: config.views.clone(),
        feed,
        batch: batch::BatchViews::new(config.layout.clone()),
        archive: config.archive.clone(),
        http: metrics::HttpMetrics::default(),
        openapi,
        tokens: config.tokens.clone(),
        alerts,
        baselines: forecast::BaselineCache::new(config.layout.clone()),
        detectors: config.detectors.clone(),
        webhook,
        answers: cache::AnswerCache::new(ANSWER_CACHE_BYTES),
    }))
}

/// Serves the query routes alone until `shutdown` is cancelled.
pub async fn run(
    config: ServingConfig,
    shutdown: CancellationToken,
) -> Result<(), ServingRunError> {
    let tls = config
        .tls
        .as_ref()
        .map(braid_ingest::tls::server_config)
        .transpose()?;
    let serving = start(&config, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| ServingRunError::Bind {
            addr: config.http,
            source,
        })?;
    tracing::info!(addr = %config.http, tls = tls.is_some(), "serving layer listening");
    let stop = shutdown.clone();
    braid_ingest::tls::serve(
        api::routes(serving),
        listener,
        tls,
        async move { stop.cancelled().await },
        braid_ingest::DRAIN,
    )
    .await;
    Ok(())
}
