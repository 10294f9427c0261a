//! Integration tests of braid-core, one binary so the build links once.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod aggregates;
mod codec;
mod detectors_on_real_data;
mod forecast_on_real_data;
mod model;
mod views_file;
