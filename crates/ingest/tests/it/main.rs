//! Integration tests of the ingest gateway against the embedded broker.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod decoders;
mod gateway;
mod mqtt;
mod tls;

/// A gateway with the default limits and the system clock, writing to
/// `brokers`.
pub(crate) async fn default_gateway(brokers: &str) -> std::sync::Arc<braid_ingest::Gateway> {
    let sink = braid_ingest::ReadingSink::connect(brokers, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    std::sync::Arc::new(braid_ingest::Gateway::new(
        sink,
        braid_ingest::GatewayConfig::default(),
        braid_ingest::system_clock,
    ))
}
