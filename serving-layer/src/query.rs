//! Answers: the rows of a view for a time range, merged and labelled.
//!
//! A window's answer is `batch(cut) ⊕ speed(epochs at or after cut)`, per
//! partition, by the core's `merge_window`: the batch run's state for the
//! window plus the speed states of the epochs the run did not include. An
//! epoch that straddles the cut is an error, never a silent double count.
//! A window is `final` when the batch run holds it, the speed layer holds
//! nothing for it after the cut, and the watermark has passed its end (no
//! watermark, no `final`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;

use braid_core::agg::AggState;
use braid_core::fold::GroupKey;
use braid_core::merge::{Counters, Cut, MisalignedCut, Source, merge_window};
use braid_core::speedlog::{EpochPart, Published, SpeedKey, SpeedTable};
use braid_core::watermark::WindowState;
use braid_core::{Column, ViewDef};
use serde_json::ser::{CompactFormatter, Formatter};

use crate::batch::{BatchEntry, ServedRun};
use serde_json::Value;

/// What a query asks for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Windows starting at or after this, epoch ms.
    pub from: Option<i64>,
    /// Windows starting before this, epoch ms.
    pub to: Option<i64>,
    /// Only this device (views grouped by `device_id`).
    pub device: Option<String>,
    /// Only this metric (views grouped by `metric`).
    pub metric: Option<String>,
    /// Only final windows.
    pub final_only: bool,
    /// Which side answers.
    pub source: SourceFilter,
}

/// Which side answers a query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SourceFilter {
    /// Batch and speed, merged at the cut.
    #[default]
    Merged,
    /// The published batch run alone.
    Batch,
    /// The speed layer alone: every epoch it holds.
    Speed,
}

/// One row: one window of one group.
///
/// Written as one flat JSON object ([`Row::write_json`]): `window_start`,
/// `window_end`, the group values and aggregate columns by name (in name
/// order), then the source, state and counters.
#[derive(Clone, Debug)]
pub struct Row {
    /// Window start, epoch ms.
    pub window_start: i64,
    /// Window end, epoch ms.
    pub window_end: i64,
    /// The group's values, in the order of the view's `group_by`; rows of
    /// one answer share equal groups.
    pub group: Arc<GroupKey>,
    /// The aggregate columns' values, in the order of
    /// [`ViewDef::columns`], NaN where a column has no value (held inline:
    /// a view lists each aggregate once, so each column at most once).
    values: [f64; COLUMNS],
    /// The names of `group` and `values`, shared by every row of an answer.
    pub layout: Arc<RowLayout>,
    /// Where the numbers came from.
    pub source: &'static str,
    /// `open`, `closed` or `final`.
    pub state: &'static str,
    /// Readings folded in.
    pub readings: u64,
    /// Of those, from a batch run.
    pub readings_batch: u64,
    /// Of those, from the speed layer.
    pub readings_speed: u64,
    /// Readings that arrived after the window had closed.
    pub late_readings: u64,
    /// Historical readings not yet in any batch run.
    pub pending_historical: u64,
    /// Duplicates dropped.
    pub duplicates_dropped: u64,
    /// Devices seen in the window, where the view expects some.
    pub reporting_devices: Option<u64>,
    /// Devices the view expects per window.
    pub expected_devices: Option<u64>,
    /// `reporting_devices / expected_devices`, at most 1, where the view
    /// expects devices.
    pub completeness: Option<f64>,
}

/// How many aggregate columns there are, so the most a view has.
const COLUMNS: usize = 11;

/// The names of a view's row fields: its group columns, its aggregate
/// columns, and the order a JSON row lists them in.
#[derive(Debug)]
pub struct RowLayout {
    group_by: Vec<String>,
    columns: Vec<Column>,
    /// Every name once, in name order (an aggregate column hides a group
    /// column of the same name), with the JSON that leads its value
    /// (`,"name":`).
    order: Vec<(String, Vec<u8>, Slot)>,
}

