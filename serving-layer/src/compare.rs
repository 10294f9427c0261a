//! The comparison of batch against speed, per window and group: both
//! values side by side, their difference, and why they differ.
//!
//! The batch value is the published run's state for the window. The speed
//! value is everything the speed layer folded for it: the states still in
//! the speed table plus the ones dropped once a batch run covered them
//! ([`Retired`], kept for this comparison up to a cap). Where the two
//! differ, the counters say why:
//!
//! - `not_yet_archived`: the speed layer holds readings at or after the
//!   run's cut, which no batch run has read yet;
//! - `pending`: historical readings the speed layer left pending (below
//!   the cut or after it), which a batch run applies;
//! - `late`, `duplicate`: below the cut, the layers counted late readings
//!   or dropped duplicates differently;
//! - `imported`: the run includes imported history, which never passes
//!   through the speed layer;
//! - `speed_state_not_kept`: the speed states of the window were evicted
//!   from [`Retired`];
//! - `unexplained`: none of the above: a defect worth a report.

use std::collections::{BTreeMap, HashMap};

use braid_core::agg::AggState;
use braid_core::fold::GroupKey;
use braid_core::merge::{Counters, MisalignedCut};
use braid_core::speedlog::{Published, SpeedKey, SpeedTable};
use braid_core::{Column, ViewDef};
use serde_json::{Map, Value, json};

use crate::batch::ServedRun;
use crate::query::{Query, group_filter};

/// How many dropped speed states the comparison keeps before it evicts the
/// oldest windows' states.
pub const RETIRED_CAP: usize = 200_000;

/// Key of a dropped state: window first, so the oldest go first.
type RetiredKey = (i64, String, GroupKey, i32, i64);

/// Speed states dropped from the table once every view's batch run covered
/// them, kept per epoch (so a state published again replaces itself
/// instead of counting twice) for the comparison.
#[derive(Debug)]
pub struct Retired {
    states: BTreeMap<RetiredKey, Published>,
    evicted_through: HashMap<String, i64>,
    cap: usize,
}

impl Default for Retired {
    fn default() -> Self {
        Self::with_cap(RETIRED_CAP)
    }
}

impl Retired {
    /// An empty store that keeps at most `cap` states.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            states: BTreeMap::new(),
            evicted_through: HashMap::new(),
            cap,
        }
    }

    /// Keeps `dropped`, replacing older values of the same keys, then
    /// evicts the oldest windows over the cap.
    pub fn absorb(&mut self, dropped: Vec<(SpeedKey, Published)>) {
        for (k, p) in dropped {
            let key = (k.window_start, k.view, k.group, k.partition, k.epoch_start);
            match self.states.get(&key) {
                Some(old) if old.max_offset >= p.max_offset => {}
                _ => {
                    self.states.insert(key, p);
                }
            }
        }
        while self.states.len() > self.cap {
            let Some(((start, view, ..), _)) = self.states.pop_first() else {
                break;
            };
            let e = self.evicted_through.entry(view).or_insert(start);
            *e = (*e).max(start);
        }
    }

    /// States kept.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The newest window start of `view` whose states were evicted.
    pub fn evicted_through(&self, view: &str) -> Option<i64> {
        self.evicted_through.get(view).copied()
    }
}

/// One epoch's state of one window and group, from either store.
struct Part<'a> {
    max_offset: i64,
    state: &'a AggState,
    counters: &'a Counters,
    after_cut: bool,
}

/// Both sides of one window and group.
#[derive(Default)]
struct Sides<'a> {
    batch: Option<&'a (AggState, Counters)>,
    speed: BTreeMap<(i32, i64), Part<'a>>,
}

