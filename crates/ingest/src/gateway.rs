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
pub mod metrics;
pub mod models;
pub mod ops;

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
    /// Body bytes all requests in flight may hold together (default 64
    /// MiB): beyond, a write is answered 503 with `Retry-After` before its
    /// body is read, so a stalled broker cannot make the gateway grow
    /// without bound. A request without `Content-Length` holds room for a
    /// whole `max_body_bytes`.
    pub max_in_flight_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_inflated_bytes: 16 << 20,
            limits: Limits::default(),
            tokens: None,
            max_in_flight_bytes: 64 << 20,
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
    /// Counters for `/metrics`.
    pub metrics: metrics::GatewayMetrics,
    /// Room for bodies in flight, in KiB.
    room: tokio::sync::Semaphore,
}

/// Room is counted in KiB, so the semaphore's permits stay few.
const ROOM_UNIT: usize = 1024;

impl Gateway {
    /// A gateway writing to `sink`.
    pub fn new(sink: ReadingSink, config: GatewayConfig, clock: fn() -> i64) -> Self {
        let permits = (config.max_in_flight_bytes / ROOM_UNIT).max(1);
        Self {
            sink,
            config,
            clock,
            metrics: metrics::GatewayMetrics::default(),
            room: tokio::sync::Semaphore::new(permits.min(tokio::sync::Semaphore::MAX_PERMITS)),
        }
    }

    /// Room for one request's body, held until the answer; 503 when the
    /// requests in flight hold the whole cap already.
    pub fn room(
        &self,
        headers: &handlers::BodyHeaders,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, errors::IngestError> {
        let max = self.config.max_body_bytes as u64;
        let bytes = headers.content_length.unwrap_or(max).min(max) as usize;
        let units = bytes.div_ceil(ROOM_UNIT).max(1) as u32;
        self.room.try_acquire_many(units).map_err(|_| {
            errors::IngestError::Busy(format!(
                "the gateway holds its limit of {} bytes of requests in flight",
                self.config.max_in_flight_bytes
            ))
        })
    }

    /// Bytes of room held by requests in flight, and the cap.
    pub fn room_held(&self) -> (u64, u64) {
        let total = (self.config.max_in_flight_bytes / ROOM_UNIT).max(1);
        let free = self.room.available_permits();
        (
            (total.saturating_sub(free) * ROOM_UNIT) as u64,
            self.config.max_in_flight_bytes as u64,
        )
    }

    /// The text of the gateway's `/metrics`.
    pub fn metrics_text(&self) -> String {
        let (held, cap) = self.room_held();
        self.metrics.render(held, cap)
    }
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