/// Where a named field of a row is.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Group(usize),
    Value(usize),
}

impl RowLayout {
    /// The layout of `view`'s rows.
    pub fn of(view: &ViewDef) -> Self {
        let columns = view.columns();
        debug_assert!(columns.len() <= COLUMNS, "a column listed twice");
        let mut order: BTreeMap<String, Slot> = BTreeMap::new();
        for (i, name) in view.group_by.iter().enumerate() {
            order.insert(name.clone(), Slot::Group(i));
        }
        for (i, c) in columns.iter().enumerate() {
            order.insert(c.name().to_string(), Slot::Value(i));
        }
        Self {
            group_by: view.group_by.clone(),
            columns,
            order: order
                .into_iter()
                .map(|(name, slot)| {
                    let mut lead = b",".to_vec();
                    // A string always serializes.
                    let _ = serde_json::to_writer(&mut lead, &name);
                    lead.push(b':');
                    (name, lead, slot)
                })
                .collect(),
        }
    }
}

impl Row {
    /// The value of group column `name`, if the view groups by it and the
    /// group has one.
    pub fn group_value(&self, name: &str) -> Option<&str> {
        let i = self.layout.group_by.iter().position(|g| g == name)?;
        self.group.get(i)?.as_deref()
    }

    /// The value of aggregate column `col`, if the view has it and the
    /// window a finite value for it (the JSON answer writes the rest as
    /// null).
    pub fn value(&self, col: Column) -> Option<f64> {
        let i = self.layout.columns.iter().position(|c| *c == col)?;
        self.finite(i)
    }

    fn finite(&self, i: usize) -> Option<f64> {
        self.values.get(i).copied().filter(|v| v.is_finite())
    }

    /// The field `name` (a group or aggregate column) as the JSON answer
    /// writes it; `None` when the row has no such field.
    pub fn field(&self, name: &str) -> Option<Value> {
        let (_, _, slot) = self.layout.order.iter().find(|(n, ..)| n == name)?;
        Some(match *slot {
            Slot::Group(i) => self
                .group
                .get(i)
                .cloned()
                .flatten()
                .map_or(Value::Null, Value::String),
            Slot::Value(i) => self
                .finite(i)
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
        })
    }
}

impl Row {
    /// Sets the devices reporting in the row's window, and so its
    /// completeness (where the view expects devices).
    fn set_reporting(&mut self, n: u64) {
        self.reporting_devices = Some(n);
        self.completeness = self.expected_devices.map(|e| {
            if e == 0 {
                1.0
            } else {
                (n as f64 / e as f64).min(1.0)
            }
        });
    }

    /// Appends the row to `out` as one flat JSON object, written directly
    /// (the names' JSON is made once per answer, in [`RowLayout`]).
    pub fn write_json(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut f = CompactFormatter;
        out.extend_from_slice(b"{\"window_start\":");
        f.write_i64(out, self.window_start)?;
        out.extend_from_slice(b",\"window_end\":");
        f.write_i64(out, self.window_end)?;
        for (_, lead, slot) in &self.layout.order {
            out.extend_from_slice(lead);
            match *slot {
                Slot::Group(i) => match self.group.get(i).and_then(Option::as_deref) {
                    Some(v) => serde_json::to_writer(&mut *out, v)?,
                    None => out.extend_from_slice(b"null"),
                },
                Slot::Value(i) => match self.finite(i) {
                    Some(v) => write_f64(out, v)?,
                    None => out.extend_from_slice(b"null"),
                },
            }
        }
        out.extend_from_slice(b",\"source\":");
        serde_json::to_writer(&mut *out, self.source)?;
        out.extend_from_slice(b",\"state\":");
        serde_json::to_writer(&mut *out, self.state)?;
        for (lead, v) in [
            (&b",\"readings\":"[..], self.readings),
            (b",\"readings_batch\":", self.readings_batch),
            (b",\"readings_speed\":", self.readings_speed),
            (b",\"late_readings\":", self.late_readings),
            (b",\"pending_historical\":", self.pending_historical),
            (b",\"duplicates_dropped\":", self.duplicates_dropped),
        ] {
            out.extend_from_slice(lead);
            f.write_u64(out, v)?;
        }
        if let Some(v) = self.reporting_devices {
            out.extend_from_slice(b",\"reporting_devices\":");
            f.write_u64(out, v)?;
        }
        if let Some(v) = self.expected_devices {
            out.extend_from_slice(b",\"expected_devices\":");
            f.write_u64(out, v)?;
        }
        if let Some(v) = self.completeness {
            out.extend_from_slice(b",\"completeness\":");
            serde_json::to_writer(&mut *out, &v)?;
        }
        out.push(b'}');
        Ok(())
    }

