//! Which requests the ingest routes match.

use std::sync::Arc;

use warp::Filter;
use warp::filters::BoxedFilter;

use super::handlers::{self, BodyHeaders};
use super::models::{ReadingsQuery, WriteQuery};
use super::{Gateway, errors};

fn body_headers() -> impl Filter<Extract = (BodyHeaders,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<String>("content-encoding"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::optional::<String>("authorization"))
        .map(
            |content_type, content_encoding, content_length, authorization| BodyHeaders {
                content_type,
                content_encoding,
                content_length,
                authorization,
            },
        )
}

/// The ingest routes with the gateway's own `/livez`, `/readyz` and
/// `/metrics`, every rejection recovered into a JSON error.
pub fn routes(gw: Arc<Gateway>) -> BoxedFilter<(warp::reply::Response,)> {
    unrecovered(gw.clone())
        .or(super::ops::routes(gw))
        .unify()
        .recover(errors::recover)
        .unify()
        .boxed()
}

/// The ingest routes with only their own errors recovered, for mounting
/// beside other routes on one server.
pub fn mountable(gw: Arc<Gateway>) -> BoxedFilter<(warp::reply::Response,)> {
    unrecovered(gw).recover(errors::recover_own).unify().boxed()
}

fn unrecovered(gw: Arc<Gateway>) -> BoxedFilter<(warp::reply::Response,)> {
    let with_gw = {
        let gw = gw.clone();
        warp::any().map(move || gw.clone())
    };
    let readings = warp::post()
        .and(warp::path!("v1" / "readings"))
        .and(warp::query::<ReadingsQuery>())
        .and(body_headers())
        .and(warp::body::stream())
        .and(with_gw.clone())
        .and_then(|q, h, body, gw| handlers::readings(q, h, Box::pin(body), gw));
    let write_path = warp::path!("v1" / "write")
        .or(warp::path!("write"))
        .unify()
        .or(warp::path!("api" / "v2" / "write"))
        .unify();
    let write = warp::post()
        .and(write_path)
        .and(warp::query::<WriteQuery>())
        .and(body_headers())
        .and(warp::body::stream())
        .and(with_gw)
        .and_then(|q, h, body, gw| handlers::line_protocol(q, h, Box::pin(body), gw));
    readings.or(write).unify().boxed()
}

#[cfg(test)]
mod tests {
    use braid_testkit::openapi::{doc_paths, route_paths};

    #[test]
    fn the_openapi_paths_are_the_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(super::super::OPENAPI_PATHS).expect("openapi.json parses");
        assert_eq!(doc_paths(&doc), route_paths(include_str!("filters.rs")));
    }
}
