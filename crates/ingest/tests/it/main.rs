//! Integration tests of the ingest gateway against the embedded broker.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod decoders;
mod gateway;
mod mqtt;
mod tls;