    /// The row as a JSON value: what [`Row::write_json`] writes.
    pub fn to_json(&self) -> Value {
        let mut out = Vec::with_capacity(320);
        match self.write_json(&mut out) {
            Ok(()) => serde_json::from_slice(&out).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

/// Appends finite `v` to `out` as serde_json writes it; a whole number
/// (every count) through integer formatting, which is cheaper.
fn write_f64(out: &mut Vec<u8>, v: f64) -> std::io::Result<()> {
    if v.fract() == 0.0 && v.abs() < 1e15 && (v != 0.0 || v.is_sign_positive()) {
        CompactFormatter.write_i64(out, v as i64)?;
        out.extend_from_slice(b".0");
        Ok(())
    } else {
        CompactFormatter.write_f64(out, v)
    }
}

/// Appends `rows` to `out` as a JSON array.
pub fn write_json_rows(rows: &[Row], out: &mut Vec<u8>) -> std::io::Result<()> {
    out.push(b'[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.write_json(out)?;
    }
    out.push(b']');
    Ok(())
}

/// The view's watermark from the speed workers' progress: the smallest
/// largest-event-time over partitions, minus the view's slack.
pub fn watermark(table: &SpeedTable, view: &ViewDef) -> Option<i64> {
    table
        .partitions()
        .values()
        .filter_map(|p| p.progress.and_then(|(_, ts)| ts))
        .min()
        .map(|ts| ts.saturating_sub(view.max_out_of_orderness_ms))
}

/// One side's part of a window, as gathered for the merge.
#[derive(Clone, Copy)]
enum Part<'a> {
    /// The run's state and counters, and its values per column.
    Batch(&'a (AggState, Counters), &'a [f64]),
    Speed(EpochPart<'a>),
}

/// A speed state's part of its window.
fn speed_part<'a>(
    table: &'a SpeedTable,
    (k, p): (&'a SpeedKey, &'a Published),
) -> (i64, &'a GroupKey, Part<'a>) {
    (
        k.window_start,
        &k.group,
        Part::Speed((table.span_of(k, p), &p.state, &p.counters)),
    )
}

/// The merged rows of `view` that match `q`, ordered by window then group.
pub fn rows(
    table: &SpeedTable,
    batch: Option<&ServedRun>,
    view: &ViewDef,
    q: &Query,
) -> Result<Vec<Row>, MisalignedCut> {
    let wm = watermark(table, view);
    let device_pos = view.group_by.iter().position(|g| g == "device_id");
    // Completeness counts every device of a window, whatever device the
    // query asks for: the other devices' groups are looked at, not merged.
    let all_devices = Query {
        device: None,
        ..q.clone()
    };
    let every_device = view.expected_devices.is_some() && device_pos.is_some();
    let scan = group_filter(view, if every_device { &all_devices } else { q });
    let wanted = group_filter(view, q);
    let in_range = |start: i64, group: &GroupKey| {
        q.from.is_none_or(|f| start >= f) && q.to.is_none_or(|t| start < t) && scan(group)
    };
    // One device of a view grouped by device first, when no other device
    // is needed for completeness: seek to that device's groups.
    let lead = q
        .device
        .as_deref()
        .filter(|_| device_pos == Some(0) && !every_device);
    // Every part of every window in range, borrowed from the table and the
    // run, then sorted by window and group. The sort is stable, so a
    // window's speed parts keep the table's order.
    let mut parts: Vec<(i64, &GroupKey, Part<'_>)> = Vec::new();
    match (q.source, lead) {
        (SourceFilter::Batch, _) => {}
        (_, Some(d)) => parts.extend(
            table
                .states_led_by(&view.name, q.from, q.to, d)
                .into_iter()
                .filter(|(k, _)| in_range(k.window_start, &k.group))
                .map(|kp| speed_part(table, kp)),
        ),
        (_, None) => parts.extend(
            table
                .states_in(&view.name, q.from, q.to)
                .filter(|(k, _)| in_range(k.window_start, &k.group))
                .map(|kp| speed_part(table, kp)),
        ),
    }
    let batch = batch.filter(|_| q.source != SourceFilter::Speed);
    if let Some(b) = batch {
        let keys: Box<dyn Iterator<Item = BatchEntry<'_>>> = match lead {
            Some(d) => Box::new(b.led_by(q.from, q.to, d)),
            None => Box::new(b.range(q.from, q.to)),
        };
        parts.extend(
            keys.filter(|((start, group), ..)| in_range(*start, group))
                .map(|((start, group), v, values)| (*start, group, Part::Batch(v, values))),
        );
    }
    parts.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let cut = match (q.source, batch) {
        (SourceFilter::Merged, Some(b)) => b.manifest.cut.clone(),
        _ => Cut::default(),
    };
    let mut reporting: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    let layout = Arc::new(RowLayout::of(view));
    // Equal groups are cloned once per answer (one device's rows share
    // one: the last group is tried before the map).
    let mut groups: HashMap<&GroupKey, Arc<GroupKey>> = HashMap::new();
    let mut last: Option<Arc<GroupKey>> = None;
    // Rows are made as their windows merge; where the view expects
    // devices, their completeness is filled in once every window of the
    // range has been seen.
    let mut rows = Vec::with_capacity(parts.len());
    for window in parts.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        let (start, group, _) = window[0];
        let b = window.iter().find_map(|(_, _, p)| match p {
            Part::Batch(v, values) => Some((*v, *values)),
            Part::Speed(_) => None,
        });
        let spans = window.iter().filter_map(|(_, _, p)| match p {
            Part::Speed(s) => Some(*s),
            Part::Batch(..) => None,
        });
        let reports = if wanted(group) {
            let Some(m) = window_values(b, spans, &cut)? else {
                continue;
            };
            let reports = m.state.count() > 0;
            let end = start + view.windowing.size_ms;
            // Final needs evidence: the batch run alone holds the window,
            // and the watermark has passed its end.
            let covered = m.source == Source::Batch && wm.is_some_and(|w| w >= end);
            let window_state = WindowState::of(end, wm, covered);
            if !q.final_only || window_state == WindowState::Final {
                let group = match last.take() {
                    Some(g) if *g == *group => g,
                    _ => Arc::clone(
                        groups
                            .entry(group)
                            .or_insert_with(|| Arc::new(group.clone())),
                    ),
                };
                last = Some(Arc::clone(&group));
                let mut r = row(view, &layout, (start, end), group, &m, window_state);
                if device_pos.is_none() && view.expected_devices.is_some() {
                    // Not grouped by device: the window's distinct devices.
                    let n = m.state.value(Column::DistinctDevices).unwrap_or(0.0);
                    r.set_reporting(n as u64);
                }
                rows.push(r);
            }
            reports
        } else {
            let mut reports = b.is_some_and(|((s, _), _)| s.count() > 0);
            for (span, s, _) in spans {
                reports |= span.counts_after(&cut)? && s.count() > 0;
            }
            reports
        };
        if let Some(i) = device_pos
            && reports
            && view.expected_devices.is_some()
            && let Some(Some(d)) = group.get(i)
        {
            reporting.entry(start).or_default().insert(d);
        }
    }
    if device_pos.is_some() && view.expected_devices.is_some() {
        for r in &mut rows {
            let n = reporting.get(&r.window_start).map_or(0, |s| s.len() as u64);
            r.set_reporting(n);
        }
    }
    Ok(rows)
}

/// Whether a group of `view` matches `q`'s device and metric (a view not
/// grouped by one matches any): the positions are looked up once.
pub(crate) fn group_filter<'q>(view: &ViewDef, q: &'q Query) -> impl Fn(&GroupKey) -> bool + 'q {
    let want = |name: &str, value: &'q Option<String>| {
        let w = value.as_deref()?;
        Some((view.group_by.iter().position(|g| g == name)?, w))
    };
    let checks: Vec<(usize, &str)> = [want("device_id", &q.device), want("metric", &q.metric)]
        .into_iter()
        .flatten()
        .collect();
    move |group| {
        checks
            .iter()
            .all(|&(i, w)| group.get(i).and_then(Option::as_deref) == Some(w))
    }
}

