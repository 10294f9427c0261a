//! The effect streams: the archive, folded by the core's per-partition
//! fold, as rows DataFusion aggregates.
//!
//! Every decision about a record (duplicate or not, lateness class, the
//! windows it falls in, late or not) is the core's `PartitionFolder::fold`,
//! the very code the speed layer runs, made in offset order per partition.
//! Its output is one row per effect: `(view, window_start, group, value,
//! device_hash, outcome)`. A batch run applies historical readings (it
//! covers them), so their outcome is `Applied` here.
//!
//! One source is one archive partition (records from the run's start up to
//! its cut) or one import (all of it, in file order, with a fold of its
//! own). A [`FoldJob`] is a DataFusion table ([`EffectsTable`]) scanned by
//! an [`EffectsExec`] with one DataFusion partition per source, filled by a
//! blocking task, so sources fold in parallel while DataFusion aggregates.
//! The job encodes to bytes, so the same plan runs on a Ballista cluster:
//! each executor folds the sources it is given (see `super::cluster`).
//!
//! A source ends with its *end rows* (`view` = [`SOURCE_END`],
//! `window_start` = the source's index): the records it folded and its
//! fold state at the cut, in chunks of at most [`END_CHUNK`] bytes. They
//! travel through the aggregation as groups of their own (`braid_state`
//! leaves them null), so the run gets its fold states back by the same road
//! wherever the sources were folded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::AsArray;
use arrow::array::{
    ArrayRef, BinaryBuilder, Float64Builder, RecordBatch, UInt8Builder, UInt16Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use braid_core::encoding::{DecodeError, Reader, Writer};
use braid_core::fold::{Layer, PartitionFolder};
use braid_core::hash::device_hash;
use braid_core::speedlog::encode_group_values;
use braid_core::{Record, ViewDef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use braid_store::Blobs;
use futures::StreamExt;

use crate::archive::records_in;

/// Effect rows per batch sent to DataFusion.
const BATCH_ROWS: usize = 64 * 1024;

/// The schema of effect rows.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::UInt16, false),
        Field::new("window_start", DataType::Int64, false),
        Field::new("group", DataType::Binary, false),
        Field::new("value", DataType::Float64, false),
        Field::new("device_hash", DataType::UInt64, false),
        Field::new("outcome", DataType::UInt8, false),
    ]))
}

/// Where a source's records come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceId {
    /// A partition of `braid.readings`, from the archive.
    Partition(i32),
    /// An import, by id.
    Import(String),
}

/// One source: files to read, in order, and the offsets to take.
#[derive(Clone, Debug)]
pub struct Source {
    /// Which source.
    pub id: SourceId,
    /// Where its files are.
    pub blobs: Blobs,
    /// Groups of files (keys of `blobs`) read together and folded in
    /// (offset, index) order: one roll each for a partition, all files for
    /// an import.
    pub groups: Vec<Vec<String>>,
    /// Records with offsets in `[start, cut)` are folded.
    pub start: i64,
    /// First offset not folded.
    pub cut: i64,
    /// The fold state at `start`.
    pub folder: PartitionFolder,
}

/// The `view` of a source's end rows.
pub const SOURCE_END: u16 = u16::MAX;

/// The largest fold-state chunk one end row carries.
pub const END_CHUNK: usize = 1 << 20;

/// What a source left at its end.
#[derive(Debug)]
pub struct SourceEnd {
    /// Records folded.
    pub records: u64,
    /// The fold state at the cut.
    pub folder: PartitionFolder,
}

/// The views and the sources of one run: what every effect stream folds.
#[derive(Debug)]
pub struct FoldJob {
    /// The views computed (their index is the `view` column).
    pub views: Vec<ViewDef>,
    /// The sources, one DataFusion partition each.
    pub sources: Vec<Source>,
}

const JOB_MAGIC: &[u8; 8] = b"BRAIDFJ1";

