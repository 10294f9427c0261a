//! Published batch views.
//!
//! A run of a view is a folder `views/<view>/<run id>/` holding
//! `part-0.parquet` (one row per window and group) and `manifest.json`
//! ([`Manifest`]). It is written under a temporary name and renamed into
//! place whole (in an object store: uploaded file by file, the manifest
//! last, under its own new run id); then `views/<view>/CURRENT`, which
//! names the published run, is replaced atomically. So a reader sees the
//! previous run or the new one, never part of one, whatever crashes when.
//!
//! Each row has the window (`window_start`, `window_end`, UTC timestamps),
//! one string column per group key, the view's value columns (`count` as an
//! unsigned integer, the rest as doubles), the counters (`readings`,
//! `late_readings`, `duplicates_dropped`) and `state`: the canonical
//! encoding of the aggregate state (see `braid_core::agg::AggState::encode`),
//! which serving merges with speed states to the bit. DuckDB, polars and
//! pandas read the files as they are.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType, UInt64Type,
};
use braid_core::ViewDef;
use braid_core::agg::{AggState, Column};
use braid_core::fold::GroupKey;
use braid_core::merge::{Counters, Cut};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::layout::{Layout, sync_dir, write_atomic};

/// The manifest format written by this version.
pub const MANIFEST_FORMAT: u32 = 1;

/// Why a batch view could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The object store holding the published runs failed.
    #[error(transparent)]
    Blob(Box<crate::blobs::BlobError>),
    /// A file is not what this version writes.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn format_err(path: &Path, message: impl std::fmt::Display) -> StoreError {
    StoreError::Format {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// What a run of a view was made of: `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The view.
    pub view: String,
    /// The run.
    pub run_id: String,
    /// When the run started, epoch ms.
    pub started_ms: i64,
    /// When it finished, epoch ms.
    pub finished_ms: i64,
    /// Hash of the view definition and the dedup horizon (hex): a run is
    /// reused incrementally only under the same definition.
    pub definition_hash: String,
    /// Per partition, the first offset not included.
    pub cut: Cut,
    /// Archive files read, relative to the data directory.
    pub archive_files: Vec<String>,
    /// Imports included, by id.
    pub imports: Vec<String>,
    /// Archived and imported records read.
    pub records_read: u64,
    /// Rows written (windows times groups).
    pub rows: u64,
    /// Readings applied over all rows.
    pub readings: u64,
    /// Duplicates dropped over all rows.
    pub duplicates_dropped: u64,
    /// Whether this run extended the previous one instead of starting over.
    pub incremental: bool,
    /// The run it extended.
    pub previous_run: Option<String>,
}

impl Manifest {
    /// The manifest of run `run_id` of `view` holding `windows`, cut at
    /// `cut`: rows, readings and duplicates counted from the windows; times,
    /// inputs and lineage empty for the caller to fill in.
    pub fn new(
        view: &ViewDef,
        views: &braid_core::ViewSet,
        run_id: &str,
        cut: Cut,
        windows: &BTreeMap<(i64, GroupKey), (AggState, Counters)>,
    ) -> Self {
        let (readings, duplicates_dropped) = windows.values().fold((0, 0), |(r, d), (_, c)| {
            (r + c.readings, d + c.duplicates_dropped)
        });
        Self {
            format: MANIFEST_FORMAT,
            view: view.name.clone(),
            run_id: run_id.to_string(),
            started_ms: 0,
            finished_ms: 0,
            definition_hash: definition_hash(view, views),
            cut,
            archive_files: Vec::new(),
            imports: Vec::new(),
            records_read: 0,
            rows: windows.len() as u64,
            readings,
            duplicates_dropped,
            incremental: false,
            previous_run: None,
        }
    }
}

/// A published run: its manifest and its windows.
#[derive(Clone, Debug)]
pub struct BatchView {
    /// The manifest.
    pub manifest: Manifest,
    /// State and counters per (window start, group).
    pub windows: BTreeMap<(i64, GroupKey), (AggState, Counters)>,
}

const PART: &str = "part-0.parquet";
const MANIFEST: &str = "manifest.json";

/// The Arrow schema of a view's rows.
pub fn schema(view: &ViewDef) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
    ];
    for g in &view.group_by {
        fields.push(Field::new(g, DataType::Utf8, true));
    }
    for c in view.columns() {
        let dt = if c == Column::Count {
            DataType::UInt64
        } else {
            DataType::Float64
        };
        fields.push(Field::new(c.name(), dt, true));
    }
    for c in COUNTERS {
        fields.push(Field::new(c, DataType::UInt64, false));
    }
    fields.push(Field::new("state", DataType::Binary, false));
    Arc::new(Schema::new(fields))
}