/// A window's merged numbers, as its row needs them.
struct WindowValues<'a> {
    state: Cow<'a, AggState>,
    /// The values per column, where they are kept (else from `state`).
    values: Option<&'a [f64]>,
    batch: Counters,
    speed: Counters,
    source: Source,
}

/// The window of batch part `b` (with its kept values) and speed parts
/// `spans`, merged by the core's `merge_window`. Every span is checked
/// against the cut as the merge checks them; with none after it the batch
/// run alone answers, borrowed, from its values kept per column.
fn window_values<'a>(
    b: Option<(&'a (AggState, Counters), &'a [f64])>,
    spans: impl Iterator<Item = EpochPart<'a>> + Clone,
    cut: &Cut,
) -> Result<Option<WindowValues<'a>>, MisalignedCut> {
    let speed_counts =
        spans.clone().try_fold(
            false,
            |any, (span, _, _)| Ok(span.counts_after(cut)? || any),
        )?;
    if let Some(((state, c), values)) = b
        && !speed_counts
    {
        return Ok(Some(WindowValues {
            state: Cow::Borrowed(state),
            values: Some(values),
            batch: *c,
            speed: Counters::default(),
            source: Source::Batch,
        }));
    }
    Ok(
        merge_window(b.map(|((s, c), _)| (s, c)), spans, cut)?.map(|m| WindowValues {
            state: Cow::Owned(m.state),
            values: None,
            batch: m.batch,
            speed: m.speed,
            source: m.source,
        }),
    )
}