impl FoldJob {
    /// The job as bytes, for a plan sent to a Ballista cluster. Stores are
    /// named by URL (a local directory by its absolute path), so every
    /// executor must reach them at the same name; credentials come from
    /// each process's environment, never from the plan.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.uvar(self.views.len() as u64);
        for v in &self.views {
            v.encode(&mut w);
        }
        w.uvar(self.sources.len() as u64);
        for s in &self.sources {
            match &s.id {
                SourceId::Partition(p) => {
                    w.u8(0);
                    w.ivar(i64::from(*p));
                }
                SourceId::Import(id) => {
                    w.u8(1);
                    w.bytes(id.as_bytes());
                }
            }
            let location = match s.blobs.local_root() {
                Some(root) => std::path::absolute(root)
                    .map_err(|e| internal(format!("{}: {e}", root.display())))?
                    .display()
                    .to_string(),
                None => s.blobs.location(),
            };
            w.bytes(location.as_bytes());
            w.uvar(s.groups.len() as u64);
            for g in &s.groups {
                w.uvar(g.len() as u64);
                for f in g {
                    w.bytes(f.as_bytes());
                }
            }
            w.ivar(s.start);
            w.ivar(s.cut);
            s.folder.encode(&mut w);
        }
        let mut out = JOB_MAGIC.to_vec();
        out.extend_from_slice(w.as_bytes());
        Ok(out)
    }

    /// Whether `bytes` are an encoded job.
    pub fn is_encoded(bytes: &[u8]) -> bool {
        bytes.starts_with(JOB_MAGIC)
    }

    /// Reads what [`FoldJob::encode`] wrote, opening each store.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |e: DecodeError| internal(format!("fold job: {e}"));
        let text = |r: &mut Reader<'_>, what: &'static str| -> Result<String> {
            String::from_utf8(r.bytes(what).map_err(bad)?.to_vec())
                .map_err(|_| internal(format!("fold job: {what} is not UTF-8")))
        };
        let payload = bytes
            .strip_prefix(JOB_MAGIC)
            .ok_or_else(|| internal("not an encoded fold job"))?;
        let mut r = Reader::new(payload);
        let n = r.len("views", 1).map_err(bad)?;
        let views = (0..n)
            .map(|_| ViewDef::decode(&mut r).map_err(bad))
            .collect::<Result<Vec<_>>>()?;
        let n = r.len("sources", 1).map_err(bad)?;
        let mut sources = Vec::with_capacity(n);
        for _ in 0..n {
            let id = match r.u8("source kind").map_err(bad)? {
                0 => SourceId::Partition(
                    i32::try_from(r.ivar("partition").map_err(bad)?)
                        .map_err(|_| internal("fold job: partition out of range"))?,
                ),
                1 => SourceId::Import(text(&mut r, "import id")?),
                k => return Err(internal(format!("fold job: unknown source kind {k}"))),
            };
            let location = text(&mut r, "store")?;
            let blobs =
                Blobs::open(&location).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let ng = r.len("groups", 1).map_err(bad)?;
            let mut groups = Vec::with_capacity(ng);
            for _ in 0..ng {
                let nf = r.len("files", 1).map_err(bad)?;
                groups.push(
                    (0..nf)
                        .map(|_| text(&mut r, "file"))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            let start = r.ivar("start").map_err(bad)?;
            let cut = r.ivar("cut").map_err(bad)?;
            let folder = PartitionFolder::decode(&mut r).map_err(bad)?;
            sources.push(Source {
                id,
                blobs,
                groups,
                start,
                cut,
                folder,
            });
        }
        r.finish().map_err(bad)?;
        Ok(Self { views, sources })
    }

    /// Folds source `slot`, sending its effect rows and then its end rows.
    fn fold_source(
        &self,
        slot: usize,
        records_folded: &AtomicU64,
        runtime: &tokio::runtime::Handle,
        tx: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let source = self
            .sources
            .get(slot)
            .ok_or_else(|| internal(format!("no source {slot}")))?;
        let mut folder = source.folder.clone();
        let (start, cut) = (source.start, source.cut);
        let mut out = Effects::default();
        let mut folded = 0u64;
        for files in &source.groups {
            let mut records: Vec<Record> = Vec::new();
            for f in files {
                let external = |e: crate::BatchError| DataFusionError::External(Box::new(e));
                let bytes = runtime
                    .block_on(source.blobs.get(f))
                    .map_err(|e| external(e.into()))?
                    .ok_or_else(|| {
                        internal(format!("{f} is gone from {}", source.blobs.location()))
                    })?;
                let rs = records_in(f, bytes).map_err(external)?;
                records.extend(
                    rs.into_iter()
                        .filter(|r| r.position.offset >= start && r.position.offset < cut),
                );
            }
            records.sort_by_key(|r| (r.position.offset, r.position.index));
            for rec in &records {
                let hash = device_hash(&rec.reading.device_id);
                folder.fold(&self.views, rec, |e| {
                    out.push(
                        e.view,
                        e.window.start,
                        e.group,
                        rec.reading.value,
                        hash,
                        e.outcome.in_layer(Layer::Batch).code(),
                    );
                });
                if out.len() >= BATCH_ROWS && tx.blocking_send(out.finish()).is_err() {
                    return Ok(());
                }
            }
            folded += records.len() as u64;
            records_folded.fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        out.push_end(slot, folded, &folder);
        // A closed channel means the query was dropped: nothing to report.
        let _ = tx.blocking_send(out.finish());
        Ok(())
    }
}

/// Reads one end row: (records, chunk number, chunks, chunk).
pub fn decode_end_row(group: &[u8]) -> Result<(u64, u64, u64, &[u8]), DecodeError> {
    let mut r = Reader::new(group);
    let records = r.uvar("end records")?;
    let no = r.uvar("end chunk number")?;
    let of = r.uvar("end chunks")?;
    let chunk = r.bytes("end chunk")?;
    r.finish()?;
    Ok((records, no, of, chunk))
}

/// One source's end rows so far: records, chunks in all, chunks by number.
type EndChunks = (u64, u64, BTreeMap<u64, Vec<u8>>);

/// Collects end rows into each source's [`SourceEnd`].
#[derive(Debug, Default)]
pub struct SourceEnds {
    chunks: BTreeMap<usize, EndChunks>,
}

impl SourceEnds {
    /// Takes one end row of source `slot`.
    pub fn add(&mut self, slot: usize, group: &[u8]) -> Result<(), String> {
        let (records, no, of, chunk) =
            decode_end_row(group).map_err(|e| format!("source {slot} end row: {e}"))?;
        let e = self
            .chunks
            .entry(slot)
            .or_insert_with(|| (records, of, BTreeMap::new()));
        e.2.insert(no, chunk.to_vec());
        Ok(())
    }

    /// Every source's end, by slot; an error if a source sent none or not
    /// all of its chunks (it did not finish).
    pub fn finish(self, sources: usize) -> Result<Vec<SourceEnd>, String> {
        let mut out = Vec::with_capacity(sources);
        let mut chunks = self.chunks;
        for slot in 0..sources {
            let (records, of, parts) = chunks
                .remove(&slot)
                .ok_or_else(|| format!("source {slot} sent no end: it did not finish"))?;
            if parts.len() as u64 != of || parts.keys().copied().ne(0..of) {
                return Err(format!(
                    "source {slot} sent {} of its {of} end chunks",
                    parts.len()
                ));
            }
            let bytes: Vec<u8> = parts.into_values().flatten().collect();
            let mut r = Reader::new(&bytes);
            let folder = PartitionFolder::decode(&mut r)
                .and_then(|f| r.finish().map(|()| f))
                .map_err(|e| format!("source {slot} fold state: {e}"))?;
            out.push(SourceEnd { records, folder });
        }
        Ok(out)
    }
}

fn internal(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Internal(msg.into())
}

/// The table of a [`FoldJob`]'s effect rows.
#[derive(Debug)]
pub struct EffectsTable {
    /// The job.
    pub job: Arc<FoldJob>,
    /// Records folded so far, over all sources, when folded in this process.
    pub records: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl TableProvider for EffectsTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let all = schema().fields().len();
        if projection.is_some_and(|p| p.iter().copied().ne(0..all)) {
            return Err(internal("the effect rows are scanned whole"));
        }
        Ok(Arc::new(EffectsExec::new(
            self.job.clone(),
            self.records.clone(),
        )?))
    }
}

