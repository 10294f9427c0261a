//! `braid batch run`: every view recomputed from the archive with
//! DataFusion.
//!
//! A run:
//! 1. takes the batch lock (`views/.lock`); a second run exits at once;
//! 2. picks the cut: per partition, the newest sealed speed-layer epoch
//!    boundary that the archive fully holds, or, where the speed layer has
//!    never sealed an epoch of the partition, the archive's end;
//! 3. folds every source (archive partitions up to the cut, imports) with
//!    the core's per-partition fold, in offset order, in parallel
//!    ([`effects`]);
//! 4. aggregates the effects in DataFusion with the core's states as the
//!    user-defined aggregate `braid_state` ([`udaf`]), grouped by view,
//!    window and group;
//! 5. writes each view's run (Parquet, the fold states at the cut,
//!    `manifest.json`), swaps `CURRENT`, and keeps the newest runs;
//! 6. trains the seasonal detectors' baselines from their views' new
//!    windows (the states merged by hour of the week, see
//!    `braid_core::baseline`) and publishes them (`baselines/CURRENT`).
//!
//! `--incremental` starts from the published run instead of from nothing:
//! its fold states at its cut continue over the records since, and the new
//! effects merge into its windows. States merge exactly, so the output is
//! bit-identical to a full run; a run without what it needs (another view
//! definition, missing fold states, a cut that went backwards) falls back
//! to a full run and says so.

pub mod cluster;
pub mod effects;
pub mod udaf;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, UInt16Type};
use braid_core::agg::AggState;
use braid_core::encoding::{Reader, Writer};
use braid_core::fold::{GroupKey, PartitionFolder};
use braid_core::hash::stable_hash;
use braid_core::merge::{Counters, Cut};
use braid_core::speedlog::decode_group;
use braid_core::time::format_rfc3339;
use braid_core::{ViewDef, ViewSet};
use braid_store::views::{self as store_views, Manifest, StagedRun, definition_hash};
use braid_store::{Blobs, Layout};
use datafusion::logical_expr::{AggregateUDF, col};
use datafusion::prelude::{SessionConfig, SessionContext};

use self::effects::{EffectsTable, FoldJob, SOURCE_END, Source, SourceEnd, SourceEnds, SourceId};
use self::udaf::{BraidState, decode_slot};
use crate::BatchError;
use crate::archive::{Roll, inventory};

/// How a batch run runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where the archive lives (the data directory by default).
    pub archive: Blobs,
    /// Where the speed layer keeps its sealed epoch boundaries (the data
    /// directory by default).
    pub checkpoints: Blobs,
    /// Where views and baselines are published (the data directory by
    /// default).
    pub published: Blobs,
    /// The view definitions.
    pub views: ViewSet,
    /// Only this view (all when `None`).
    pub only: Option<String>,
    /// Extend the published run instead of starting over.
    pub incremental: bool,
    /// Runs kept per view (the published one always).
    pub keep: usize,
    /// Threads DataFusion uses.
    pub threads: usize,
    /// Called about every second with (records folded, records in all).
    pub progress: Option<Progress>,
    /// The anomaly detectors: the seasonal ones get their baselines
    /// trained.
    pub detectors: braid_core::detect::Detectors,
    /// A Ballista scheduler (`df://HOST:PORT`) to fold and aggregate on,
    /// instead of this process.
    pub cluster: Option<String>,
}

