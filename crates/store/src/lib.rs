//! Braid's storage layout, shared by the layers that meet only through
//! stored files.
//!
//! - [`blobs`]: named immutable objects on a local directory or any object
//!   store URL, written create-only: where the archive lives.
//! - [`layout`]: where every file lives under the data directory, and the
//!   atomic write every layer uses.
//! - [`views`]: published batch views: `views/<view>/<run id>/` Parquet, its
//!   `manifest.json`, and `CURRENT`. The batch layer writes them; the
//!   serving layer reads them. Each row carries the canonical encoding of its
//!   aggregate state, so serving merges it with speed states exactly.
//! - [`baselines`]: seasonal baselines a batch run trained,
//!   `baselines/<run id>.bin` and `CURRENT`.
//! - [`published`]: where views and baselines are published: the data
//!   directory, another one, or an object store.
//!
//! This crate holds formats, not policies: which cut a run picks or how
//! serving merges is the business of the layers.

pub mod baselines;
pub mod blobs;
pub mod layout;
pub mod published;
pub mod views;

pub use blobs::{Backoff, BlobError, Blobs, Put};
pub use layout::Layout;
pub use views::{BatchView, Manifest, StoreError};
