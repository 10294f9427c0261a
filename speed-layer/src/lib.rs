//! Braid's speed layer: incremental event-time views from `braid.readings`,
//! sealed into epochs at checkpoints and published to `braid.speed`.
//!
//! For every view it assigns windows, classifies each reading (current,
//! outdated, historical), applies the dedup rule and folds readings into the
//! core states kept per (window, group, partition, epoch), all through
//! `braid_core::fold`. Historical readings are counted per window as
//! pending, not applied. Every `publish_interval` it publishes each changed
//! state as an absolute value with the highest offset it includes; every
//! `checkpoint_interval` it seals the open epoch of each partition: states,
//! offsets, watermark and dedup keys go to a checkpoint together, atomically
//! (see [`checkpoint`] for the layout), and a `Sealed` message names the
//! boundary a batch cut may use. The wire format is `braid_core::speedlog`.
//!
//! It meets the other layers only through Kafka topics and stored files,
//! never through their code. States of epochs below the cut of their
//! view's published batch run are dropped (looked for every 5 s), so with
//! batch runs memory holds about the epochs since the last run; without
//! them it grows with the data, and a warning is logged past `max_states`.

pub mod checkpoint;
pub mod engine;
pub mod judge;
pub mod table;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

use braid_core::ViewSet;
use tokio_util::sync::CancellationToken;

pub use worker::WorkerStats;

/// What the speed layer needs to run.
#[derive(Clone, Debug)]
pub struct SpeedConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The data directory (published batch runs and baselines are read
    /// from it).
    pub data_dir: PathBuf,
    /// Where checkpoints and sealed epoch boundaries live (`speed/`): the
    /// data directory by default, or any object store shared by workers on
    /// several machines.
    pub checkpoints: braid_store::Blobs,
    /// Where batch runs publish views and baselines (the data directory by
    /// default).
    pub published: braid_store::Blobs,
    /// The views to maintain.
    pub views: ViewSet,
    /// Consumer group shared by all speed workers.
    pub group: String,
    /// How often epochs are sealed and checkpoints written.
    pub checkpoint_interval: Duration,
    /// How often changed states are published.
    pub publish_interval: Duration,
    /// States held before a warning that memory is growing.
    pub max_states: usize,
    /// Anomaly detectors judged on every reading (alerts go to
    /// `braid.alerts`).
    pub detectors: braid_core::detect::Detectors,
}

impl SpeedConfig {
    /// The defaults: group `braid-speed`, checkpoints every 10 s, publishing
    /// every 100 ms, a warning past two million states.
    pub fn new(brokers: String, data_dir: PathBuf, views: ViewSet) -> Self {
        Self {
            brokers,
            checkpoints: braid_store::Blobs::local(&data_dir),
            published: braid_store::Blobs::local(&data_dir),
            data_dir,
            views,
            group: "braid-speed".into(),
            checkpoint_interval: Duration::from_secs(10),
            publish_interval: Duration::from_millis(100),
            max_states: 2_000_000,
            detectors: braid_core::detect::Detectors::default(),
        }
    }
}

/// Why the speed layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpeedError {
    /// Kafka failed in a way retrying inside the worker cannot fix.
    #[error(transparent)]
    Kafka(#[from] braid_kafka::KafkaError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// A broken invariant inside the worker.
    #[error("speed layer: {0}")]
    Internal(String),
}

/// Runs a speed worker until `shutdown` is cancelled; on the way out it
/// publishes what changed and seals a final epoch.
pub async fn run(
    config: SpeedConfig,
    shutdown: CancellationToken,
) -> Result<WorkerStats, SpeedError> {
    let worker = worker::Worker::new(config).await?;
    worker.run(shutdown).await
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
