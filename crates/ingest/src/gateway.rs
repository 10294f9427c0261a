//! The HTTP ingest gateway (warp): `POST /v1/readings` (JSON, NDJSON) and
//! `POST /v1/write` (InfluxDB line protocol, also at `/write` and
//! `/api/v2/write` so InfluxDB clients and Telegraf need only a new URL).
//!
//! Split as Vector's HTTP sources are: [`filters`] match requests,
//! [`handlers`] do the work, [`models`] are the query strings and answers,
//! [`errors`] is the one error type with its status mapping and `recover`.
//!
//! A 2xx answer means Kafka acknowledged every reading of the request
//! (`acks=all`). By default a request is all or nothing: one bad record and
//! nothing is written (400 naming the record and field); with
//! `accept_partial=true` the valid records are written and the answer is
//! 422 listing each refused one. Bodies are capped before they are read
//! past the limit (413), gzip is inflated under its own cap, and a broker
//! that cannot acknowledge in time gives 503 with `Retry-After`.

pub mod errors;
pub mod filters;
pub mod handlers;
pub mod models;

/// The OpenAPI `paths` of the ingest routes, for a server that documents
/// them beside its own (`braid up`).
pub const OPENAPI_PATHS: &str = include_str!("gateway/openapi.json");

use braid_core::Limits;

use crate::sink::ReadingSink;

/// Limits of the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest body read, bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Largest inflated gzip body, bytes (default 16 MiB).
    pub max_inflated_bytes: usize,
    /// Validation limits (how far ahead of the clock a reading may be).
    pub limits: Limits,
    /// The tokens writes need (`None`: no token needed; only allowed on
    /// loopback or with `--insecure`).
    pub tokens: Option<std::sync::Arc<crate::auth::Tokens>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_inflated_bytes: 16 << 20,
            limits: Limits::default(),
            tokens: None,
        }
    }
}

/// What the handlers share.
pub struct Gateway {
    /// Where readings go.
    pub sink: ReadingSink,
    /// Limits.
    pub config: GatewayConfig,
    /// The accepting clock, epoch ms (a parameter so tests can pin it).
    pub clock: fn() -> i64,
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