fn slots_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "slot",
        DataType::UInt32,
        false,
    )]))
}

/// Folds a [`FoldJob`]'s sources. Its input is an in-memory table of source
/// slots, one partition per source holding that source's slot: a plain
/// DataFusion leaf, which Ballista's scheduler knows how to hand out one
/// partition per task (it restricts the leaves of a stage's plan to the
/// task's partitions and would leave a leaf it does not know whole, so
/// that every task folded every source). Partition `i` folds the sources
/// whose slots arrive on input partition `i`.
#[derive(Debug)]
pub struct EffectsExec {
    /// The job.
    pub job: Arc<FoldJob>,
    input: Arc<dyn ExecutionPlan>,
    records: Arc<AtomicU64>,
    properties: Arc<PlanProperties>,
}

impl EffectsExec {
    /// The scan of `job`, counting folded records into `records`.
    pub fn new(job: Arc<FoldJob>, records: Arc<AtomicU64>) -> Result<Self> {
        let mut slots = (0..job.sources.len())
            .map(|i| {
                let slot = arrow::array::UInt32Array::from(vec![i as u32]);
                RecordBatch::try_new(slots_schema(), vec![Arc::new(slot)]).map(|b| vec![b])
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if slots.is_empty() {
            // Nothing to fold still makes one (empty) partition.
            slots.push(Vec::new());
        }
        let input = MemorySourceConfig::try_new_exec(&slots, slots_schema(), None)?;
        Ok(Self::with_input(job, input, records))
    }

    /// The scan of `job` over `input`, a table of source slots.
    pub fn with_input(
        job: Arc<FoldJob>,
        input: Arc<dyn ExecutionPlan>,
        records: Arc<AtomicU64>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema()),
            Partitioning::UnknownPartitioning(input.properties().partitioning.partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            job,
            input,
            records,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for EffectsExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "EffectsExec: {} views, {} sources",
            self.job.views.len(),
            self.job.sources.len()
        )
    }
}

impl ExecutionPlan for EffectsExec {
    fn name(&self) -> &str {
        "EffectsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // One partition per source already; more would only shuffle slots.
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] =
            <[_; 1]>::try_from(children).map_err(|_| internal("EffectsExec has one input"))?;
        Ok(Arc::new(Self::with_input(
            self.job.clone(),
            input,
            self.records.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut slots = self.input.execute(partition, ctx)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| internal(format!("EffectsExec runs inside a tokio runtime: {e}")))?;
        let mut b = RecordBatchReceiverStreamBuilder::new(schema(), 4);
        let tx = b.tx();
        let job = self.job.clone();
        let records = self.records.clone();
        b.spawn(async move {
            while let Some(batch) = slots.next().await {
                let batch = batch?;
                let column = batch
                    .column(0)
                    .as_primitive_opt::<arrow::datatypes::UInt32Type>()
                    .ok_or_else(|| internal("source slots are UInt32"))?;
                for slot in column.values().iter().map(|&s| s as usize) {
                    tracing::debug!(slot, source = ?job.sources.get(slot).map(|s| &s.id), "folding a source");
                    let (job, records, runtime, tx) =
                        (job.clone(), records.clone(), runtime.clone(), tx.clone());
                    tokio::task::spawn_blocking(move || {
                        job.fold_source(slot, &records, &runtime, &tx)
                    })
                    .await
                    .map_err(|e| internal(format!("folding source {slot}: {e}")))??;
                }
            }
            Ok(())
        });
        Ok(b.build())
    }
}

/// Effect rows being built.
#[derive(Default)]
struct Effects {
    view: UInt16Builder,
    window: Vec<i64>,
    group: BinaryBuilder,
    value: Float64Builder,
    hash: UInt64Builder,
    outcome: UInt8Builder,
    key: Writer,
}

impl Effects {
    fn len(&self) -> usize {
        self.window.len()
    }

