//! Integration tests of the batch layer against the embedded broker.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod archive;
mod duckdb;
mod golden;
mod import;
mod recompute;
