//! Query strings and answers of the ingest routes.

use serde::{Deserialize, Serialize};

use crate::decode::Rejected;

/// Query of `POST /v1/readings`.
#[derive(Debug, Default, Deserialize)]
pub struct ReadingsQuery {
    /// Write the valid records and answer 422 listing the refused ones,
    /// instead of refusing the whole request.
    #[serde(default)]
    pub accept_partial: bool,
}

/// Query of `POST /v1/write` (InfluxDB's, whose other parameters such as
/// `db`, `rp`, `org` and `bucket` are accepted and ignored).
#[derive(Debug, Default, Deserialize)]
pub struct WriteQuery {
    /// Timestamp unit: `ns` (default), `us`, `ms`, `s` (and 1.x's `n`, `u`,
    /// `m`, `h`).
    pub precision: Option<String>,
    /// As for `/v1/readings`.
    #[serde(default)]
    pub accept_partial: bool,
}

/// The answer to a write.
#[derive(Debug, Serialize)]
pub struct WriteAnswer {
    /// Readings acknowledged by Kafka.
    pub accepted: usize,
    /// Records refused (only with `accept_partial=true`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejected>,
}
