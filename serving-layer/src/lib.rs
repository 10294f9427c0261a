//! Braid's the serving layer: the exact merge of batch and speed views with per-window metadata, the query API and the dashboard.
//!
//! It meets the other layers only through Kafka topics and stored views,
//! never through their code: `scripts/check` enforces that no layer crate
//! depends on another. Its entry point is [`run`].
//!
//! Status: the entry point and its configuration exist so that the binary
//! and the layering rules are in place; the layer itself is the subject of
//! issue 6 and is not built yet. [`run`] says so instead of pretending.

use tokio_util::sync::CancellationToken;

/// What the serving layer needs to run.
#[derive(Clone, Debug)]
pub struct ServingConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// The views to maintain.
    pub views: braid_core::ViewSet,
}

/// Why the serving layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// This build does not contain the layer yet.
    #[error("the serving layer is not built yet (issue 6)")]
    NotBuilt,
}

/// Runs the serving layer until `shutdown` is cancelled.
pub async fn run(config: ServingConfig, shutdown: CancellationToken) -> Result<(), ServingError> {
    let _ = (config, shutdown);
    Err(ServingError::NotBuilt)
}
