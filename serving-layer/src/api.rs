//! The query routes (warp): `GET /v1/views`, `GET /v1/views/{view}`,
//! `GET /v1/compare/{view}`, `GET /v1/status`, `GET /metrics`,
//! `GET /openapi.json`, `/livez`, `/readyz`, and the dashboard at `GET /`.
//! One error type with one status mapping, one `recover` into JSON errors;
//! [`observe`] counts every request for `/metrics`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use braid_core::time::{parse_duration, parse_rfc3339};
use serde_json::{Value, json};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Reply;

use crate::Serving;
use crate::compare::{compare, to_csv as compare_csv};
use crate::query::{Query, SourceFilter, rows, to_arrow, to_csv, watermark};

/// Every way a query can fail.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// No view of that name.
    #[error("no view named `{0}` (GET /v1/views lists them)")]
    UnknownView(String),
    /// A query parameter is malformed.
    #[error("parameter `{name}`: {reason}")]
    BadParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The answer cannot meet the query's contract.
    #[error("contract not met: {0}")]
    Contract(String),
    /// The server has read tokens and the request's is missing, unknown,
    /// revoked, or does not cover what it asks.
    #[error(transparent)]
    Auth(#[from] braid_ingest::auth::AuthError),
    /// A stored batch view could not be read, or the merge found a broken
    /// invariant.
    #[error("{0}")]
    Internal(String),
}

impl warp::reject::Reject for ServingError {}

impl ServingError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownView(_) => StatusCode::NOT_FOUND,
            Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::Contract(_) => StatusCode::CONFLICT,
            Self::Auth(e) => braid_ingest::gateway::errors::auth_status(e),
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

pub(crate) fn time_param(
    q: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<i64>, ServingError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .or_else(|| parse_rfc3339(v))
            .map(Some)
            .ok_or_else(|| ServingError::BadParameter {
                name,
                reason: format!("`{v}` is neither epoch milliseconds nor RFC 3339"),
            }),
    }
}

