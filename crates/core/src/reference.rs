//! The reference model: a view recomputed from scratch from the log, as the
//! design states the rules, for `braid verify` and the tests.
//!
//! It shares no code with the layers' fold ([`crate::fold`]) beyond the
//! aggregate states and the view definition: per partition, in log order,
//! a record is a duplicate when an earlier record of its partition had the
//! same key (`device_id`, `metric`, `ts`, `seq`) at a clock (the largest
//! accept time so far) within the dedup horizon; its lateness class comes
//! from its own `ts` and `ingest_ts`; it falls in every window containing
//! its `ts`; it is late for a window that had ended by its partition's
//! watermark (the largest earlier `ts` minus the view's out-of-orderness).
//! Records a batch run covers are applied whatever their class; of the
//! rest, historical ones are counted as pending, not applied.
//!
//! One pass, memory per window and per distinct key: it suits a log of
//! millions of readings, not an unbounded one.

use std::collections::{BTreeMap, HashMap};

use crate::agg::AggState;
use crate::fold::{GroupKey, Layer};
use crate::hash::device_hash;
use crate::lateness::LatenessClass;
use crate::merge::Counters;
use crate::reading::Record;
use crate::view::{Settings, ViewDef};

/// What the model says about one (window start, group).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelWindow {
    /// Every applied value folded, batch and speed alike.
    pub state: AggState,
    /// Counters of the records a batch run covers.
    pub batch: Counters,
    /// Counters of the records left to the speed layer.
    pub speed: Counters,
}

/// The model's answer for one view, by (window start, group).
pub type ModelView = BTreeMap<(i64, GroupKey), ModelWindow>;

type Key<'a> = (&'a str, &'a str, i64, Option<u64>);

#[derive(Default)]
struct PartitionState<'a> {
    /// Largest accept time so far.
    clock: Option<i64>,
    /// Largest event time so far.
    max_ts: Option<i64>,
    /// Per key, the clock when it last occurred.
    seen: HashMap<Key<'a>, i64>,
}

/// Recomputes `view` from `records` (in log order per partition, any
/// interleaving of partitions); `layer` says which layer carries out each
/// record (a batch run for those below its cut and for imports).
pub fn recompute<'a>(
    view: &ViewDef,
    settings: &Settings,
    records: impl IntoIterator<Item = &'a Record>,
    layer: impl Fn(&Record) -> Layer,
) -> ModelView {
    let mut out = ModelView::new();
    let mut partitions: HashMap<i32, PartitionState<'a>> = HashMap::new();
    for rec in records {
        let r = &rec.reading;
        let part = partitions.entry(rec.position.partition).or_default();
        // Every record moves its partition's clock and event time, whether
        // or not this view takes its metric.
        let clock = part.clock.map_or(rec.ingest_ts, |c| c.max(rec.ingest_ts));
        part.clock = Some(clock);
        let watermark = part.max_ts.map(|ts| ts - view.max_out_of_orderness_ms);
        part.max_ts = Some(part.max_ts.map_or(r.ts, |m| m.max(r.ts)));
        let key: Key<'a> = (&r.device_id, &r.metric, r.ts, r.seq);
        let earlier = part.seen.insert(key, clock);
        if !view.accepts_metric(&r.metric) {
            continue;
        }
        let duplicate = earlier.is_some_and(|c| c >= clock - settings.dedup_horizon_ms);
        let layer = layer(rec);
        let pending = view.lateness.classify(r.ts, rec.ingest_ts) == LatenessClass::Historical
            && layer == Layer::Speed;
        let group: GroupKey = view
            .group_by
            .iter()
            .map(|k| r.key_value(k).map(str::to_string))
            .collect();
        let size = view.windowing.size_ms;
        let hop = view.windowing.hop_ms;
        let mut start = r.ts.div_euclid(hop) * hop;
        while start + size > r.ts {
            let w = out
                .entry((start, group.clone()))
                .or_insert_with(|| ModelWindow {
                    state: AggState::new(view.parts()),
                    batch: Counters::default(),
                    speed: Counters::default(),
                });
            let counters = match layer {
                Layer::Batch => &mut w.batch,
                Layer::Speed => &mut w.speed,
            };
            if duplicate {
                counters.duplicates_dropped += 1;
            } else if pending {
                counters.pending_historical += 1;
            } else {
                w.state.fold(r.value, device_hash(&r.device_id));
                counters.readings += 1;
                if watermark.is_some_and(|wm| wm >= start + size) {
                    counters.late_readings += 1;
                }
            }
            start -= hop;
        }
    }
    out
}
