//! `GET /metrics`: the replica's counters and gauges in Prometheus' text
//! format. Labels are bounded sets (route templates, status codes, views,
//! partitions), never devices.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::Serving;
use crate::query::watermark;

/// Requests and seconds spent, per (route template, status).
type ByRoute = BTreeMap<(&'static str, u16), (u64, f64)>;

/// Requests served, by route template and status.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    by_route: Mutex<ByRoute>,
}

/// The route template a path was served by, so labels stay few.
pub fn route_of(path: &str) -> &'static str {
    const FIXED: [&str; 13] = [
        "/",
        "/v1/views",
        "/v1/alerts",
        "/v1/alerts/stream",
        "/v1/status",
        "/v1/readings",
        "/v1/write",
        "/write",
        "/api/v2/write",
        "/metrics",
        "/openapi.json",
        "/livez",
        "/readyz",
    ];
    if let Some(f) = FIXED.iter().find(|f| **f == path) {
        return f;
    }
    let one_more = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    };
    if one_more("/v1/views/") {
        "/v1/views/{view}"
    } else if one_more("/v1/compare/") {
        "/v1/compare/{view}"
    } else if one_more("/v1/forecast/") {
        "/v1/forecast/{view}"
    } else if one_more("/assets/") {
        "/assets/{file}"
    } else {
        "other"
    }
}

impl HttpMetrics {
    /// Counts one request.
    pub fn record(&self, path: &str, status: u16, elapsed: Duration) {
        if let Ok(mut m) = self.by_route.lock() {
            let e = m.entry((route_of(path), status)).or_default();
            e.0 += 1;
            e.1 += elapsed.as_secs_f64();
        }
    }
}

/// The text of `GET /metrics`.
pub fn render(s: &Serving) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let f = &s.feed;
    family(
        "braid_serving_speed_messages_total",
        "counter",
        "braid.speed messages read, by outcome.",
        &[
            (
                r#"{outcome="applied"}"#.into(),
                f.applied.load(Ordering::Relaxed).to_string(),
            ),
            (
                r#"{outcome="ignored"}"#.into(),
                f.ignored.load(Ordering::Relaxed).to_string(),
            ),
            (
                r#"{outcome="undecodable"}"#.into(),
                f.undecodable.load(Ordering::Relaxed).to_string(),
            ),
        ],
    );
    family(
        "braid_serving_answer_cache_total",
        "counter",
        "Merged JSON answers, by whether the answer cache held them.",
        &[
            (
                r#"{outcome="hit"}"#.into(),
                s.answers.hits.load(Ordering::Relaxed).to_string(),
            ),
            (
                r#"{outcome="miss"}"#.into(),
                s.answers.misses.load(Ordering::Relaxed).to_string(),
            ),
        ],
    );
    family(
        "braid_serving_caught_up",
        "gauge",
        "1 once the replica has read braid.speed up to where it was at start.",
        &[(
            String::new(),
            u8::from(f.caught_up.load(Ordering::Relaxed)).to_string(),
        )],
    );
    let (mut states, mut lag, mut wms) = (Vec::new(), Vec::new(), Vec::new());
    if let Ok(t) = f.table.read() {
        for (p, ps) in t.partitions() {
            states.push((
                format!(r#"{{partition="{p}"}}"#),
                ps.states.len().to_string(),
            ));
        }
        for v in &s.views.views {
            if let Some(w) = watermark(&t, v) {
                wms.push((
                    format!(r#"{{view="{}"}}"#, v.name),
                    format!("{:.3}", w as f64 / 1000.0),
                ));
            }
        }
        let parts: Vec<i32> = t.partitions().keys().copied().collect();
        drop(t);
        for p in parts {
            if let Some(l) = f.lag(p) {
                lag.push((format!(r#"{{partition="{p}"}}"#), l.to_string()));
            }
        }
    }
    family(
        "braid_serving_speed_states",
        "gauge",
        "Speed states held, by partition of braid.speed.",
        &states,
    );
    family(
        "braid_speed_lag_readings",
        "gauge",
        "Readings in braid.readings the speed layer has not yet folded, by partition.",
        &lag,
    );
    family(
        "braid_view_watermark_seconds",
        "gauge",
        "Each view's watermark, seconds since the epoch.",
        &wms,
    );
    let last = f.last_message_ms.load(Ordering::Relaxed);
    if last > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        family(
            "braid_serving_freshness_seconds",
            "gauge",
            "Age of the newest braid.speed message read.",
            &[(
                String::new(),
                format!("{:.3}", now.saturating_sub(last) as f64 / 1000.0),
            )],
        );
    }
    if let Some(w) = &s.webhook {
        family(
            "braid_alert_webhook_total",
            "counter",
            "Alert webhook outcomes: alerts delivered, failed tries, alerts given up on.",
            &[
                (
                    r#"{outcome="delivered"}"#.into(),
                    w.delivered.load(Ordering::Relaxed).to_string(),
                ),
                (
                    r#"{outcome="failed_try"}"#.into(),
                    w.failures.load(Ordering::Relaxed).to_string(),
                ),
                (
                    r#"{outcome="dropped"}"#.into(),
                    w.dropped.load(Ordering::Relaxed).to_string(),
                ),
            ],
        );
    }
    let (mut finished, mut rows) = (Vec::new(), Vec::new());
    for v in &s.views.views {
        if let Some(b) = s.batch.cached(&v.name) {
            let l = format!(r#"{{view="{}"}}"#, v.name);
            finished.push((
                l.clone(),
                format!("{:.3}", b.manifest.finished_ms as f64 / 1000.0),
            ));
            rows.push((l, b.manifest.rows.to_string()));
        }
    }
    family(
        "braid_batch_run_finished_seconds",
        "gauge",
        "When the batch run a view is answered from finished, seconds since the epoch.",
        &finished,
    );
    family(
        "braid_batch_run_rows",
        "gauge",
        "Rows (windows times groups) of the batch run a view is answered from.",
        &rows,
    );
    family(
        "braid_serving_compare_states",
        "gauge",
        "Speed states kept for the comparison after a batch run covered them.",
        &[(String::new(), s.batch.retired().len().to_string())],
    );
    let (mut count, mut secs) = (Vec::new(), Vec::new());
    if let Ok(m) = s.http.by_route.lock() {
        for ((route, code), (n, t)) in m.iter() {
            let l = format!(r#"{{route="{route}",code="{code}"}}"#);
            count.push((l.clone(), n.to_string()));
            secs.push((l, format!("{t:.6}")));
        }
    }
    family(
        "braid_http_requests_total",
        "counter",
        "HTTP requests answered, by route template and status.",
        &count,
    );
    family(
        "braid_http_request_duration_seconds_total",
        "counter",
        "Time spent answering HTTP requests, by route template and status.",
        &secs,
    );
    out
}