fn bool_param(q: &HashMap<String, String>, name: &'static str) -> Result<bool, ServingError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ServingError::BadParameter {
            name,
            reason: format!("`{other}` is not true or false"),
        }),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn view_answer(
    s: &Serving,
    name: &str,
    q: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<warp::reply::Response, ServingError> {
    let (view, query) = query_of(s, name, q, authorization)?;
    let source = query.source;
    if source == SourceFilter::Batch && s.batch.cached(&view.name).is_none() {
        return Err(ServingError::Contract(match s.batch.stale(&view.name) {
            Some(run) => format!(
                "source=batch: run {run} of {} was made from another definition of the view; the next `braid batch run` replaces it",
                view.name
            ),
            None => format!(
                "source=batch: no batch run of {} has been published yet (run `braid batch run`)",
                view.name
            ),
        }));
    }
    let last = s.feed.last_message_ms.load(Ordering::Relaxed) as i64;
    let freshness = (last > 0).then(|| now_ms().saturating_sub(last).max(0));
    if let Some(limit) = q.get("max_staleness") {
        let limit = parse_duration(limit).map_err(|reason| ServingError::BadParameter {
            name: "max_staleness",
            reason,
        })?;
        match freshness {
            Some(f) if f <= limit => {}
            Some(f) => {
                return Err(ServingError::Contract(format!(
                    "max_staleness={limit} ms: the newest speed data is {f} ms old"
                )));
            }
            None => {
                return Err(ServingError::Contract(
                    "max_staleness: no speed data yet".into(),
                ));
            }
        }
    }
    let min_completeness = match q.get("min_completeness") {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(m) if (0.0..=1.0).contains(&m) => Some(m),
            _ => {
                return Err(ServingError::BadParameter {
                    name: "min_completeness",
                    reason: format!("`{v}` is not a number from 0 to 1"),
                });
            }
        },
    };
    if min_completeness.is_some() && view.expected_devices.is_none() {
        return Err(ServingError::Contract(format!(
            "min_completeness: view {} names no expected_devices, so its completeness is unknown",
            view.name
        )));
    }
    let format = q.get("format").map(String::as_str);
    if matches!(format, None | Some("json")) && min_completeness.is_none() {
        return cached_json(s, view, &query, freshness);
    }
    let (rows, wm, batch, position, _) = merged(s, view, &query)?;
    if let Some(min) = min_completeness {
        let short: Vec<&crate::query::Row> = rows
            .iter()
            .filter(|r| r.completeness.is_some_and(|c| c < min))
            .collect();
        if let Some(first) = short.first() {
            return Err(ServingError::Contract(format!(
                "min_completeness={min}: {} of {} windows fall short, the first at {} with {} of {} devices reporting",
                short.len(),
                rows.len(),
                first.window_start,
                first.reporting_devices.unwrap_or(0),
                first.expected_devices.unwrap_or(0),
            )));
        }
    }
    let batch_header = batch.as_ref().map_or(Value::Null, |b| batch_json(b));
    match format {
        None | Some("json") => json_answer(
            view,
            wm,
            freshness,
            batch_header,
            &position,
            rows.len() * ROW_JSON_BYTES,
            |out| crate::query::write_json_rows(&rows, out),
        ),
        Some("csv") => Ok(warp::reply::with_header(
            to_csv(view, &rows),
            "content-type",
            "text/csv; charset=utf-8",
        )
        .into_response()),
        Some("arrow") => {
            // The header rides on the schema: one answer, one snapshot.
            let metadata = [
                ("braid.view", json!(view.name)),
                ("braid.watermark", json!(wm)),
                ("braid.freshness_ms", json!(freshness)),
                ("braid.batch", batch_header),
                ("braid.speed_position", json!(position)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let bytes = to_arrow(view, &rows, metadata)
                .map_err(|e| ServingError::Internal(format!("encoding Arrow: {e}")))?;
            Ok(warp::reply::with_header(
                bytes,
                "content-type",
                "application/vnd.apache.arrow.stream",
            )
            .into_response())
        }
        Some(other) => Err(bad_format(other)),
    }
}

/// About how many bytes a row's JSON takes, to size answers' buffers.
const ROW_JSON_BYTES: usize = 320;

fn encoding(e: std::io::Error) -> ServingError {
    ServingError::Internal(format!("encoding JSON: {e}"))
}

/// The JSON answer of `view` for `query` with its rows kept ones, if the
/// speed table and the batch run are those they were made from (see
/// [`crate::cache`]); otherwise merged and written straight into the
/// answer, and kept (a copy) when the cache takes them.
fn cached_json(
    s: &Serving,
    view: &braid_core::ViewDef,
    query: &Query,
    freshness: Option<i64>,
) -> Result<warp::reply::Response, ServingError> {
    let key = crate::cache::AnswerKey::of(&view.name, query);
    {
        let (table, run) = snapshot(s, view)?;
        if let Some(a) = s.answers.get(&key, table.version(), run.as_ref()) {
            return json_answer(
                view,
                a.watermark,
                freshness,
                a.batch.clone(),
                &a.position,
                a.rows.len(),
                |out| {
                    out.extend_from_slice(&a.rows);
                    Ok(())
                },
            );
        }
    }
    let (rows, watermark, run, position, version) = merged(s, view, query)?;
    let batch = run.as_ref().map_or(Value::Null, |b| batch_json(b));
    let mut kept = None;
    let size = rows.len() * ROW_JSON_BYTES;
    let answer = json_answer(
        view,
        watermark,
        freshness,
        batch.clone(),
        &position,
        size,
        |out| {
            let from = out.len();
            crate::query::write_json_rows(&rows, out)?;
            if s.answers.takes(out.len() - from) {
                kept = Some(out[from..].to_vec());
            }
            Ok(())
        },
    )?;
    if let Some(rows) = kept {
        let a = crate::cache::Answer {
            version,
            batch,
            run: run.as_ref().map(Arc::downgrade),
            rows,
            watermark,
            position,
        };
        s.answers.put(key, Arc::new(a));
    }
    Ok(answer)
}

/// A JSON answer: the header (view, watermark, freshness, the batch run's
/// header, speed position) through serde, then the rows `write_rows`
/// appends (a JSON array, about `rows_size` bytes), in one buffer.
fn json_answer(
    view: &braid_core::ViewDef,
    watermark: Option<i64>,
    freshness_ms: Option<i64>,
    batch: Value,
    speed_position: &SpeedPosition,
    rows_size: usize,
    write_rows: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Result<warp::reply::Response, ServingError> {
    #[derive(serde::Serialize)]
    struct Header<'a> {
        view: &'a str,
        watermark: Option<i64>,
        freshness_ms: Option<i64>,
        batch: Value,
        speed_position: &'a SpeedPosition,
    }
    let header = Header {
        view: &view.name,
        watermark,
        freshness_ms,
        batch,
        speed_position,
    };
    let mut bytes = Vec::with_capacity(1024 + rows_size);
    serde_json::to_writer(&mut bytes, &header).map_err(|e| encoding(e.into()))?;
    // Reopen the header's object for the rows.
    bytes.pop();
    bytes.extend_from_slice(b",\"rows\":");
    write_rows(&mut bytes).map_err(encoding)?;
    bytes.push(b'}');
    Ok(warp::reply::with_header(bytes, "content-type", "application/json").into_response())
}

/// Per partition of `braid.speed`, the offset after the last message the
/// replica has read: with the batch run, what an answer was made from (two
/// replicas at the same run and position give the same answer).
pub(crate) type SpeedPosition = std::collections::BTreeMap<i32, i64>;

/// Rows, the view's watermark, the batch run merged in, the speed
/// position, and the speed table's version.
pub(crate) type Merged = (
    Vec<crate::query::Row>,
    Option<i64>,
    Option<Arc<crate::batch::ServedRun>>,
    SpeedPosition,
    u64,
);

/// The speed table, read-locked, and the batch run of `view` taken under
/// that lock (see [`crate::batch::BatchViews::refresh`]): what an answer is
/// made from.
fn snapshot<'s>(
    s: &'s Serving,
    view: &braid_core::ViewDef,
) -> Result<
    (
        std::sync::RwLockReadGuard<'s, braid_core::speedlog::SpeedTable>,
        Option<Arc<crate::batch::ServedRun>>,
    ),
    ServingError,
> {
    let table = s
        .feed
        .table
        .read()
        .map_err(|_| ServingError::Contract("speed table poisoned".into()))?;
    let run = s.batch.cached(&view.name);
    Ok((table, run))
}

/// The merged rows of `view` for `query` (after [`query_of`] refreshed the
/// batch side), its watermark, the batch run they were merged with, and
/// the speed position they were made from.
pub(crate) fn merged(
    s: &Serving,
    view: &braid_core::ViewDef,
    query: &Query,
) -> Result<Merged, ServingError> {
    let (table, batch) = snapshot(s, view)?;
    let rows = rows(&table, batch.as_deref(), view, query)
        .map_err(|e| ServingError::Internal(format!("merging {}: {e}", view.name)))?;
    Ok((
        rows,
        watermark(&table, view),
        batch,
        table.position().clone(),
        table.version(),
    ))
}

fn bad_format(other: &str) -> ServingError {
    ServingError::BadParameter {
        name: "format",
        reason: format!("`{other}` is not json, csv or arrow"),
    }
}

fn batch_json(b: &crate::batch::ServedRun) -> Value {
    json!({
        "run_id": b.manifest.run_id,
        "finished_ms": b.manifest.finished_ms,
        "cut": b.manifest.cut.0,
    })
}

/// Checks a read of `device` (`None`: every device) of `view` against the
/// server's read tokens, if it has some. A view not grouped by device
/// mixes every device's readings, so only a token for every device reads it.
pub(crate) fn authorize_read(
    s: &Serving,
    authorization: Option<&str>,
    view: &braid_core::ViewDef,
    device: Option<&str>,
) -> Result<(), ServingError> {
    let by_device = view.group_by.iter().any(|g| g == "device_id");
    authorize_devices(s, authorization, device.filter(|_| by_device))
}

/// The view and the range, device and metric of a query, once its token
/// (if the server has tokens) may read them.
fn query_of<'a>(
    s: &'a Serving,
    name: &str,
    q: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<(&'a braid_core::ViewDef, Query), ServingError> {
    let view = s
        .views
        .get(name)
        .ok_or_else(|| ServingError::UnknownView(name.to_string()))?;
    authorize_read(s, authorization, view, q.get("device").map(String::as_str))?;
    let source = match q.get("source").map(String::as_str) {
        None | Some("merged") => SourceFilter::Merged,
        Some("speed") => SourceFilter::Speed,
        Some("batch") => SourceFilter::Batch,
        Some(other) => {
            return Err(ServingError::BadParameter {
                name: "source",
                reason: format!("`{other}` is not batch, speed or merged"),
            });
        }
    };
    let query = Query {
        from: time_param(q, "from")?,
        to: time_param(q, "to")?,
        device: q.get("device").cloned(),
        metric: q.get("metric").cloned(),
        final_only: bool_param(q, "final_only")?,
        source,
    };
    s.batch
        .refresh(&s.views, view, &s.feed.table)
        .map_err(|e| {
            ServingError::Internal(format!("reading the batch run of {}: {e}", view.name))
        })?;
    Ok((view, query))
}

/// `GET /v1/compare/{view}`: batch against speed per window.
fn compare_answer(
    s: &Serving,
    name: &str,
    q: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<warp::reply::Response, ServingError> {
    let (view, query) = query_of(s, name, q, authorization)?;
    let (rows, summary, batch) = {
        let (table, batch) = snapshot(s, view)?;
        let retired = s.batch.retired();
        let (rows, summary) = compare(&table, &retired, batch.as_deref(), view, &query)
            .map_err(|e| ServingError::Internal(format!("comparing {}: {e}", view.name)))?;
        (rows, summary, batch)
    };
    match q.get("format").map(String::as_str) {
        None | Some("json") => Ok(warp::reply::json(&json!({
            "view": view.name,
            "batch": batch.as_ref().map_or(Value::Null, |b| batch_json(b)),
            "summary": summary,
            "rows": rows,
        }))
        .into_response()),
        Some("csv") => Ok(warp::reply::with_header(
            compare_csv(view, &rows),
            "content-type",
            "text/csv; charset=utf-8",
        )
        .into_response()),
        Some(other) => Err(ServingError::BadParameter {
            name: "format",
            reason: format!("`{other}` is not json or csv"),
        }),
    }
}

fn views_list(s: &Serving) -> Value {
    let views: Vec<Value> = s
        .views
        .views
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "description": v.description,
                "metrics": v.metrics,
                "window_ms": v.windowing.size_ms,
                "hop_ms": v.windowing.hop_ms,
                "group_by": v.group_by,
                "aggregates": v.aggregates.iter().map(|a| a.name()).collect::<Vec<_>>(),
                "columns": v.columns().iter().map(|c| c.name()).collect::<Vec<_>>(),
                "current_ms": v.lateness.current_ms,
                "outdated_ms": v.lateness.outdated_ms,
                "expected_devices": v.expected_devices,
            })
        })
        .collect();
    json!({ "views": views })
}