const COUNTERS: [&str; 3] = ["readings", "late_readings", "duplicates_dropped"];

fn counter(c: &Counters, name: &str) -> u64 {
    match name {
        "readings" => c.readings,
        "late_readings" => c.late_readings,
        _ => c.duplicates_dropped,
    }
}

/// The rows of a view as one record batch, in window then group order.
pub fn to_batch(
    view: &ViewDef,
    windows: &BTreeMap<(i64, GroupKey), (AggState, Counters)>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = windows.len();
    let mut start = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut groups: Vec<StringBuilder> =
        view.group_by.iter().map(|_| StringBuilder::new()).collect();
    let columns = view.columns();
    let mut values: Vec<ArrayRef> = Vec::new();
    let mut counts = UInt64Builder::with_capacity(n);
    let mut floats: Vec<Float64Builder> = columns
        .iter()
        .map(|_| Float64Builder::with_capacity(n))
        .collect();
    let mut counter_cols: Vec<UInt64Builder> = COUNTERS
        .iter()
        .map(|_| UInt64Builder::with_capacity(n))
        .collect();
    let mut state = BinaryBuilder::with_capacity(n, n * 64);
    for ((ws, group), (s, c)) in windows {
        start.append_value(*ws);
        end.append_value(ws + view.windowing.size_ms);
        for (b, g) in groups.iter_mut().zip(group) {
            b.append_option(g.as_deref());
        }
        for (b, col) in floats.iter_mut().zip(&columns) {
            if *col == Column::Count {
                counts.append_value(s.count());
            } else {
                b.append_option(s.value(*col));
            }
        }
        for (b, name) in counter_cols.iter_mut().zip(COUNTERS) {
            b.append_value(counter(c, name));
        }
        state.append_value(s.to_bytes());
    }
    let mut cols: Vec<ArrayRef> = vec![Arc::new(start.finish()), Arc::new(end.finish())];
    cols.extend(groups.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    let mut counts = Some(counts);
    for (b, col) in floats.iter_mut().zip(&columns) {
        if *col == Column::Count {
            if let Some(mut c) = counts.take() {
                values.push(Arc::new(c.finish()));
            }
        } else {
            values.push(Arc::new(b.finish()));
        }
    }
    cols.extend(values);
    cols.extend(
        counter_cols
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef),
    );
    cols.push(Arc::new(state.finish()));
    RecordBatch::try_new(schema(view), cols)
}

/// A run being written: a temporary folder until [`StagedRun::publish`].
#[derive(Debug)]
pub struct StagedRun {
    layout: Layout,
    view: String,
    run_id: String,
    dir: PathBuf,
}

fn current_key(view: &str) -> String {
    format!("views/{view}/CURRENT")
}

fn run_key(view: &str, run_id: &str, file: &str) -> String {
    format!("views/{view}/{run_id}/{file}")
}

impl StagedRun {
    /// Starts run `run_id` of `view` in a fresh temporary folder.
    pub fn new(layout: &Layout, view: &str, run_id: &str) -> Result<Self, StoreError> {
        let dir = layout.view(view).join(format!(".{run_id}.tmp"));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Self {
            layout: layout.clone(),
            view: view.to_string(),
            run_id: run_id.to_string(),
            dir,
        })
    }

    /// The temporary folder, for files of the caller's own.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the rows.
    pub fn write_rows(
        &self,
        view: &ViewDef,
        windows: &BTreeMap<(i64, GroupKey), (AggState, Counters)>,
    ) -> Result<(), StoreError> {
        let path = self.dir.join(PART);
        let batch = to_batch(view, windows).map_err(|e| format_err(&path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let file = fs::File::create(&path).map_err(io(&path))?;
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))
            .map_err(|e| format_err(&path, e))?;
        w.write(&batch).map_err(|e| format_err(&path, e))?;
        let file = w.into_inner().map_err(|e| format_err(&path, e))?;
        file.sync_all().map_err(io(&path))
    }

    /// Writes the manifest, moves the run into place (or uploads it) and
    /// makes it current; returns where it is.
    pub fn publish(self, manifest: &Manifest) -> Result<PathBuf, StoreError> {
        let mpath = self.dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(manifest).map_err(|e| format_err(&mpath, e))?;
        let published = self.layout.published();
        let current = current_key(&self.view);
        if published.local().is_some() {
            write_atomic(&mpath, text.as_bytes()).map_err(io(&mpath))?;
            sync_dir(&self.dir).map_err(io(&self.dir))?;
            let fin = self.layout.run(&self.view, &self.run_id);
            fs::rename(&self.dir, &fin).map_err(io(&fin))?;
            let vdir = self.layout.view(&self.view);
            sync_dir(&vdir).map_err(io(&vdir))?;
        } else {
            // Every file, then the manifest, which makes the run whole.
            let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
                .map_err(io(&self.dir))?
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for f in files {
                let Some(name) = f.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let bytes = fs::read(&f).map_err(io(&f))?;
                published.write(&run_key(&self.view, &self.run_id, name), bytes)?;
            }
            let key = run_key(&self.view, &self.run_id, MANIFEST);
            published.write(&key, text.into_bytes())?;
            fs::remove_dir_all(&self.dir).map_err(io(&self.dir))?;
        }
        published.write(&current, format!("{}\n", self.run_id).into_bytes())?;
        published.forget_stamp(&current);
        Ok(published.name(&format!("views/{}/{}", self.view, self.run_id)))
    }
}

