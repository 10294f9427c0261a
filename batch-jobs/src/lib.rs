//! Braid's the batch layer: archiver (`braid archive`), backfill import (`braid import`) and the DataFusion recompute of every view (`braid batch run`).
//!
//! It meets the other layers only through Kafka topics and stored views,
//! never through their code: `scripts/check` enforces that no layer crate
//! depends on another. Its entry point is [`run`].
//!
//! Status: the entry point and its configuration exist so that the binary
//! and the layering rules are in place; the layer itself is the subject of
//! issue 4 and is not built yet. [`run`] says so instead of pretending.

use tokio_util::sync::CancellationToken;

/// What the batch layer needs to run.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// The views to maintain.
    pub views: braid_core::ViewSet,
}

/// Why the batch layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// This build does not contain the layer yet.
    #[error("the batch layer is not built yet (issue 4)")]
    NotBuilt,
}

/// Runs the batch layer until `shutdown` is cancelled.
pub async fn run(config: BatchConfig, shutdown: CancellationToken) -> Result<(), BatchError> {
    let _ = (config, shutdown);
    Err(BatchError::NotBuilt)
}