fn status(s: &Serving) -> Value {
    let table = s.feed.table.read();
    let partitions: serde_json::Map<String, Value> = match &table {
        Ok(t) => t
            .partitions()
            .iter()
            .map(|(p, ps)| {
                (
                    p.to_string(),
                    json!({
                        "next_offset": ps.progress.map(|(n, _)| n),
                        "max_event_ts": ps.progress.and_then(|(_, ts)| ts),
                        "states": ps.states.len(),
                        "sealed_epochs": ps.sealed.len(),
                        "lag": s.feed.lag(*p),
                    }),
                )
            })
            .collect(),
        Err(_) => serde_json::Map::new(),
    };
    let watermarks: serde_json::Map<String, Value> = match &table {
        Ok(t) => s
            .views
            .views
            .iter()
            .map(|v| (v.name.clone(), json!(watermark(t, v))))
            .collect(),
        Err(_) => serde_json::Map::new(),
    };
    drop(table);
    json!({
        "speed": {
            "caught_up": s.feed.caught_up.load(Ordering::Relaxed),
            "messages_applied": s.feed.applied.load(Ordering::Relaxed),
            "messages_ignored": s.feed.ignored.load(Ordering::Relaxed),
            "messages_undecodable": s.feed.undecodable.load(Ordering::Relaxed),
            "partitions": partitions,
            "watermarks": watermarks,
            "compare_states_kept": s.batch.retired().len(),
        },
        "batch": batch_status(s),
        "alerts": { "available": true, "total": s.alerts.total.load(Ordering::Relaxed) },
    })
}

