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
//! own). Each source is a DataFusion partition stream, filled by a blocking
//! task, so sources fold in parallel while DataFusion aggregates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, BinaryBuilder, Float64Builder, RecordBatch, UInt8Builder, UInt16Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use braid_core::encoding::Writer;
use braid_core::fold::{Layer, PartitionFolder};
use braid_core::hash::device_hash;
use braid_core::speedlog::encode_group_values;
use braid_core::{Record, ViewDef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;

use braid_store::Blobs;

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
#[derive(Debug)]
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

/// What every source stream shares: the views, the progress counter and
/// the fold states left at the cut.
#[derive(Debug)]
pub struct Job {
    /// The views computed (their index is the `view` column).
    pub views: Vec<ViewDef>,
    /// Records folded so far, over all sources.
    pub records: AtomicU64,
    /// Sources, taken by their stream when it runs.
    pub sources: Mutex<Vec<Option<Source>>>,
    /// Fold states at the cut, by source, filled as sources finish.
    pub folders: Mutex<BTreeMap<SourceId, PartitionFolder>>,
    /// The runtime the files are read on (sources fold on blocking
    /// threads).
    pub runtime: tokio::runtime::Handle,
}

impl Job {
    /// The partition streams, one per source.
    pub fn streams(self: &Arc<Self>) -> Vec<Arc<dyn PartitionStream>> {
        let n = self.sources.lock().map_or(0, |s| s.len());
        (0..n)
            .map(|slot| {
                Arc::new(EffectStream {
                    schema: schema(),
                    job: self.clone(),
                    slot,
                }) as Arc<dyn PartitionStream>
            })
            .collect()
    }

    fn fold_source(
        &self,
        slot: usize,
        tx: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let source = self
            .sources
            .lock()
            .map_err(|_| internal("source list poisoned"))?
            .get_mut(slot)
            .and_then(Option::take)
            .ok_or_else(|| internal(format!("source {slot} executed twice")))?;
        let Source {
            id,
            blobs,
            groups,
            start,
            cut,
            mut folder,
        } = source;
        let mut out = Effects::default();
        for files in groups {
            let mut records: Vec<Record> = Vec::new();
            for f in &files {
                let external = |e: crate::BatchError| DataFusionError::External(Box::new(e));
                let bytes = self
                    .runtime
                    .block_on(blobs.get(f))
                    .map_err(|e| external(e.into()))?
                    .ok_or_else(|| internal(format!("{f} is gone from {}", blobs.location())))?;
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
            self.records
                .fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        if out.len() > 0 && tx.blocking_send(out.finish()).is_err() {
            return Ok(());
        }
        self.folders
            .lock()
            .map_err(|_| internal("fold states poisoned"))?
            .insert(id, folder);
        Ok(())
    }
}

fn internal(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Internal(msg.into())
}

#[derive(Debug)]
struct EffectStream {
    schema: SchemaRef,
    job: Arc<Job>,
    slot: usize,
}

impl PartitionStream for EffectStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut b = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 4);
        let tx = b.tx();
        let job = self.job.clone();
        let slot = self.slot;
        b.spawn_blocking(move || job.fold_source(slot, &tx));
        b.build()
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
