//! Integration tests of the speed layer against the embedded broker.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod model;
mod worker;