fn batch_status(s: &Serving) -> Value {
    let mut views = serde_json::Map::new();
    let mut included: Option<std::collections::BTreeSet<String>> = None;
    for v in &s.views.views {
        let run = match s
            .batch
            .refresh(&s.views, v, &s.feed.table)
            .map(|()| s.batch.cached(&v.name))
        {
            Ok(Some(b)) => {
                included = Some(b.manifest.imports.iter().cloned().collect());
                json!({
                    "run_id": b.manifest.run_id,
                    "finished_ms": b.manifest.finished_ms,
                    "cut": b.manifest.cut.0,
                    "rows": b.manifest.rows,
                    "incremental": b.manifest.incremental,
                })
            }
            Ok(None) => match s.batch.stale(&v.name) {
                Some(run) => {
                    json!({ "stale_run": run, "reason": "made from another definition of the view" })
                }
                None => Value::Null,
            },
            Err(e) => json!({ "error": e.to_string() }),
        };
        views.insert(v.name.clone(), run);
    }
    let archive = s.archive.clone();
    let pending: Vec<String> = braid_store::published::block_on(async move {
        braid_store::layout::complete_imports(&archive).await
    })
    .map(|m| m.into_keys().collect::<Vec<_>>())
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "listing imports");
        Vec::new()
    })
    .into_iter()
    .filter(|id| included.as_ref().is_none_or(|inc| !inc.contains(id)))
    .collect();
    json!({ "views": views, "pending_imports": pending })
}

