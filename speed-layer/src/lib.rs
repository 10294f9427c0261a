//! Braid's the speed layer: incremental event-time views from `braid.readings`, sealed into epochs at checkpoints and published to `braid.speed`.
//!
//! It meets the other layers only through Kafka topics and stored views,
//! never through their code: `scripts/check` enforces that no layer crate
//! depends on another. Its entry point is [`run`].
//!
//! Status: the entry point and its configuration exist so that the binary
//! and the layering rules are in place; the layer itself is the subject of
//! issue 5 and is not built yet. [`run`] says so instead of pretending.

use tokio_util::sync::CancellationToken;

/// What the speed layer needs to run.
#[derive(Clone, Debug)]
pub struct SpeedConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// The views to maintain.
    pub views: braid_core::ViewSet,
}

/// Why the speed layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpeedError {
    /// This build does not contain the layer yet.
    #[error("the speed layer is not built yet (issue 5)")]
    NotBuilt,
}

/// Runs the speed layer until `shutdown` is cancelled.
pub async fn run(config: SpeedConfig, shutdown: CancellationToken) -> Result<(), SpeedError> {
    let _ = (config, shutdown);
    Err(SpeedError::NotBuilt)
}
