//! Braid's pure core: the data model and every decision that both layers
//! must make the same way.
//!
//! - [`reading`]: readings, records, validation; [`codec`]: their JSON form
//!   in Kafka messages.
//! - [`view`]: view definitions (`data/views.toml`); [`window`]: window
//!   assignment; [`lateness`]: lateness classes; [`watermark`]: watermarks
//!   and window states; [`dedup`]: the duplicate rule.
//! - [`agg`]: the aggregate states, order-independent to the bit, and their
//!   binary encoding ([`encoding`]).
//! - [`fold`]: every decision about one record, in its partition's log
//!   order, for both layers.
//! - [`detect`]: anomaly detectors; [`baseline`]: seasonal baselines
//!   trained from batch views, and forecasts from them.
//! - [`merge`]: the exact batch ⊕ speed merge in log positions;
//!   [`speedlog`]: the wire format of `braid.speed`.
//! - [`reference`](mod@reference): every view recomputed from scratch from the log, the
//!   plain model `braid verify` and the tests check the layers against.
//!
//! What this crate deliberately does not do: IO of any kind. No clock is
//! read (callers pass `now`), no file or socket is opened, there is no
//! tokio and no rdkafka. The layers observe facts, call these functions and
//! carry out the decisions, so most behaviour is tested here without a
//! broker or a disk.

pub mod agg;
pub mod baseline;
pub mod codec;
pub mod dedup;
pub mod detect;
pub mod encoding;
pub mod fold;
pub mod hash;
pub mod lateness;
pub mod merge;
pub mod reading;
pub mod reference;
pub mod speedlog;
pub mod time;
pub mod view;
pub mod watermark;
pub mod window;

pub use agg::{AggState, Aggregate, Column, Parts};
pub use reading::{FieldError, Limits, Position, Reading, Record};
pub use view::{ViewDef, ViewSet, ViewsError};