/// The query routes, every rejection recovered into a JSON error.
pub fn routes(s: Arc<Serving>) -> BoxedFilter<(warp::reply::Response,)> {
    unrecovered(s.clone())
        .recover(recover)
        .unify()
        .with(observe(s))
        .map(Reply::into_response)
        .boxed()
}

/// Counts each request by route template and status, with its duration,
/// for `/metrics`: wrap the whole server's filter with it.
pub fn observe(
    s: Arc<Serving>,
) -> warp::log::Log<impl Fn(warp::log::Info<'_>) + Clone + Send + Sync + 'static> {
    warp::log::custom(move |info| {
        s.http
            .record(info.path(), info.status().as_u16(), info.elapsed());
    })
}

/// The query routes with only their own errors recovered, for mounting
/// beside other routes on one server.
pub fn mountable(s: Arc<Serving>) -> BoxedFilter<(warp::reply::Response,)> {
    unrecovered(s).recover(recover_own).unify().boxed()
}

fn unrecovered(s: Arc<Serving>) -> BoxedFilter<(warp::reply::Response,)> {
    let with = {
        let s = s.clone();
        warp::any().map(move || s.clone())
    };
    let list = warp::get()
        .and(warp::path!("v1" / "views"))
        .and(with.clone())
        .map(|s: Arc<Serving>| warp::reply::json(&views_list(&s)).into_response());
    let view = per_view(warp::path!("v1" / "views" / String), &s, view_answer);
    let status_route = warp::get()
        .and(warp::path!("v1" / "status"))
        .and(with.clone())
        .map(|s: Arc<Serving>| warp::reply::json(&status(&s)).into_response());
    let livez = warp::get()
        .and(warp::path!("livez"))
        .map(|| "ok".into_response());
    let readyz = warp::get()
        .and(warp::path!("readyz"))
        .and(with.clone())
        .map(|s: Arc<Serving>| {
            if s.feed.caught_up.load(Ordering::Relaxed) {
                "ready".into_response()
            } else {
                warp::reply::with_status(
                    "catching up with braid.speed",
                    StatusCode::SERVICE_UNAVAILABLE,
                )
                .into_response()
            }
        });
    let compare_route = per_view(warp::path!("v1" / "compare" / String), &s, compare_answer);
    let alerts_route = warp::get()
        .and(warp::path!("v1" / "alerts"))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("authorization"))
        .and(with.clone())
        .and_then(
            |q: HashMap<String, String>, auth: Option<String>, s: Arc<Serving>| async move {
                alerts_answer(&s, &q, auth.as_deref()).map_err(warp::reject::custom)
            },
        );
    let alerts_stream = warp::get()
        .and(warp::path!("v1" / "alerts" / "stream"))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("authorization"))
        .and(with.clone())
        .and_then(
            |q: HashMap<String, String>, auth: Option<String>, s: Arc<Serving>| async move {
                alerts_sse(&s, &q, auth.as_deref()).map_err(warp::reject::custom)
            },
        );
    let forecast_route = per_view(
        warp::path!("v1" / "forecast" / String),
        &s,
        crate::forecast::answer,
    );
    let metrics_route = warp::get()
        .and(warp::path!("metrics"))
        .and(with.clone())
        .map(|s: Arc<Serving>| {
            warp::reply::with_header(
                crate::metrics::render(&s),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        });
    let openapi_route = warp::get()
        .and(warp::path!("openapi.json"))
        .and(with)
        .map(|s: Arc<Serving>| warp::reply::json(&s.openapi).into_response());
    let index = warp::get()
        .and(warp::path::end())
        .map(|| warp::reply::html(crate::dashboard::INDEX).into_response());
    let assets =
        warp::get()
            .and(warp::path!("assets" / String))
            .and_then(|file: String| async move {
                crate::dashboard::asset(&file).ok_or_else(warp::reject::not_found)
            });
    list.or(view)
        .unify()
        .or(compare_route)
        .unify()
        .or(metrics_route)
        .unify()
        .or(openapi_route)
        .unify()
        .or(index)
        .unify()
        .or(assets)
        .unify()
        .or(status_route)
        .unify()
        .or(livez)
        .unify()
        .or(readyz)
        .unify()
        .or(alerts_route)
        .unify()
        .or(alerts_stream)
        .unify()
        .or(forecast_route)
        .unify()
        .boxed()
}