    fn push(
        &mut self,
        view: usize,
        window: i64,
        group: braid_core::fold::Group<'_>,
        value: f64,
        hash: u64,
        outcome: u8,
    ) {
        self.view.append_value(view as u16);
        self.window.push(window);
        self.key.clear();
        encode_group_values(&mut self.key, group.values());
        self.group.append_value(self.key.as_bytes());
        self.value.append_value(value);
        self.hash.append_value(hash);
        self.outcome.append_value(outcome);
    }

    /// Appends source `slot`'s end rows.
    fn push_end(&mut self, slot: usize, records: u64, folder: &PartitionFolder) {
        let mut w = Writer::new();
        folder.encode(&mut w);
        let state = w.into_bytes();
        let chunks: Vec<&[u8]> = if state.is_empty() {
            vec![&[]]
        } else {
            state.chunks(END_CHUNK).collect()
        };
        for (no, chunk) in chunks.iter().enumerate() {
            self.view.append_value(SOURCE_END);
            self.window.push(slot as i64);
            self.key.clear();
            self.key.uvar(records);
            self.key.uvar(no as u64);
            self.key.uvar(chunks.len() as u64);
            self.key.bytes(chunk);
            self.group.append_value(self.key.as_bytes());
            self.value.append_value(0.0);
            self.hash.append_value(0);
            self.outcome.append_value(0);
        }
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let window = arrow::array::Int64Array::from(std::mem::take(&mut self.window));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.view.finish()),
            Arc::new(window),
            Arc::new(self.group.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.hash.finish()),
            Arc::new(self.outcome.finish()),
        ];
        Ok(RecordBatch::try_new(schema(), cols)?)
    }
}