/// The comparison of `view` over `q`'s range: one flat row per window and
/// group, and a summary.
pub fn compare(
    table: &SpeedTable,
    retired: &Retired,
    batch: Option<&ServedRun>,
    view: &ViewDef,
    q: &Query,
) -> Result<(Vec<Map<String, Value>>, Value), MisalignedCut> {
    let matches = group_filter(view, q);
    let in_range = |start: i64, group: &GroupKey| {
        q.from.is_none_or(|f| start >= f) && q.to.is_none_or(|t| start < t) && matches(group)
    };
    let cut = batch.map(|b| b.manifest.cut.clone()).unwrap_or_default();
    let mut sides: BTreeMap<(i64, GroupKey), Sides<'_>> = BTreeMap::new();
    if let Some(b) = batch {
        for (key, v, _) in b.range(q.from, q.to) {
            if in_range(key.0, &key.1) {
                sides.entry(key.clone()).or_default().batch = Some(v);
            }
        }
    }
    let from = q.from.unwrap_or(i64::MIN);
    for ((start, name, group, partition, epoch), p) in retired
        .states
        .range((from, String::new(), Vec::new(), i32::MIN, i64::MIN)..)
    {
        if name != &view.name || !in_range(*start, group) {
            continue;
        }
        sides
            .entry((*start, group.clone()))
            .or_default()
            .speed
            .insert(
                (*partition, *epoch),
                Part {
                    max_offset: p.max_offset,
                    state: &p.state,
                    counters: &p.counters,
                    after_cut: false,
                },
            );
    }
    for (k, published) in table.states_in(&view.name, q.from, q.to) {
        if !in_range(k.window_start, &k.group) {
            continue;
        }
        let span = table.span_of(k, published);
        let after_cut = span.counts_after(&cut)?;
        let entry = sides.entry((k.window_start, k.group.clone())).or_default();
        let key = (k.partition, k.epoch_start);
        if entry
            .speed
            .get(&key)
            .is_none_or(|old| old.max_offset < published.max_offset)
        {
            entry.speed.insert(
                key,
                Part {
                    max_offset: published.max_offset,
                    state: &published.state,
                    counters: &published.counters,
                    after_cut,
                },
            );
        }
    }
    let imported = batch.is_some_and(|b| !b.manifest.imports.is_empty());
    let evicted = retired.evicted_through(&view.name);
    let mut summary = Summary::default();
    let rows = sides
        .into_iter()
        .map(|((start, group), s)| {
            let row = compare_row(view, start, &group, &s, imported, evicted);
            summary.count(&row);
            row
        })
        .collect();
    Ok((rows, summary.to_json()))
}