/// An answer about one view: (state, view name, query, authorization).
type ViewAnswer = fn(
    &Serving,
    &str,
    &HashMap<String, String>,
    Option<&str>,
) -> Result<warp::reply::Response, ServingError>;

/// `GET path` (which extracts the view's name) with its query and
/// authorization, answered by `answer`.
fn per_view(
    path: impl Filter<Extract = (String,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    s: &Arc<Serving>,
    answer: ViewAnswer,
) -> BoxedFilter<(warp::reply::Response,)> {
    let s = s.clone();
    warp::get()
        .and(path)
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::any().map(move || s.clone()))
        .and_then(
            move |name: String,
                  q: HashMap<String, String>,
                  auth: Option<String>,
                  s: Arc<Serving>| async move {
                answer(&s, &name, &q, auth.as_deref()).map_err(warp::reject::custom)
            },
        )
        .boxed()
}

/// Checks that the request may read `device` (`None`: every device), when
/// the server has read tokens.
fn authorize_devices(
    s: &Serving,
    authorization: Option<&str>,
    device: Option<&str>,
) -> Result<(), ServingError> {
    if let Some(tokens) = &s.tokens {
        let entry = tokens.authenticate(authorization)?;
        braid_ingest::auth::Tokens::check_read(&entry, device)?;
    }
    Ok(())
}

