//! Braid's batch layer: the archiver (`braid archive`) that keeps the
//! immutable Parquet master dataset, backfill import (`braid import`) and
//! the DataFusion recompute of every view (`braid batch run`), in this
//! process or on a Ballista cluster.
//!
//! It meets the other layers only through Kafka topics and stored files,
//! never through their code: `scripts/check` enforces that no layer crate
//! depends on another. The archive's on-disk layout is described in
//! [`archive`].

pub mod archive;
pub mod import;
pub mod recompute;

use std::path::PathBuf;

/// Why the batch layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] braid_kafka::KafkaError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another batch run holds the lock.
    #[error("another batch run holds {path} (pid {holder}): this run exits without doing anything")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote in it (its pid).
        holder: String,
    },
    /// The archive store failed.
    #[error(transparent)]
    Blob(#[from] braid_store::BlobError),
    /// The request cannot be carried out as given.
    #[error("{0}")]
    Usage(String),
    /// A broken invariant.
    #[error("batch layer: {0}")]
    Internal(String),
}

pub use archive::{ArchiveConfig, ArchiveStats, run};