/// The hash a manifest records for a view under the settings of `views`:
/// a run answers for a view only under the same definition.
pub fn definition_hash(view: &ViewDef, views: &braid_core::ViewSet) -> String {
    let text = format!("{:016x}|{}", view.hash(), views.settings.dedup_horizon_ms);
    format!("{:016x}", braid_core::hash::stable_hash(text.as_bytes()))
}

/// The published run id of `view`, if any.
pub fn current_run(layout: &Layout, view: &str) -> Result<Option<String>, StoreError> {
    let Some(bytes) = layout.published().read(&current_key(view))? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(Some(text.trim().to_string()).filter(|s| !s.is_empty()))
}

/// What `views/<view>/CURRENT` is now, without reading it (see
/// [`crate::published::Stamp`]): a reader can skip reading `CURRENT` while the stamp it
/// last read at stands. `None` while nothing is published. In an object
/// store the stamp is asked at most once a second.
pub fn current_stamp(layout: &Layout, view: &str) -> Result<Option<CurrentStamp>, StoreError> {
    layout.published().stamp(&current_key(view))
}

/// See [`current_stamp`].
pub type CurrentStamp = crate::published::Stamp;

/// Reads the manifest of one run.
pub fn read_manifest(layout: &Layout, view: &str, run_id: &str) -> Result<Manifest, StoreError> {
    let key = run_key(view, run_id, MANIFEST);
    let published = layout.published();
    let path = published.name(&key);
    let bytes = published.read(&key)?.ok_or_else(|| {
        io(&path)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such manifest",
        ))
    })?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| format_err(&path, e))?;
    if m.format != MANIFEST_FORMAT {
        return Err(format_err(
            &path,
            format!(
                "manifest format {} (this version reads {MANIFEST_FORMAT})",
                m.format
            ),
        ));
    }
    Ok(m)
}

/// Reads a file of the caller's own that a run published beside its rows
/// (see [`StagedRun::dir`]): `None` when it has none.
pub fn read_run_file(
    layout: &Layout,
    view: &str,
    run_id: &str,
    file: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    layout.published().read(&run_key(view, run_id, file))
}

/// Reads one run of `view`.
pub fn read_run(layout: &Layout, view: &ViewDef, run_id: &str) -> Result<BatchView, StoreError> {
    let manifest = read_manifest(layout, &view.name, run_id)?;
    let key = run_key(&view.name, run_id, PART);
    let path = layout.published().name(&key);
    let bytes = layout.published().read(&key)?.ok_or_else(|| {
        io(&path)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the run has no rows file",
        ))
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|b| b.build())
        .map_err(|e| format_err(&path, e))?;
    let mut windows = BTreeMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| format_err(&path, e))?;
        read_batch(&path, view, &batch, &mut windows)?;
    }
    Ok(BatchView { manifest, windows })
}

