//! The reference model: every view recomputed from scratch from the log.
//!
//! Input: records in log order per partition (any interleaving of
//! partitions). For each view and each record, literally as the design says:
//! the record is a duplicate if an earlier record of its partition had the
//! same key at a clock within the dedup horizon; its lateness class comes
//! from its own `ts` and `ingest_ts`; it falls in every window that contains
//! its `ts`; it is late if the window had ended by its partition's watermark
//! (the largest earlier `ts` minus the view's out-of-orderness); historical
//! readings are counted as pending, not applied, by the speed layer and
//! applied by a batch run.

use std::collections::BTreeMap;

use braid_core::agg::{AggState, Parts};
use braid_core::fold::Layer;
use braid_core::hash::device_hash;
use braid_core::lateness::LatenessClass;
use braid_core::view::Settings;
use braid_core::{Record, ViewDef};

/// What the model says about one (window start, group).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefWindow {
    /// Values applied, with their device ids, in log order.
    pub applied: Vec<(f64, String)>,
    /// Applied readings that arrived after the window had ended.
    pub late_readings: u64,
    /// Historical readings not applied.
    pub pending_historical: u64,
    /// Duplicates dropped.
    pub duplicates_dropped: u64,
}

impl RefWindow {
    /// The aggregate state of the applied values, folded in sorted order.
    pub fn state(&self, parts: Parts) -> AggState {
        let mut sorted = self.applied.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut s = AggState::new(parts);
        for (v, d) in &sorted {
            s.fold(*v, device_hash(d));
        }
        s
    }
}

/// Group key values, in the view's `group_by` order (`None`: tag absent).
pub type GroupKey = Vec<Option<String>>;

/// The model's answer for one view.
pub type RefView = BTreeMap<(i64, GroupKey), RefWindow>;

/// Recomputes `view` from `records` as the speed layer applies them
/// (historical readings pending).
pub fn reference_view(view: &ViewDef, settings: &Settings, records: &[Record]) -> RefView {
    reference_view_in(view, settings, records, Layer::Speed)
}

/// Recomputes `view` from `records` as `layer` applies them: a batch run
/// applies historical readings too.
pub fn reference_view_in(
    view: &ViewDef,
    settings: &Settings,
    records: &[Record],
    layer: Layer,
) -> RefView {
    let mut out = RefView::new();
    for (i, rec) in records.iter().enumerate() {
        let r = &rec.reading;
        if !view.accepts_metric(&r.metric) {
            continue;
        }
        let p = rec.position.partition;
        let earlier: Vec<&Record> = records[..i]
            .iter()
            .filter(|e| e.position.partition == p)
            .collect();
        let clock = earlier
            .iter()
            .map(|e| e.ingest_ts)
            .chain([rec.ingest_ts])
            .max()
            .unwrap_or(rec.ingest_ts);
        let is_dup = earlier.iter().enumerate().any(|(j, e)| {
            let clock_j = earlier[..=j]
                .iter()
                .map(|x| x.ingest_ts)
                .max()
                .unwrap_or(e.ingest_ts);
            let er = &e.reading;
            er.device_id == r.device_id
                && er.metric == r.metric
                && er.ts == r.ts
                && er.seq == r.seq
                && clock_j >= clock - settings.dedup_horizon_ms
        });
        let watermark = earlier
            .iter()
            .map(|e| e.reading.ts)
            .max()
            .map(|ts| ts - view.max_out_of_orderness_ms);
        let group: GroupKey = view
            .group_by
            .iter()
            .map(|k| r.key_value(k).map(str::to_string))
            .collect();
        let class = view.lateness.classify(r.ts, rec.ingest_ts);
        let size = view.windowing.size_ms;
        let hop = view.windowing.hop_ms;
        let mut start = r.ts.div_euclid(hop) * hop;
        while start + size > r.ts {
            let w = out.entry((start, group.clone())).or_default();
            if is_dup {
                w.duplicates_dropped += 1;
            } else if class == LatenessClass::Historical && layer == Layer::Speed {
                w.pending_historical += 1;
            } else {
                w.applied.push((r.value, r.device_id.clone()));
                if watermark.is_some_and(|wm| wm >= start + size) {
                    w.late_readings += 1;
                }
            }
            start -= hop;
        }
    }
    out
}
