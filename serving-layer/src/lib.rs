//! Braid's serving layer: the merge of batch and speed views with
//! per-window metadata, and the query API.
//!
//! Each replica reads `braid.speed` from the beginning into a table
//! ([`feed`]), keeping per key the newest absolute state, by the rules of
//! `braid_core::speedlog`; it holds no state of its own, so replicas behind a
//! load balancer answer alike. Queries ([`query`]) merge a view's states per
//! window and group with the core's `merge_window` and label every row with
//! its source, state (open, closed, final) and counters. Routes: [`api`].
//!
//! It meets the other layers only through Kafka topics and stored views,
//! never through their code. What it does not do yet: read batch views (the
//! batch layer is not built), so every row's source is `speed` and no window
//! is final; the comparison, Arrow output, metrics and the dashboard are not
//! built either.

pub mod api;
pub mod batch;
pub mod feed;
pub mod query;

use std::net::SocketAddr;
use std::sync::Arc;

use braid_core::ViewSet;
use tokio_util::sync::CancellationToken;

/// What the serving layer needs to run.
#[derive(Clone, Debug)]
pub struct ServingConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The data directory (batch views, when there are some).
    pub data_dir: std::path::PathBuf,
    /// The views served.
    pub views: ViewSet,
    /// Where `braid serve` listens alone.
    pub http: SocketAddr,
}

/// A running replica's shared state.
pub struct Serving {
    /// The views.
    pub views: ViewSet,
    /// The speed side.
    pub feed: Arc<feed::SpeedFeed>,
    /// The batch side.
    pub batch: batch::BatchViews,
}

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServingRunError {
    /// Kafka could not be read.
    #[error(transparent)]
    Kafka(#[from] braid_kafka::KafkaError),
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
    let feed = feed::start(&config.brokers, shutdown)?;
    Ok(Arc::new(Serving {
        views: config.views.clone(),
        feed,
        batch: batch::BatchViews::new(braid_store::Layout::new(&config.data_dir)),
    }))
}

/// Serves the query routes alone until `shutdown` is cancelled.
pub async fn run(
    config: ServingConfig,
    shutdown: CancellationToken,
) -> Result<(), ServingRunError> {
    let serving = start(&config, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| ServingRunError::Bind {
            addr: config.http,
            source,
        })?;
    tracing::info!(addr = %config.http, "serving layer listening");
    warp::serve(api::routes(serving))
        .incoming(listener)
        .graceful(async move { shutdown.cancelled().await })
        .run()
        .await;
    Ok(())
}