fn read_batch(
    path: &Path,
    view: &ViewDef,
    batch: &RecordBatch,
    out: &mut BTreeMap<(i64, GroupKey), (AggState, Counters)>,
) -> Result<(), StoreError> {
    let col = |name: &str| -> Result<&ArrayRef, StoreError> {
        batch
            .column_by_name(name)
            .ok_or_else(|| format_err(path, format!("no column {name}")))
    };
    let starts = col("window_start")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| format_err(path, "window_start is not a timestamp"))?;
    let mut groups = Vec::new();
    for g in &view.group_by {
        groups.push(
            col(g)?
                .as_string_opt::<i32>()
                .ok_or_else(|| format_err(path, format!("{g} is not a string column")))?,
        );
    }
    let counters: Vec<_> = COUNTERS
        .iter()
        .map(|c| {
            col(c)?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| format_err(path, format!("{c} is not a UInt64 column")))
        })
        .collect::<Result<_, _>>()?;
    let states = col("state")?
        .as_binary_opt::<i32>()
        .ok_or_else(|| format_err(path, "state is not a binary column"))?;
    for i in 0..batch.num_rows() {
        let group: GroupKey = groups
            .iter()
            .map(|g| g.is_valid(i).then(|| g.value(i).to_string()))
            .collect();
        let state = AggState::from_bytes(states.value(i))
            .map_err(|e| format_err(path, format!("row {i}: state: {e}")))?;
        let c = Counters {
            readings: counters[0].value(i),
            late_readings: counters[1].value(i),
            pending_historical: 0,
            duplicates_dropped: counters[2].value(i),
        };
        out.insert((starts.value(i), group), (state, c));
    }
    Ok(())
}

/// Reads the published run of `view`, if any.
pub fn read_current(layout: &Layout, view: &ViewDef) -> Result<Option<BatchView>, StoreError> {
    match current_run(layout, &view.name)? {
        Some(run) => read_run(layout, view, &run).map(Some),
        None => Ok(None),
    }
}

/// Runs of `view` with a manifest, oldest first (run ids sort by time).
pub fn runs(layout: &Layout, view: &str) -> Result<Vec<String>, StoreError> {
    let (runs, _) = run_folders(layout, view)?;
    Ok(runs)
}

/// The run folders of `view`: those with a manifest, and those without
/// (a run that did not finish its upload), in name order.
fn run_folders(layout: &Layout, view: &str) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let prefix = format!("views/{view}/");
    let mut whole = std::collections::BTreeSet::new();
    let mut all = std::collections::BTreeSet::new();
    for key in layout.published().list(&prefix)? {
        let Some((run, file)) = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        if run.starts_with('.') {
            continue;
        }
        if file == MANIFEST {
            whole.insert(run.to_string());
        }
        all.insert(run.to_string());
    }
    let partial = all.difference(&whole).cloned().collect();
    Ok((whole.into_iter().collect(), partial))
}

/// Removes all but the newest `keep` runs of `view` (never the current
/// one) and temporary folders of runs that did not finish.
pub fn prune(layout: &Layout, view: &str, keep: usize) -> Result<Vec<String>, StoreError> {
    let current = current_run(layout, view)?;
    let all = runs(layout, view)?;
    let mut removed = Vec::new();
    let excess = all.len().saturating_sub(keep.max(1));
    for run in all.into_iter().take(excess) {
        if Some(&run) == current.as_ref() {
            continue;
        }
        layout
            .published()
            .remove_dir(&format!("views/{view}/{run}"))?;
        removed.push(run);
    }
    Ok(removed)
}

/// Removes what runs left behind when they were killed: temporary folders,
/// and in an object store the uploads that never got their manifest. Call
/// it only under the batch lock.
pub fn remove_stale(layout: &Layout, view: &str) -> Result<(), StoreError> {
    let dir = layout.view(view);
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.ends_with(".tmp") && e.path().is_dir() {
                fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
            }
        }
    }
    if layout.published().local().is_none() {
        let current = current_run(layout, view)?;
        for run in run_folders(layout, view)?.1 {
            if Some(&run) != current.as_ref() {
                layout
                    .published()
                    .remove_dir(&format!("views/{view}/{run}"))?;
            }
        }
    }
    Ok(())
}

/// The cuts of partition `p` in every view's published run: offsets where
/// the speed layer must end an epoch so that its epochs never straddle a
/// batch cut.
pub fn published_cuts(layout: &Layout, p: i32) -> Result<Vec<i64>, StoreError> {
    let mut out = Vec::new();
    for view in published_views(layout)? {
        if let Some(run) = current_run(layout, &view)?
            && let Some(&c) = read_manifest(layout, &view, &run)?.cut.0.get(&p)
        {
            out.push(c);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The views with a published run (a `CURRENT`), by name.
fn published_views(layout: &Layout) -> Result<Vec<String>, StoreError> {
    let published = layout.published();
    if let Some(root) = published.local() {
        // Not every run's files: one level.
        let dir = root.join("views");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|v| dir.join(v).join("CURRENT").exists())
            .collect();
        out.sort();
        return Ok(out);
    }
    Ok(published
        .list("views/")?
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix("views/")?
                .strip_suffix("/CURRENT")
                .filter(|v| !v.contains('/'))
                .map(str::to_string)
        })
        .collect())
}
