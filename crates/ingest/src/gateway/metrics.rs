//! The gateway's counters for `GET /metrics` (Prometheus text): requests
//! by outcome, readings accepted, readings refused by field, requests in
//! flight and the bytes they hold. Labels are bounded sets, never devices.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::errors::IngestError;
use crate::decode::Rejected;

/// The fields a refusal is counted under; any other is `other`.
const FIELDS: [&str; 7] = [
    "device_id",
    "metric",
    "ts",
    "value",
    "seq",
    "tags",
    "record",
];

/// What the gateway counts.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    requests: Mutex<BTreeMap<&'static str, u64>>,
    readings_accepted: AtomicU64,
    readings_refused: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicU64,
    /// Set at shutdown: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
}

/// A request counted in flight until dropped.
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn outcome(answer: &Result<warp::reply::Response, IngestError>) -> &'static str {
    use warp::http::StatusCode;
    match answer {
        Ok(r) if r.status() == StatusCode::UNPROCESSABLE_ENTITY => "partial",
        Ok(_) => "accepted",
        Err(IngestError::Busy(_)) => "busy",
        Err(e) => match e.status() {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            _ => "unavailable",
        },
    }
}

impl GatewayMetrics {
    /// Counts a request in flight until the guard drops.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Counts a request's outcome.
    pub fn answered(&self, answer: &Result<warp::reply::Response, IngestError>) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry(outcome(answer)).or_default() += 1;
        }
    }

    /// Counts readings Kafka acknowledged.
    pub fn accepted(&self, n: usize) {
        self.readings_accepted
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts refused records by the field at fault.
    pub fn refused(&self, rejected: &[Rejected]) {
        if rejected.is_empty() {
            return;
        }
        if let Ok(mut m) = self.readings_refused.lock() {
            for r in rejected {
                let field = FIELDS
                    .iter()
                    .find(|f| r.field == **f || r.field.starts_with(&format!("{f}.")))
                    .copied()
                    .unwrap_or("other");
                *m.entry(field).or_default() += 1;
            }
        }
    }

    /// The text of the gateway's `/metrics`, `held_bytes` being what the
    /// requests in flight hold of the in-flight cap.
    pub fn render(&self, held_bytes: u64, cap_bytes: u64) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let labelled =
            |m: &Mutex<BTreeMap<&'static str, u64>>, label: &str| -> Vec<(String, u64)> {
                m.lock()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), *v))
                            .collect()
                    })
                    .unwrap_or_default()
            };
        family(
            "braid_ingest_requests_total",
            "counter",
            "Write requests answered, by outcome.",
            labelled(&self.requests, "outcome"),
        );
        family(
            "braid_ingest_readings_accepted_total",
            "counter",
            "Readings Kafka acknowledged.",
            vec![(
                String::new(),
                self.readings_accepted.load(Ordering::Relaxed),
            )],
        );
        family(
            "braid_ingest_readings_refused_total",
            "counter",
            "Records refused by validation, by the field at fault (whether or not the rest of the request was written).",
            labelled(&self.readings_refused, "field"),
        );
        family(
            "braid_ingest_requests_in_flight",
            "gauge",
            "Write requests being answered.",
            vec![(String::new(), self.in_flight.load(Ordering::Relaxed))],
        );
        family(
            "braid_ingest_in_flight_bytes",
            "gauge",
            "Body bytes the requests in flight hold room for.",
            vec![(String::new(), held_bytes)],
        );
        family(
            "braid_ingest_in_flight_bytes_cap",
            "gauge",
            "The cap on body bytes in flight (503 beyond).",
            vec![(String::new(), cap_bytes)],
        );
        family(
            "braid_ingest_draining",
            "gauge",
            "1 once the gateway is shutting down.",
            vec![(
                String::new(),
                u64::from(self.draining.load(Ordering::Relaxed)),
            )],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RecordRef;

    #[test]
    fn refusals_are_counted_by_bounded_fields() {
        let m = GatewayMetrics::default();
        let r = |field: &str| Rejected {
            record: RecordRef::Index(0),
            field: field.into(),
            reason: "x".into(),
        };
        m.refused(&[
            r("ts"),
            r("ts"),
            r("tags.zone"),
            r("whatever-a-client-sent"),
        ]);
        m.accepted(3);
        m.answered(&Err(IngestError::Unavailable("down".into())));
        let text = m.render(10, 20);
        assert!(
            text.contains("braid_ingest_readings_refused_total{field=\"ts\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("braid_ingest_readings_refused_total{field=\"tags\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("braid_ingest_readings_refused_total{field=\"other\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("braid_ingest_readings_accepted_total 3"),
            "{text}"
        );
        assert!(
            text.contains("braid_ingest_requests_total{outcome=\"unavailable\"} 1"),
            "{text}"
        );
        assert!(text.contains("braid_ingest_in_flight_bytes 10"), "{text}");
    }
}
