//! Integration tests of the serving layer over real HTTP, fed by a real
//! speed worker through the embedded broker.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod compare;
mod dashboard;
mod forecasts;
mod queries;
mod seam;

use braid_core::ViewSet;
use braid_serving::{ServingConfig, api::routes, start};
use tokio_util::sync::CancellationToken;

/// Starts a replica over `brokers` and `data_dir` serving `views` on an
/// ephemeral port until `stop`; its `http://` base address.
pub(crate) async fn serve(
    brokers: String,
    data_dir: &std::path::Path,
    views: ViewSet,
    stop: &CancellationToken,
) -> String {
    serve_with_tokens(brokers, data_dir, views, None, stop).await
}

/// [`serve`] with read tokens.
pub(crate) async fn serve_with_tokens(
    brokers: String,
    data_dir: &std::path::Path,
    views: ViewSet,
    tokens: Option<std::sync::Arc<braid_ingest::auth::Tokens>>,
    stop: &CancellationToken,
) -> String {
    serve_config(
        ServingConfig {
            brokers,
            layout: braid_store::Layout::new(data_dir),
            archive: braid_store::Blobs::local(data_dir),
            views,
            http: "127.0.0.1:0".parse().unwrap(),
            openapi_extra: None,
            tokens,
            tls: None,
            detectors: braid_core::detect::Detectors::default(),
            alert_webhook: None,
        },
        stop,
    )
    .await
}

/// Starts a replica of `config` on an ephemeral port until `stop`; its
/// `http://` base address.
pub(crate) async fn serve_config(config: ServingConfig, stop: &CancellationToken) -> String {
    let serving = start(&config, stop.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let s = stop.clone();
    tokio::spawn(
        warp::serve(routes(serving))
            .incoming(listener)
            .graceful(async move { s.cancelled().await })
            .run(),
    );
    base
}