fn row(
    view: &ViewDef,
    layout: &Arc<RowLayout>,
    (start, end): (i64, i64),
    group: Arc<GroupKey>,
    m: &WindowValues<'_>,
    window_state: WindowState,
) -> Row {
    let (batch, speed) = (m.batch, m.speed);
    let mut values = [f64::NAN; COLUMNS];
    match m.values {
        Some(kept) => values[..kept.len()].copy_from_slice(kept),
        None => {
            for (v, &c) in values.iter_mut().zip(&layout.columns) {
                *v = m.state.value(c).unwrap_or(f64::NAN);
            }
        }
    }
    Row {
        window_start: start,
        window_end: end,
        group,
        values,
        layout: Arc::clone(layout),
        source: m.source.name(),
        state: window_state.name(),
        readings: batch.readings + speed.readings,
        readings_batch: batch.readings,
        readings_speed: speed.readings,
        late_readings: batch.late_readings + speed.late_readings,
        pending_historical: batch.pending_historical + speed.pending_historical,
        duplicates_dropped: batch.duplicates_dropped + speed.duplicates_dropped,
        reporting_devices: None,
        expected_devices: view.expected_devices,
        completeness: None,
    }
}

/// The counters every row carries, in the order of CSV and Arrow answers.
pub const COUNTERS: [&str; 6] = [
    "readings",
    "readings_batch",
    "readings_speed",
    "late_readings",
    "pending_historical",
    "duplicates_dropped",
];

