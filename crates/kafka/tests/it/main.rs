//! Integration tests of the Kafka plumbing against the embedded broker,
//! one binary so the build links once.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod broker;
mod orphans;
