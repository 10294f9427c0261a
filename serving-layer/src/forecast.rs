//! `GET /v1/forecast/{view}`: a device's metric forecast from its seasonal
//! baseline (trained by the batch layer from the view's windows, see
//! `braid_core::baseline`) and its recent level in the merged view.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use braid_core::baseline::{self, Baselines, NAIVE_TOLERANCE_MS, WEEK_MS};
use braid_core::time::parse_duration;
use braid_store::Layout;
use serde_json::json;
use warp::Reply;

use crate::Serving;
use crate::api::{ServingError, authorize_read, now_ms, time_param};
use crate::query::{Query, SourceFilter};

/// Longest horizon asked for.
pub const MAX_HORIZON_MS: i64 = 7 * 24 * 3_600_000;
/// Most points in one answer.
pub const MAX_POINTS: i64 = 10_000;

/// The current seasonal baselines, reloaded when `baselines/CURRENT`
/// names another run.
#[derive(Debug)]
pub struct BaselineCache {
    layout: Layout,
    current: RwLock<Option<Loaded>>,
}

/// The stamp of `baselines/CURRENT` last acted on, and what it named.
type Loaded = (
    Option<braid_store::published::Stamp>,
    Option<Arc<Baselines>>,
);

impl BaselineCache {
    /// Baselines under `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            current: RwLock::new(None),
        }
    }

    /// The current baselines (a stat of `baselines/CURRENT` to see whether
    /// they moved); `None` before the first batch run that trained any.
    pub fn get(&self) -> Result<Option<Arc<Baselines>>, ServingError> {
        let internal = |e: braid_store::StoreError| ServingError::Internal(e.to_string());
        // While `CURRENT`'s stamp stands, the loaded ones are current (an
        // object store is not waited for).
        let stamp = braid_store::baselines::current_stamp(&self.layout).map_err(internal)?;
        if let Ok(c) = self.current.read()
            && let Some((seen, b)) = c.as_ref()
            && *seen == stamp
        {
            return Ok(b.clone());
        }
        let Some(id) = braid_store::baselines::current_id(&self.layout).map_err(internal)? else {
            if let Ok(mut c) = self.current.write() {
                *c = Some((stamp, None));
            }
            return Ok(None);
        };
        let loaded = self
            .current
            .read()
            .ok()
            .and_then(|c| c.as_ref()?.1.clone())
            .filter(|b| b.run_id == id);
        let b = match loaded {
            Some(b) => b,
            None => {
                let b =
                    Arc::new(braid_store::baselines::read(&self.layout, &id).map_err(internal)?);
                tracing::info!(run = %id, profiles = b.profiles(), "seasonal baselines loaded");
                b
            }
        };
        if let Ok(mut c) = self.current.write() {
            *c = Some((stamp, Some(b.clone())));
        }
        Ok(Some(b))
    }
}

/// Answers a forecast query: `device` (required), `metric` (required when
/// the view takes several), `horizon` (default 24h, at most 7d), `step`
/// (default the view's window), `at` (the origin, default now).
pub fn answer(
    s: &Serving,
    name: &str,
    q: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<warp::reply::Response, ServingError> {
    let view = s
        .views
        .get(name)
        .ok_or_else(|| ServingError::UnknownView(name.to_string()))?;
    let device = q.get("device").ok_or_else(|| ServingError::BadParameter {
        name: "device",
        reason: "name the device to forecast".into(),
    })?;
    authorize_read(s, authorization, view, Some(device))?;
    let metric = match (q.get("metric"), view.metrics.as_slice()) {
        (Some(m), _) => m.clone(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(ServingError::BadParameter {
                name: "metric",
                reason: format!("view {} takes several metrics: name one", view.name),
            });
        }
    };
    let duration = |key: &'static str, default: i64| match q.get(key) {
        None => Ok(default),
        Some(v) => parse_duration(v)
            .and_then(|d| {
                if d > 0 {
                    Ok(d)
                } else {
                    Err("must be positive".into())
                }
            })
            .map_err(|reason| ServingError::BadParameter { name: key, reason }),
    };
    let horizon = duration("horizon", 24 * 3_600_000)?;
    if horizon > MAX_HORIZON_MS {
        return Err(ServingError::BadParameter {
            name: "horizon",
            reason: "at most 7d".into(),
        });
    }
    let step = duration("step", view.windowing.size_ms)?;
    if horizon / step > MAX_POINTS {
        return Err(ServingError::BadParameter {
            name: "step",
            reason: format!("horizon / step is over {MAX_POINTS} points: take a longer step"),
        });
    }
    let origin = time_param(q, "at")?.unwrap_or_else(now_ms);
    let baselines = s.baselines.get()?;
    let Some((run, base)) = baselines.as_ref().and_then(|b| {
        b.metrics
            .get(&metric)
            .filter(|m| m.view == view.name)
            .map(|m| (b, m))
    }) else {
        return Err(ServingError::Contract(format!(
            "no seasonal baseline of {metric} from view {}: give its detector `seasonal = \"{}\"` in the views file and run `braid batch run`",
            view.name, view.name
        )));
    };
    let level_col = baseline::level_column(&view.columns()).ok_or_else(|| {
        ServingError::Contract(format!("view {} has neither mean nor quantiles", view.name))
    })?;
    // The recent level and last week's values, from the merged view's
    // windows of the last week and a bit.
    let query = Query {
        from: Some(origin - WEEK_MS - NAIVE_TOLERANCE_MS - view.windowing.size_ms),
        to: Some(origin),
        device: Some(device.clone()),
        metric: Some(metric.clone()),
        final_only: false,
        source: SourceFilter::Merged,
    };
    s.batch
        .refresh(&s.views, view, &s.feed.table)
        .map_err(|e| {
            ServingError::Internal(format!("reading the batch run of {}: {e}", view.name))
        })?;
    let (mut rs, ..) = crate::api::merged(s, view, &query)?;
    rs.sort_by_key(|r| r.window_start);
    let recent: Vec<(i64, f64)> = rs
        .iter()
        .filter_map(|r| {
            let v = r.value(level_col)?;
            let mid = r.window_start + (r.window_end - r.window_start) / 2;
            (mid <= origin).then_some((mid, v))
        })
        .collect();
    let clamp = s
        .detectors
        .of(&metric)
        .find(|d| d.seasonal.is_some())
        .map(|d| {
            (
                d.min.unwrap_or(f64::NEG_INFINITY),
                d.max.unwrap_or(f64::INFINITY),
            )
        });
    let level = baseline::level(base, device, &recent, origin);
    let points = baseline::forecast(base, device, &recent, origin, step, horizon, clamp);
    let usable = base.devices.get(device.as_str()).map_or(0, |p| p.usable());
    Ok(warp::reply::json(&json!({
        "view": view.name,
        "device": device,
        "metric": metric,
        "origin": origin,
        "step_ms": step,
        "horizon_ms": horizon,
        "method": "seasonal baseline (median per hour of the week) + recent level (last day's mean deviation, and the last hours' damped 0.8 per hour), averaged with last week's value where known",
        "baseline": {
            "run_id": run.run_id,
            "trained_ms": run.trained_ms,
            "timezone": base.season.name(),
            "usable_slots": usable,
        },
        "level": level,
        "recent_windows": recent.len(),
        "points": points,
    }))
    .into_response())
}