fn compare_row(
    view: &ViewDef,
    start: i64,
    group: &GroupKey,
    s: &Sides<'_>,
    imported: bool,
    evicted: Option<i64>,
) -> Map<String, Value> {
    let mut speed: Option<(AggState, Counters)> = None;
    let mut after_cut = 0u64;
    let mut pending_after_cut = 0u64;
    // What the speed layer counted below the cut: the same records the run
    // read, so only these counters can explain a difference.
    let mut before = Counters::default();
    for p in s.speed.values() {
        if p.after_cut {
            after_cut += p.counters.readings;
            pending_after_cut += p.counters.pending_historical;
        } else {
            before.add(p.counters);
        }
        match &mut speed {
            Some((st, c)) => {
                st.merge(p.state);
                c.add(p.counters);
            }
            None => speed = Some((p.state.clone(), *p.counters)),
        }
    }
    let batch = s.batch;
    let columns = view.columns();
    let value =
        |side: Option<&(AggState, Counters)>, col: Column| side.and_then(|(st, _)| st.value(col));
    let same = match (batch, &speed) {
        (Some((bs, bc)), Some((ss, sc))) => {
            bc.readings == sc.readings
                && columns
                    .iter()
                    .all(|&c| bs.value(c).map(f64::to_bits) == ss.value(c).map(f64::to_bits))
        }
        _ => false,
    };
    let status = match (batch.is_some(), speed.is_some()) {
        _ if same => "equal",
        (true, true) => "differ",
        (true, false) => "only_batch",
        (false, _) => "only_speed",
    };
    let mut reasons: Vec<&'static str> = Vec::new();
    if !same {
        let b = batch.map(|(_, c)| *c).unwrap_or_default();
        if after_cut > 0 {
            reasons.push("not_yet_archived");
        }
        if before.pending_historical + pending_after_cut > 0 {
            reasons.push("pending");
        }
        // A batch run applies the readings the speed layer left pending,
        // late ones included: up to that many more late readings is theirs.
        if batch.is_some()
            && (b.late_readings < before.late_readings
                || b.late_readings > before.late_readings + before.pending_historical)
        {
            reasons.push("late");
        }
        if batch.is_some() && b.duplicates_dropped != before.duplicates_dropped {
            reasons.push("duplicate");
        }
        // More batch readings than the speed layer saw below the cut and
        // left pending: only imports reach a run without the log.
        if imported && b.readings > before.readings + before.pending_historical {
            reasons.push("imported");
        }
        if evicted.is_some_and(|e| start <= e) {
            reasons.push("speed_state_not_kept");
        }
        if reasons.is_empty() {
            reasons.push("unexplained");
        }
    }
    let mut row = Map::new();
    row.insert("window_start".into(), json!(start));
    row.insert("window_end".into(), json!(start + view.windowing.size_ms));
    for (name, v) in view.group_by.iter().zip(group) {
        row.insert(name.clone(), v.clone().map_or(Value::Null, Value::String));
    }
    row.insert("status".into(), json!(status));
    row.insert("reasons".into(), json!(reasons));
    let num = |v: Option<f64>| {
        v.and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number)
    };
    for &col in &columns {
        let (b, sp) = (value(batch, col), value(speed.as_ref(), col));
        let name = col.name();
        row.insert(format!("batch_{name}"), num(b));
        row.insert(format!("speed_{name}"), num(sp));
        let diff = b.zip(sp).map(|(b, s)| b - s);
        row.insert(format!("diff_{name}"), num(diff));
    }
    let counters = |prefix: &str, c: Option<Counters>, row: &mut Map<String, Value>| {
        let c = c.as_ref();
        row.insert(format!("{prefix}_readings"), json!(c.map(|c| c.readings)));
        row.insert(
            format!("{prefix}_late_readings"),
            json!(c.map(|c| c.late_readings)),
        );
        row.insert(
            format!("{prefix}_pending_historical"),
            json!(c.map(|c| c.pending_historical)),
        );
        row.insert(
            format!("{prefix}_duplicates_dropped"),
            json!(c.map(|c| c.duplicates_dropped)),
        );
    };
    counters("batch", batch.map(|(_, c)| *c), &mut row);
    counters("speed", speed.as_ref().map(|(_, c)| *c), &mut row);
    row.insert("speed_readings_after_cut".into(), json!(after_cut));
    row
}

/// How many windows fall in each status, and how often each reason is given.
#[derive(Default)]
struct Summary {
    windows: u64,
    by_status: BTreeMap<String, u64>,
    by_reason: BTreeMap<String, u64>,
}

impl Summary {
    fn count(&mut self, row: &Map<String, Value>) {
        self.windows += 1;
        if let Some(s) = row.get("status").and_then(Value::as_str) {
            *self.by_status.entry(s.to_string()).or_default() += 1;
        }
        for r in row
            .get("reasons")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            *self.by_reason.entry(r.to_string()).or_default() += 1;
        }
    }

    fn to_json(&self) -> Value {
        let n = |s: &str| self.by_status.get(s).copied().unwrap_or(0);
        json!({
            "windows": self.windows,
            "equal": n("equal"),
            "differing": n("differ"),
            "only_batch": n("only_batch"),
            "only_speed": n("only_speed"),
            "reasons": self.by_reason,
        })
    }
}

/// The columns of a comparison row, in order.
pub fn header(view: &ViewDef) -> Vec<String> {
    let mut h: Vec<String> = vec!["window_start".into(), "window_end".into()];
    h.extend(view.group_by.iter().cloned());
    h.extend(["status", "reasons"].map(String::from));
    for col in view.columns() {
        let name = col.name();
        h.extend([
            format!("batch_{name}"),
            format!("speed_{name}"),
            format!("diff_{name}"),
        ]);
    }
    for side in ["batch", "speed"] {
        for c in [
            "readings",
            "late_readings",
            "pending_historical",
            "duplicates_dropped",
        ] {
            h.push(format!("{side}_{c}"));
        }
    }
    h.push("speed_readings_after_cut".into());
    h
}

/// The comparison's rows as CSV, reasons joined by `;`.
pub fn to_csv(view: &ViewDef, rows: &[Map<String, Value>]) -> String {
    crate::query::csv_table(&header(view), rows.iter().cloned().map(Value::Object))
}