/// Rows as CSV: a header of every field, then one line per row.
pub fn to_csv(view: &ViewDef, rows: &[Row]) -> String {
    let mut header: Vec<String> = vec!["window_start".into(), "window_end".into()];
    header.extend(view.group_by.iter().cloned());
    header.extend(view.columns().iter().map(|c| c.name().to_string()));
    header.extend(["source", "state"].map(String::from));
    header.extend(COUNTERS.map(String::from));
    if view.expected_devices.is_some() {
        header.extend(["reporting_devices", "expected_devices", "completeness"].map(String::from));
    }
    csv_table(&header, rows.iter().map(Row::to_json))
}

/// A CSV table: `header`, then one line per JSON object, each cell the
/// object's field of that name.
pub(crate) fn csv_table(header: &[String], rows: impl IntoIterator<Item = Value>) -> String {
    let mut out = header.join(",");
    out.push('\n');
    for v in rows {
        let cells: Vec<String> = header.iter().map(|h| csv_cell(v.get(h))).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// One CSV cell of a JSON value: strings quoted where they must be, null
/// empty, lists of strings joined by `;`.
fn csv_cell(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => csv_escape(s),
        Some(Value::Array(a)) => csv_escape(
            &a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(";"),
        ),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Rows as an Arrow IPC stream: one record batch, times as UTC
/// millisecond timestamps, `count` and the counters as `UInt64`, the other
/// aggregates as `Float64`; `metadata` (the answer's header) goes on the
/// schema.
pub fn to_arrow(
    view: &ViewDef,
    rows: &[Row],
    metadata: std::collections::HashMap<String, String>,
) -> Result<Vec<u8>, ArrowError> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.window_start))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.window_end))
                .with_timezone("UTC"),
        ),
    ];
    for (i, g) in view.group_by.iter().enumerate() {
        fields.push(Field::new(g, DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|r| r.group.get(i).and_then(Option::as_deref)),
        )));
    }
    for (i, c) in view.columns().into_iter().enumerate() {
        let name = c.name();
        // As in JSON, a value that is not finite is null.
        let values = rows.iter().map(|r| r.finite(i));
        if c == Column::Count {
            fields.push(Field::new(name, DataType::UInt64, true));
            cols.push(Arc::new(UInt64Array::from_iter(
                values.map(|v| v.map(|v| v as u64)),
            )));
        } else {
            fields.push(Field::new(name, DataType::Float64, true));
            cols.push(Arc::new(Float64Array::from_iter(values)));
        }
    }
    for (name, get) in [
        ("source", (|r: &Row| r.source) as fn(&Row) -> &'static str),
        ("state", |r: &Row| r.state),
    ] {
        fields.push(Field::new(name, DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(get),
        )));
    }
    type Counter = (&'static str, fn(&Row) -> u64);
    let counters: [Counter; 6] = [
        ("readings", |r| r.readings),
        ("readings_batch", |r| r.readings_batch),
        ("readings_speed", |r| r.readings_speed),
        ("late_readings", |r| r.late_readings),
        ("pending_historical", |r| r.pending_historical),
        ("duplicates_dropped", |r| r.duplicates_dropped),
    ];
    for (name, get) in counters {
        fields.push(Field::new(name, DataType::UInt64, false));
        cols.push(Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(get),
        )));
    }
    if view.expected_devices.is_some() {
        fields.push(Field::new("reporting_devices", DataType::UInt64, true));
        cols.push(Arc::new(UInt64Array::from_iter(
            rows.iter().map(|r| r.reporting_devices),
        )));
        fields.push(Field::new("expected_devices", DataType::UInt64, true));
        cols.push(Arc::new(UInt64Array::from_iter(
            rows.iter().map(|r| r.expected_devices),
        )));
        fields.push(Field::new("completeness", DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.completeness),
        )));
    }
    let schema = Schema::new(fields).with_metadata(metadata);
    let batch = RecordBatch::try_new(Arc::new(schema), cols)?;
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
    w.write(&batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::ViewSet;
    use serde_json::json;

    /// The written JSON parses to the row's fields: strings escaped, a
    /// missing group value and a value that is not finite as null, the
    /// optional fields only where the view expects devices.
    #[test]
    fn rows_write_the_json_they_hold() {
        let set = ViewSet::parse(
            r#"
[[views]]
name = "v"
window = "1m"
group_by = ["device_id", "zone"]
aggregates = ["count", "mean", "max"]
expected_devices = 4
"#,
        )
        .unwrap();
        let view = &set.views[0];
        let layout = Arc::new(RowLayout::of(view));
        let mut values = [f64::NAN; COLUMNS];
        values[0] = 3.0;
        values[1] = f64::INFINITY;
        values[2] = -0.25;
        let row = Row {
            window_start: 60_000,
            window_end: 120_000,
            group: Arc::new(vec![Some("a \"q\" \\ é \u{1}".into()), None]),
            values,
            layout,
            source: "batch",
            state: "final",
            readings: 3,
            readings_batch: 2,
            readings_speed: 1,
            late_readings: 4,
            pending_historical: 5,
            duplicates_dropped: 6,
            reporting_devices: Some(1),
            expected_devices: Some(4),
            completeness: Some(0.25),
        };
        let mut out = Vec::new();
        write_json_rows(std::slice::from_ref(&row), &mut out).unwrap();
        let got: Value = serde_json::from_slice(&out).unwrap();
        let want = json!([{
            "window_start": 60_000, "window_end": 120_000,
            "count": 3.0, "device_id": "a \"q\" \\ é \u{1}", "max": -0.25, "mean": null,
            "zone": null, "source": "batch", "state": "final",
            "readings": 3, "readings_batch": 2, "readings_speed": 1, "late_readings": 4,
            "pending_historical": 5, "duplicates_dropped": 6,
            "reporting_devices": 1, "expected_devices": 4, "completeness": 0.25,
        }]);
        assert_eq!(got, want);
        // Names in name order after the window, as the answers list them.
        let text = String::from_utf8(out).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        assert!(at("window_end") < at("count") && at("count") < at("device_id"));
        assert!(at("mean") < at("zone") && at("zone") < at("source"));
        assert_eq!(row.to_json(), want[0]);
        assert_eq!(row.field("mean"), Some(Value::Null));
        assert_eq!(row.value(Column::Max), Some(-0.25));
        assert_eq!(row.group_value("zone"), None);
    }

    /// Whole numbers take the integer path and still come out as serde_json
    /// writes them, signs, zeros and the edges of the path included.
    #[test]
    fn floats_are_written_as_serde_json_writes_them() {
        let mut cases = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            6.0,
            1440.0,
            0.5,
            -0.25,
            23.625,
            1e-7,
            1e15,
            -1e15,
            1e16,
            999_999_999_999_999.0,
            4.5e15,
            1e300,
            -1e300,
            f64::MIN_POSITIVE,
            f64::MAX,
            0.1 + 0.2,
            2f64.powi(53),
            2f64.powi(53) + 2.0,
        ];
        for i in -2000..2000 {
            cases.push(f64::from(i) * 0.25);
            cases.push(f64::from(i) * 1e9);
        }
        for v in cases {
            let mut got = Vec::new();
            write_f64(&mut got, v).unwrap();
            let want = serde_json::to_vec(&v).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap(),
                "{v:e}"
            );
        }
    }
}
