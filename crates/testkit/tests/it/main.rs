//! The core's per-partition fold and its one-pass reference model against
//! the literal from-scratch model.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod fold_vs_model;
mod reference_vs_model;
