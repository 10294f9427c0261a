//! The core's per-partition fold against the from-scratch reference model.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod fold_vs_model;