/// `GET /v1/alerts`: the newest alerts kept (`device`, `metric`, `limit`,
/// default 100).
fn alerts_answer(
    s: &Serving,
    q: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<warp::reply::Response, ServingError> {
    let device = q.get("device").map(String::as_str);
    authorize_devices(s, authorization, device)?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l.parse::<usize>().map_err(|_| ServingError::BadParameter {
            name: "limit",
            reason: format!("`{l}` is not a count"),
        })?,
    };
    let alerts = s
        .alerts
        .recent(device, q.get("metric").map(String::as_str), limit);
    Ok(warp::reply::json(&json!({
        "alerts": alerts,
        "total": s.alerts.total.load(Ordering::Relaxed),
    }))
    .into_response())
}

/// `GET /v1/alerts/stream`: each new alert as a server-sent event
/// (`event: alert`, the alert as JSON), with `device` and `metric` filters.
fn alerts_sse(
    s: &Serving,
    q: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<warp::reply::Response, ServingError> {
    use futures::StreamExt;
    let device = q.get("device").cloned();
    authorize_devices(s, authorization, device.as_deref())?;
    let metric = q.get("metric").cloned();
    let alerts = futures::stream::unfold(s.alerts.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(a) => return Some((a, rx)),
                // A slow reader misses some; it goes on with the next.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events = alerts.filter_map(move |a| {
        let keep = (device.as_ref().is_none_or(|d| &a.device_id == d)
            && metric.as_ref().is_none_or(|m| &a.metric == m))
        .then_some(a);
        async move {
            keep.map(|a| {
                Ok::<_, std::convert::Infallible>(
                    warp::sse::Event::default()
                        .event("alert")
                        .json_data(&a)
                        .unwrap_or_else(|_| {
                            warp::sse::Event::default().comment("unserialisable alert")
                        }),
                )
            })
        }
    });
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response())
}

/// The JSON reply for an error (with `WWW-Authenticate` when a token is
/// wanted).
fn error_reply(e: &ServingError) -> warp::reply::Response {
    let mut resp = warp::reply::with_status(
        warp::reply::json(&json!({ "error": e.to_string() })),
        e.status(),
    )
    .into_response();
    if matches!(e, ServingError::Auth(a) if a.is_unauthenticated()) {
        resp.headers_mut().insert(
            warp::http::header::WWW_AUTHENTICATE,
            warp::http::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

async fn recover_own(r: warp::Rejection) -> Result<warp::reply::Response, warp::Rejection> {
    match r.find::<ServingError>() {
        Some(e) => Ok(error_reply(e)),
        None => Err(r),
    }
}

/// Turns any rejection into a JSON error with the right status.
pub async fn recover(r: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = r.find::<ServingError>() {
        return Ok(error_reply(e));
    }
    let (status, msg) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route".to_string())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
        )
    } else {
        (StatusCode::BAD_REQUEST, format!("{r:?}"))
    };
    Ok(
        warp::reply::with_status(warp::reply::json(&json!({ "error": msg })), status)
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use braid_testkit::openapi::{doc_paths, route_paths};

    #[test]
    fn the_openapi_paths_are_the_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(crate::OPENAPI).expect("openapi.json parses");
        assert_eq!(
            doc_paths(&doc["paths"]),
            route_paths(include_str!("api.rs"))
        );
    }

    #[test]
    fn metrics_label_routes_by_template() {
        use crate::metrics::route_of;
        assert_eq!(route_of("/v1/views/parking"), "/v1/views/{view}");
        assert_eq!(route_of("/v1/compare/x"), "/v1/compare/{view}");
        assert_eq!(route_of("/v1/views/a/b"), "other");
        assert_eq!(route_of("/anything/else"), "other");
        assert_eq!(route_of("/metrics"), "/metrics");
    }
}
