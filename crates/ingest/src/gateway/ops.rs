//! The standalone gateway's operational routes: `GET /livez`, `GET /readyz`
//! (503 once it is draining at shutdown) and `GET /metrics`. `braid up`
//! serves the serving layer's instead, with the gateway's counters added
//! to its `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Reply;

use super::Gateway;

/// `/livez`, `/readyz`, `/metrics`.
pub fn routes(gw: Arc<Gateway>) -> BoxedFilter<(warp::reply::Response,)> {
    let livez = warp::get()
        .and(warp::path("livez"))
        .and(warp::path::end())
        .map(|| "ok".into_response());
    let ready_gw = gw.clone();
    let readyz = warp::get()
        .and(warp::path("readyz"))
        .and(warp::path::end())
        .map(move || {
            if ready_gw.metrics.draining.load(Ordering::Relaxed) {
                warp::reply::with_status("draining: shutting down", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response()
            } else {
                "ready".into_response()
            }
        });
    let metrics = warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .map(move || {
            warp::reply::with_header(
                gw.metrics_text(),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        });
    livez.or(readyz).unify().or(metrics).unify().boxed()
}