/// A progress callback: (records folded, records in all).
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(u64, u64) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl RunConfig {
    /// Defaults: every view, full, keep 5 runs, 2 threads, no progress.
    pub fn new(data_dir: PathBuf, views: ViewSet) -> Self {
        Self {
            archive: Blobs::local(&data_dir),
            checkpoints: Blobs::local(&data_dir),
            published: Blobs::local(&data_dir),
            data_dir,
            views,
            only: None,
            incremental: false,
            keep: 5,
            threads: 2,
            progress: None,
            detectors: braid_core::detect::Detectors::default(),
            cluster: None,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The run id (the same for every view of the run).
    pub run_id: String,
    /// The cut.
    pub cut: Cut,
    /// Records folded (archive and imports).
    pub records: u64,
    /// Whether the run extended the previous one.
    pub incremental: bool,
    /// Per view: name, rows written, readings applied.
    pub views: Vec<(String, u64, u64)>,
    /// Seasonal baselines published: (metrics, device profiles), if any
    /// detector is seasonal.
    pub baselines: Option<(usize, usize)>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Windows of one view: state and counters per (window start, group).
pub type Windows = BTreeMap<(i64, GroupKey), (AggState, Counters)>;

const FOLDERS: &str = "folders.bin";
const FOLDERS_MAGIC: &[u8; 8] = b"BRAIDFS1";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BatchError + '_ {
    move |source| BatchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn store_err(e: braid_store::StoreError) -> BatchError {
    BatchError::Internal(e.to_string())
}

/// The cut a run takes now, and the rolls it reads: per partition, the
/// newest sealed epoch boundary (in `checkpoints`) the archive fully
/// holds, or the archive's end where the speed layer never held it.
pub async fn choose_cut(
    archive: &Blobs,
    checkpoints: &Blobs,
) -> Result<(Cut, BTreeMap<i32, Vec<Roll>>), BatchError> {
    let rolls = inventory(archive).await?;
    let mut cut = Cut::default();
    for (&p, rs) in &rolls {
        let end = rs.last().map_or(0, |r| r.last + 1);
        let c = match braid_store::layout::read_sealed(checkpoints, p).await? {
            None => end,
            Some(bs) => bs.into_iter().filter(|&b| b <= end).max().unwrap_or(0),
        };
        cut.0.insert(p, c);
    }
    Ok((cut, rolls))
}

/// A cut never goes back: where the published runs of `views` cut further
/// than the archive and the sealed boundaries allow now (the speed layer's
/// boundary list was trimmed, say), their cut holds, as long as the archive
/// still has everything below it. Serving has dropped the speed states
/// below a published cut, so a lower cut would count readings zero times.
fn hold_published_cuts(
    layout: &Layout,
    views: &[ViewDef],
    rolls: &BTreeMap<i32, Vec<Roll>>,
    cut: &mut Cut,
) -> Result<(), BatchError> {
    for v in views {
        let Some(run) = store_views::current_run(layout, &v.name).map_err(store_err)? else {
            continue;
        };
        let prev = store_views::read_manifest(layout, &v.name, &run)
            .map_err(store_err)?
            .cut;
        for (&p, &c) in &prev.0 {
            if cut.offset(p) >= c {
                continue;
            }
            let end = rolls
                .get(&p)
                .and_then(|rs| rs.last())
                .map_or(0, |r| r.last + 1);
            if end < c {
                return Err(BatchError::Internal(format!(
                    "partition {p}: run {run} of {} cut at offset {c}, but the archive now holds only up to {end}: \
                     a roll below the cut is missing or unfinished (is an archiver publishing it?)",
                    v.name
                )));
            }
            cut.0.insert(p, c);
        }
    }
    Ok(())
}

fn new_run_id(layout: &Layout, views: &[ViewDef]) -> Result<String, BatchError> {
    let mut taken = BTreeSet::new();
    for v in views {
        taken.extend(store_views::runs(layout, &v.name).map_err(store_err)?);
    }
    let mut ms = now_ms();
    loop {
        let id: String = format_rfc3339(ms)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        if !taken.contains(&id) {
            return Ok(id);
        }
        ms += 1;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where an incremental run starts: the published run's windows, fold
/// states, cut and imports.
struct Base {
    run_id: String,
    cut: Cut,
    imports: BTreeSet<String>,
    folders: BTreeMap<i32, PartitionFolder>,
    windows: Vec<Windows>,
}

fn load_base(
    layout: &Layout,
    set: &ViewSet,
    views: &[ViewDef],
    cut: &Cut,
    imports: &BTreeMap<String, Vec<String>>,
) -> Result<Base, String> {
    let mut run_id: Option<String> = None;
    let mut manifest: Option<Manifest> = None;
    let mut windows = Vec::new();
    for v in views {
        let run = store_views::current_run(layout, &v.name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("view {} has no published run", v.name))?;
        if run_id.as_ref().is_some_and(|r| *r != run) {
            return Err("the views' published runs differ".into());
        }
        let bv = store_views::read_run(layout, v, &run).map_err(|e| e.to_string())?;
        if bv.manifest.definition_hash != definition_hash(v, set) {
            return Err(format!("view {} changed since run {run}", v.name));
        }
        windows.push(bv.windows);
        manifest = Some(bv.manifest);
        run_id = Some(run);
    }
    let (Some(run_id), Some(m)) = (run_id, manifest) else {
        return Err("no views".into());
    };
    for (&p, &c) in &m.cut.0 {
        if cut.offset(p) < c {
            return Err(format!(
                "partition {p}: the cut went back from {c} to {}",
                cut.offset(p)
            ));
        }
    }
    let path = format!("{FOLDERS} of run {run_id} of {}", views[0].name);
    let bytes = store_views::read_run_file(layout, &views[0].name, &run_id, FOLDERS)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{path}: missing"))?;
    let folders = decode_folders(&bytes).map_err(|e| format!("{path}: {e}"))?;
    if let Some((p, _)) = m
        .cut
        .0
        .iter()
        .find(|&(p, &c)| c > 0 && !folders.contains_key(p))
    {
        return Err(format!("{path}: no fold state of partition {p}"));
    }
    if let Some(gone) = m.imports.iter().find(|id| !imports.contains_key(*id)) {
        return Err(format!("import {gone} of run {run_id} is gone"));
    }
    Ok(Base {
        run_id,
        cut: m.cut,
        imports: m.imports.into_iter().collect(),
        folders,
        windows,
    })
}

fn encode_folders(folders: &BTreeMap<i32, PartitionFolder>) -> Vec<u8> {
    let mut w = Writer::new();
    w.uvar(folders.len() as u64);
    for (&p, f) in folders {
        w.ivar(i64::from(p));
        f.encode(&mut w);
    }
    let payload = w.into_bytes();
    let mut out = FOLDERS_MAGIC.to_vec();
    out.extend_from_slice(&stable_hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn decode_folders(bytes: &[u8]) -> Result<BTreeMap<i32, PartitionFolder>, String> {
    let rest = bytes
        .strip_prefix(FOLDERS_MAGIC)
        .ok_or("not a fold-state file")?;
    let (sum, payload) = rest.split_at_checked(8).ok_or("truncated")?;
    let sum = u64::from_le_bytes(sum.try_into().map_err(|_| "truncated")?);
    if stable_hash(payload) != sum {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader::new(payload);
    let n = r.len("folders", 2).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let p = r.ivar("partition").map_err(|e| e.to_string())?;
        let p = i32::try_from(p).map_err(|_| "partition out of range")?;
        out.insert(
            p,
            PartitionFolder::decode(&mut r).map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

/// Holds the batch lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct BatchLock {
    _file: fs::File,
}

/// Takes the batch lock, or says which run holds it.
pub fn lock(layout: &Layout) -> Result<BatchLock, BatchError> {
    let path = layout.batch_lock();
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {
            use std::io::Write;
            let mut f = &file;
            let _ = f.set_len(0);
            let _ = writeln!(f, "{}", std::process::id());
            Ok(BatchLock { _file: file })
        }
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            Err(BatchError::Locked {
                path,
                holder: holder.trim().to_string(),
            })
        }
        Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// Runs one batch run.
pub async fn run(config: RunConfig) -> Result<RunReport, BatchError> {
    let started = Instant::now();
    let started_ms = now_ms();
    let layout = Layout::new(&config.data_dir).publish_in(&config.published);
    let _lock = lock(&layout)?;
    let views: Vec<ViewDef> = match &config.only {
        Some(name) => vec![config.views.get(name).cloned().ok_or_else(|| {
            BatchError::Usage(format!(
                "no view named `{name}` (views: {})",
                config
                    .views
                    .views
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?],
        None => config.views.views.clone(),
    };
    for v in &views {
        store_views::remove_stale(&layout, &v.name).map_err(store_err)?;
    }
    let (mut cut, rolls) = choose_cut(&config.archive, &config.checkpoints).await?;
    hold_published_cuts(&layout, &views, &rolls, &mut cut)?;
    let imports = braid_store::layout::complete_imports(&config.archive).await?;
    let base = if config.incremental {
        match load_base(&layout, &config.views, &views, &cut, &imports) {
            Ok(b) => Some(b),
            Err(why) => {
                tracing::warn!(reason = %why, "no usable previous run: running in full");
                None
            }
        }
    } else {
        None
    };
    let run_id = new_run_id(&layout, &views)?;
    tracing::info!(run = %run_id, cut = ?cut.0, incremental = base.is_some(), "batch run starting");

    let mut sources = Vec::new();
    let mut archive_files = Vec::new();
    let mut total: u64 = 0;
    for (&p, rs) in &rolls {
        let c = cut.offset(p);
        let start = base.as_ref().map_or(0, |b| b.cut.offset(p));
        let folder = base
            .as_ref()
            .and_then(|b| b.folders.get(&p).cloned())
            .unwrap_or_else(|| PartitionFolder::new(&config.views.settings));
        let mut groups = Vec::new();
        for r in rs.iter().filter(|r| r.first < c) {
            archive_files.extend(r.files.iter().cloned());
            if r.last >= start {
                total += (r.last.min(c - 1) - r.first.max(start) + 1).max(0) as u64;
                groups.push(r.files.clone());
            }
        }
        sources.push(Source {
            id: SourceId::Partition(p),
            blobs: config.archive.clone(),
            groups,
            start,
            cut: c,
            folder,
        });
    }
    for (id, files) in &imports {
        if base.as_ref().is_some_and(|b| b.imports.contains(id)) {
            continue;
        }
        // Imports live in the archive store, beside the rolls.
        sources.push(Source {
            id: SourceId::Import(id.clone()),
            blobs: config.archive.clone(),
            groups: vec![files.clone()],
            start: 0,
            cut: i64::MAX,
            folder: PartitionFolder::new(&config.views.settings),
        });
    }
    let job = Arc::new(FoldJob {
        views: views.clone(),
        sources,
    });
    let folded = Arc::new(AtomicU64::new(0));
    let ticker = config.progress.clone().map(|f| {
        let folded = folded.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                (f.0)(folded.load(Ordering::Relaxed), total);
            }
        })
    });
    let result = aggregate(&job, &folded, config.threads, config.cluster.as_deref()).await;
    if let Some(t) = ticker {
        t.abort();
    }
    let (mut windows, ends) = result?;
    let records: u64 = ends.iter().map(|e| e.records).sum();
    if let Some(f) = &config.progress {
        (f.0)(records, total.max(records));
    }

    // Fold states at the cut, for the next incremental run.
    let mut folders: BTreeMap<i32, PartitionFolder> =
        base.as_ref().map(|b| b.folders.clone()).unwrap_or_default();
    for (source, end) in job.sources.iter().zip(ends) {
        if let SourceId::Partition(p) = source.id {
            folders.insert(p, end.folder);
        }
    }
    if let Some(b) = &base {
        for (vi, prev) in b.windows.iter().enumerate() {
            merge_windows(&mut windows[vi], prev);
        }
    }
    let folders_bytes = encode_folders(&folders);
    let import_ids: Vec<String> = imports.keys().cloned().collect();
    // Every view is written out before any is published, so a run that
    // fails publishes nothing.
    let mut staged_runs = Vec::new();
    for (vi, v) in views.iter().enumerate() {
        let w = &windows[vi];
        let staged = StagedRun::new(&layout, &v.name, &run_id).map_err(store_err)?;
        staged.write_rows(v, w).map_err(store_err)?;
        let fpath = staged.dir().join(FOLDERS);
        braid_store::layout::write_atomic(&fpath, &folders_bytes).map_err(io(&fpath))?;
        let manifest = Manifest {
            started_ms,
            finished_ms: now_ms(),
            archive_files: archive_files.clone(),
            imports: import_ids.clone(),
            records_read: records,
            incremental: base.is_some(),
            previous_run: base.as_ref().map(|b| b.run_id.clone()),
            ..Manifest::new(v, &config.views, &run_id, cut.clone(), w)
        };
        staged_runs.push((v, staged, manifest));
    }
    let mut report_views = Vec::new();
    for (v, staged, manifest) in staged_runs {
        let path = staged.publish(&manifest).map_err(store_err)?;
        let removed = store_views::prune(&layout, &v.name, config.keep).map_err(store_err)?;
        tracing::info!(view = %v.name, rows = manifest.rows, readings = manifest.readings, path = %path.display(), pruned = removed.len(), "view published");
        report_views.push((v.name.clone(), manifest.rows, manifest.readings));
    }
    let baselines = train_baselines(&layout, &config, &views, &windows, &run_id, config.keep)?;
    Ok(RunReport {
        run_id,
        cut,
        records,
        incremental: base.is_some(),
        views: report_views,
        baselines,
        elapsed: started.elapsed(),
    })
}

/// Trains and publishes the seasonal baselines of the views this run
/// computed; a metric whose view was not in the run keeps its current
/// baseline.
fn train_baselines(
    layout: &Layout,
    config: &RunConfig,
    views: &[ViewDef],
    windows: &[Windows],
    run_id: &str,
    keep: usize,
) -> Result<Option<(usize, usize)>, BatchError> {
    let seasonal = braid_core::detect::seasonal_views(&config.detectors);
    if seasonal.is_empty() {
        return Ok(None);
    }
    let previous = braid_store::baselines::read_current(layout).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the current baselines cannot be read: training every metric afresh");
        None
    });
    let mut out = braid_core::baseline::Baselines {
        run_id: run_id.to_string(),
        trained_ms: now_ms(),
        metrics: BTreeMap::new(),
    };
    for (def, view_name) in seasonal {
        match views.iter().position(|v| v.name == view_name) {
            Some(vi) => {
                let m = def.train(
                    &views[vi],
                    windows[vi].iter().map(|((s, g), (st, _))| (*s, g, st)),
                );
                out.metrics.insert(def.metric.clone(), m);
            }
            None => {
                if let Some(m) = previous
                    .as_ref()
                    .and_then(|p| p.metrics.get(&def.metric))
                    .filter(|m| m.view == view_name)
                {
                    out.metrics.insert(def.metric.clone(), m.clone());
                }
            }
        }
    }
    let path = braid_store::baselines::publish(layout, &out, keep).map_err(store_err)?;
    let profiles = out.profiles();
    tracing::info!(metrics = out.metrics.len(), profiles, path = %path.display(), "seasonal baselines published");
    Ok(Some((out.metrics.len(), profiles)))
}

/// Adds `other`'s windows into `into`.
pub fn merge_windows(into: &mut Windows, other: &Windows) {
    for (k, (s, c)) in other {
        match into.get_mut(k) {
            Some((s2, c2)) => {
                s2.merge(s);
                c2.add(c);
            }
            None => {
                into.insert(k.clone(), (s.clone(), *c));
            }
        }
    }
}

/// Runs the DataFusion aggregation of the job's effects, in this process
/// or on the Ballista cluster at `cluster`: windows per view, and each
/// source's end.
async fn aggregate(
    job: &Arc<FoldJob>,
    folded: &Arc<AtomicU64>,
    threads: usize,
    cluster: Option<&str>,
) -> Result<(Vec<Windows>, Vec<SourceEnd>), BatchError> {
    let df_err =
        |e: datafusion::error::DataFusionError| BatchError::Internal(format!("DataFusion: {e}"));
    let config = SessionConfig::new()
        .with_target_partitions(threads.max(1))
        .with_batch_size(64 * 1024);
    let ctx = match cluster {
        None => SessionContext::new_with_config(config),
        Some(url) => cluster::context(url, config).await?,
    };
    let views = &job.views;
    let udaf = AggregateUDF::from(BraidState::new(views.iter().map(ViewDef::parts).collect()));
    let table = EffectsTable {
        job: job.clone(),
        records: folded.clone(),
    };
    let df = ctx
        .read_table(Arc::new(table))
        .map_err(df_err)?
        .aggregate(
            vec![col("view"), col("window_start"), col("group")],
            vec![
                udaf.call(vec![
                    col("view"),
                    col("value"),
                    col("device_hash"),
                    col("outcome"),
                ])
                .alias("state"),
            ],
        )
        .map_err(df_err)?;
    let batches = df.collect().await.map_err(|e| match cluster {
        Some(url) => BatchError::Internal(format!("the Ballista cluster at {url}: {e}")),
        None => df_err(e),
    })?;
    let mut out: Vec<Windows> = views.iter().map(|_| Windows::new()).collect();
    let mut ends = SourceEnds::default();
    for b in &batches {
        let view = b.column(0).as_primitive::<UInt16Type>();
        let start = b.column(1).as_primitive::<Int64Type>();
        let group = b.column(2).as_binary::<i32>();
        let state = b.column(3).as_binary::<i32>();
        for i in 0..b.num_rows() {
            if view.value(i) == SOURCE_END {
                let slot = usize::try_from(start.value(i))
                    .map_err(|_| BatchError::Internal("end row of a negative source".into()))?;
                ends.add(slot, group.value(i))
                    .map_err(BatchError::Internal)?;
                continue;
            }
            if state.is_null(i) {
                continue;
            }
            let g = decode_group(&mut Reader::new(group.value(i)))
                .map_err(|e| BatchError::Internal(format!("group key: {e}")))?;
            let slot = decode_slot(state.value(i))
                .map_err(|e| BatchError::Internal(format!("state: {e}")))?;
            let w = out
                .get_mut(usize::from(view.value(i)))
                .ok_or_else(|| BatchError::Internal("view index out of range".into()))?;
            w.insert((start.value(i), g), slot);
        }
    }
    let ends = ends
        .finish(job.sources.len())
        .map_err(BatchError::Internal)?;
    Ok((out, ends))
}
