//! The archiver: `braid.readings` into the immutable Parquet master dataset,
//! every offset exactly once.
//!
//! Layout under the data directory:
//!
//! ```text
//! archive/readings/date=YYYY-MM-DD/partition=P/<first>-<last>.parquet
//! archive/rolls/partition=P/<first>-<last>.roll
//! ```
//!
//! The archive lives in a [`Blobs`] store: the data directory by default,
//! or any object store URL (`--archive-url s3://bucket/prefix`); the keys
//! are the same. Offsets are zero-padded to 20 digits so names sort by
//! offset. A roll is what one partition buffered between two flushes (by
//! size or age); it becomes one file per event date, each named by the
//! roll's offset range. Every file is written create-only (a local staged
//! file hard-linked into place, or a conditional put), then the roll's
//! marker listing them, also create-only: the roll counts once its marker
//! exists. On start the archiver removes the files no marker lists (a
//! crash or a failed write before the marker). Whenever a partition is
//! assigned (at start, and again after any rebalance), the archiver resumes
//! it after the last offset its markers name: not from a consumer-group
//! commit nor from what it knew at start, so a crash or a rebalance at any
//! point archives every offset exactly once.
//!
//! When the store fails (an outage), the archiver keeps the encoded roll,
//! stops reading the log, and publishes the same bytes again with a growing
//! pause (1 s to 10 s): no marker, so no offset archived, until the store
//! takes the writes. Between a crash and the next start, a reader that
//! globs the files rather than following the markers may see an unlisted
//! file; batch runs and `braid verify` follow the markers.
//!
//! Each file holds the reading's fields (`device_id`, `metric`, `ts`,
//! `value`, `seq`, `tags` as a JSON object) plus `partition`, `offset`,
//! `index` and `ingest_ts`, so the archive alone can replay the log.
//! Records that fail validation are not archived (the speed layer sends them
//! to the dead-letter topic).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMillisecondType, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use braid_core::codec::decode_records;
use braid_core::time::date_of;
use braid_core::{Position, Record};
use braid_kafka::{
    KafkaError, REJOIN_AFTER, Resume, RevocationContext, Step, Topics, consumer_config,
    rejoin_if_stalled,
};
use braid_store::{Backoff, Blobs, Put};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset};
use tokio_util::sync::CancellationToken;

use crate::BatchError;

/// How the archiver runs.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Consumer group of the archivers.
    pub group: String,
    /// A partition's buffer is written out past this many bytes (about).
    pub roll_bytes: usize,
    /// ... or once its oldest record is this old.
    pub roll_age: Duration,
    /// Where the archive lives: the data directory by default, or any
    /// object store URL.
    pub archive: Blobs,
}

impl ArchiveConfig {
    /// The defaults: rolls of 128 MiB or 60 s.
    pub fn new(brokers: String, data_dir: PathBuf) -> Self {
        Self {
            archive: Blobs::local(&data_dir),
            brokers,
            data_dir,
            group: "braid-archive".into(),
            roll_bytes: 128 << 20,
            roll_age: Duration::from_secs(60),
        }
    }
}

/// What an archiver did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArchiveStats {
    /// Records archived.
    pub records: u64,
    /// Records skipped as invalid.
    pub invalid: u64,
    /// Rolls written.
    pub rolls: u64,
}

/// The Arrow schema of archive files.
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("ts", ts.clone(), false),
        Field::new("value", DataType::Float64, false),
        Field::new("seq", DataType::UInt64, true),
        Field::new("tags", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("index", DataType::UInt32, false),
        Field::new("ingest_ts", ts, false),
    ]))
}

fn batch_of(records: &[&Record]) -> Result<RecordBatch, BatchError> {
    let n = records.len();
    let mut device = StringBuilder::with_capacity(n, n * 16);
    let mut metric = StringBuilder::with_capacity(n, n * 8);
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut value = Float64Builder::with_capacity(n);
    let mut seq = UInt64Builder::with_capacity(n);
    let mut tags = StringBuilder::with_capacity(n, n);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut index = UInt32Builder::with_capacity(n);
    let mut ingest = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    for r in records {
        device.append_value(&r.reading.device_id);
        metric.append_value(&r.reading.metric);
        ts.append_value(r.reading.ts);
        value.append_value(r.reading.value);
        seq.append_option(r.reading.seq);
        if r.reading.tags.is_empty() {
            tags.append_null();
        } else {
            tags.append_value(serde_json::to_string(&r.reading.tags).unwrap_or_default());
        }
        partition.append_value(r.position.partition);
        offset.append_value(r.position.offset);
        index.append_value(r.position.index);
        ingest.append_value(r.ingest_ts);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(device.finish()),
        Arc::new(metric.finish()),
        Arc::new(ts.finish()),
        Arc::new(value.finish()),
        Arc::new(seq.finish()),
        Arc::new(tags.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(index.finish()),
        Arc::new(ingest.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
        .map_err(|e| BatchError::Internal(format!("building a batch: {e}")))
}

const ROLLS: &str = "archive/rolls";
const READINGS: &str = "archive/readings";

fn rolls_dir(partition: i32) -> String {
    format!("{ROLLS}/partition={partition}")
}

fn roll_name(first: i64, last: i64) -> String {
    format!("{first:020}-{last:020}")
}

/// The `(first, last)` offsets in a roll or file name.
pub fn parse_range(stem: &str) -> Option<(i64, i64)> {
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BatchError + '_ {
    move |e| BatchError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Removes the files no roll marker lists (what a crash or a failed write
/// left before its marker), and returns the next offset to archive for
/// each partition that has rolls.
pub async fn recover(archive: &Blobs) -> Result<BTreeMap<i32, i64>, BatchError> {
    let rolls = marked_rolls(archive).await?;
    let marked: std::collections::HashSet<&str> = rolls
        .values()
        .flatten()
        .flat_map(|r| r.files.iter().map(String::as_str))
        .collect();
    for key in archive.list(READINGS).await? {
        if !marked.contains(key.as_str()) {
            tracing::info!(file = %key, "removing a file of an unfinished roll");
            archive.delete(&key).await?;
        }
    }
    Ok(rolls
        .iter()
        .filter_map(|(&p, rs)| Some((p, rs.last()?.last + 1)))
        .collect())
}

/// The next offset to archive for partition `p`, from its marked rolls
/// (`None`: nothing of it archived yet).
/// Only the marker names of that partition are read, not every roll's
/// listing: this runs at each assignment.
pub async fn next_offset(archive: &Blobs, p: i32) -> Result<Option<i64>, BatchError> {
    Ok(markers_in(archive, &rolls_dir(p))
        .await?
        .iter()
        .map(|(_, _, _, last)| last + 1)
        .max())
}

/// The partition and offset range a marker key names.
fn parse_marker(key: &str) -> Option<(i32, i64, i64)> {
    let mut segs = key.rsplit('/');
    let (first, last) = parse_range(segs.next()?.strip_suffix(".roll")?)?;
    let p = segs.next()?.strip_prefix("partition=")?.parse().ok()?;
    Some((p, first, last))
}

/// The roll markers under `dir` (one partition's or all), with their
/// partition and range.
async fn markers_in(
    archive: &Blobs,
    dir: &str,
) -> Result<Vec<(String, i32, i64, i64)>, BatchError> {
    Ok(archive
        .list(dir)
        .await?
        .into_iter()
        .filter_map(|key| {
            let (p, first, last) = parse_marker(&key)?;
            Some((key, p, first, last))
        })
        .collect())
}

/// One roll of a partition, as its marker lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roll {
    /// First offset in the roll.
    pub first: i64,
    /// Last offset in the roll.
    pub last: i64,
    /// Its files, as keys of the archive store (paths relative to the data
    /// directory when the archive is local).
    pub files: Vec<String>,
}

/// Every marked roll, per partition, in offset order, as the markers list
/// them.
async fn marked_rolls(archive: &Blobs) -> Result<BTreeMap<i32, Vec<Roll>>, BatchError> {
    let mut out: BTreeMap<i32, Vec<Roll>> = BTreeMap::new();
    for (marker, p, first, last) in markers_in(archive, ROLLS).await? {
        let listed = archive.get(&marker).await?.unwrap_or_default();
        let files = String::from_utf8_lossy(&listed)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        out.entry(p).or_default().push(Roll { first, last, files });
    }
    for rolls in out.values_mut() {
        rolls.sort_by_key(|r| r.first);
    }
    Ok(out)
}

/// What a batch run may read, without changing anything: per partition,
/// the marked rolls in offset order, up to the first one whose files are
/// not all in place (a roll an older archiver left half-published).
pub async fn inventory(archive: &Blobs) -> Result<BTreeMap<i32, Vec<Roll>>, BatchError> {
    let mut out = marked_rolls(archive).await?;
    let present: std::collections::HashSet<String> =
        archive.list(READINGS).await?.into_iter().collect();
    for rolls in out.values_mut() {
        if let Some(i) = rolls
            .iter()
            .position(|r| r.files.iter().any(|f| !present.contains(f)))
        {
            rolls.truncate(i);
        }
    }
    Ok(out)
}

/// Decodes the archive file `name` (for messages) held in `bytes`.
pub fn records_in(name: &str, bytes: bytes::Bytes) -> Result<Vec<Record>, BatchError> {
    let bad = |e: &dyn std::fmt::Display| BatchError::Internal(format!("{name}: {e}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| bad(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        records_of(&batch, &mut out).map_err(|e| bad(&e))?;
    }
    Ok(out)
}

fn records_of(batch: &RecordBatch, out: &mut Vec<Record>) -> Result<(), String> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("no column {name}"))
    };
    let string = |name: &str| {
        col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("{name} is not a string column"))
    };
    let ts_col = |name: &str| {
        col(name)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| format!("{name} is not a millisecond timestamp"))
    };
    let device = string("device_id")?;
    let metric = string("metric")?;
    let tags = string("tags")?;
    let ts = ts_col("ts")?;
    let ingest = ts_col("ingest_ts")?;
    let value = col("value")?
        .as_primitive_opt::<Float64Type>()
        .ok_or("value is not a double")?;
    let seq = col("seq")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or("seq is not an unsigned integer")?;
    let partition = col("partition")?
        .as_primitive_opt::<Int32Type>()
        .ok_or("partition is not an int32")?;
    let offset = col("offset")?
        .as_primitive_opt::<Int64Type>()
        .ok_or("offset is not an int64")?;
    let index = col("index")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or("index is not a uint32")?;
    out.reserve(batch.num_rows());
    for i in 0..batch.num_rows() {
        let tags = if tags.is_valid(i) {
            serde_json::from_str(tags.value(i)).map_err(|e| format!("row {i}: tags: {e}"))?
        } else {
            BTreeMap::new()
        };
        out.push(Record {
            reading: braid_core::Reading {
                device_id: device.value(i).to_string(),
                metric: metric.value(i).to_string(),
                ts: ts.value(i),
                value: value.value(i),
                seq: seq.is_valid(i).then(|| seq.value(i)),
                tags,
            },
            ingest_ts: ingest.value(i),
            position: Position {
                partition: partition.value(i),
                offset: offset.value(i),
                index: index.value(i),
            },
        });
    }
    Ok(())
}

/// The archive-schema Parquet encoding of `records`.
pub fn encode_parquet(records: &[&Record]) -> Result<Vec<u8>, BatchError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let bad = |e: parquet::errors::ParquetError| BatchError::Internal(format!("encoding: {e}"));
    let mut w = ArrowWriter::try_new(Vec::new(), schema(), Some(props)).map_err(bad)?;
    w.write(&batch_of(records)?).map_err(bad)?;
    w.into_inner().map_err(bad)
}

/// Writes `records` to a new archive-schema Parquet file at `path`, synced
/// and create-only.
pub fn write_parquet(path: &Path, records: &[&Record]) -> Result<(), BatchError> {
    let bytes = encode_parquet(records)?;
    match braid_store::blobs::put_file(path, &bytes).map_err(io(path))? {
        Put::Created => Ok(()),
        Put::Existed => Err(BatchError::Internal(format!(
            "{} exists already: archive files are never overwritten",
            path.display()
        ))),
    }
}

/// One roll, encoded and not yet published: a file per event date, each
/// named by the roll's offset range, and the marker that lists them.
#[derive(Clone, Debug)]
pub struct EncodedRoll {
    /// The files: key and Parquet bytes.
    pub files: Vec<(String, bytes::Bytes)>,
    /// The marker's key.
    pub marker: String,
}

impl EncodedRoll {
    /// Encodes a roll of partition `partition` (`None` when `records` is
    /// empty).
    pub fn encode(partition: i32, records: &[Record]) -> Result<Option<Self>, BatchError> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(None);
        };
        let name = roll_name(first.position.offset, last.position.offset);
        let mut by_date: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
        for r in records {
            by_date.entry(date_of(r.reading.ts)).or_default().push(r);
        }
        let mut files = Vec::new();
        for (date, rs) in &by_date {
            let key = format!("{READINGS}/date={date}/partition={partition}/{name}.parquet");
            files.push((key, bytes::Bytes::from(encode_parquet(rs)?)));
        }
        Ok(Some(Self {
            files,
            marker: format!("{}/{name}.roll", rolls_dir(partition)),
        }))
    }

    /// The marker's text: the files' keys, one per line.
    pub fn listing(&self) -> bytes::Bytes {
        let text: String = self.files.iter().map(|(k, _)| format!("{k}\n")).collect();
        bytes::Bytes::from(text)
    }

    /// Publishes the roll: every file create-only, then the marker. A file
    /// found in place already has these bytes (a roll's name is its offset
    /// range, and the same offsets make the same files), so it is kept.
    /// The roll counts once its marker exists; a failure before leaves
    /// unlisted files that [`recover`] removes, and the roll can be
    /// published again.
    pub async fn publish(&self, archive: &Blobs) -> Result<(), BatchError> {
        for (key, bytes) in &self.files {
            archive.put_create(key, bytes.clone()).await?;
        }
        archive.put_create(&self.marker, self.listing()).await?;
        Ok(())
    }
}

/// Writes one roll of a partition into the local archive under
/// `data_dir`, without a runtime (fixtures, benchmarks): the same files and
/// marker, in the same order, as [`EncodedRoll::publish`]. Returns the
/// files' paths.
pub fn write_roll(
    data_dir: &Path,
    partition: i32,
    records: &[Record],
) -> Result<Vec<PathBuf>, BatchError> {
    let Some(roll) = EncodedRoll::encode(partition, records)? else {
        return Ok(Vec::new());
    };
    let put = |key: &str, bytes: &[u8]| {
        let path = data_dir.join(key);
        braid_store::blobs::put_file(&path, bytes).map_err(io(&path))
    };
    let mut out = Vec::new();
    for (key, bytes) in &roll.files {
        put(key, bytes)?;
        out.push(data_dir.join(key));
    }
    put(&roll.marker, &roll.listing())?;
    Ok(out)
}

struct Buffer {
    resume: Resume,
    records: Vec<Record>,
    bytes: usize,
    since: Option<Instant>,
    /// A roll encoded whose publication failed: it is published again
    /// before anything else of the partition.
    pending: Option<EncodedRoll>,
}

/// The archiver's state while the archive store fails: it reads nothing
/// more from Kafka (its position is where the unpublished rolls end) and
/// retries with a growing pause.
#[derive(Default)]
struct Held {
    until: Option<Instant>,
    backoff: Backoff,
}

impl Held {
    /// Notes a failure; returns the pause before the next try.
    fn failed(&mut self, e: &BatchError, what: &str) -> Duration {
        let pause = self.backoff.failed();
        self.until = Some(Instant::now() + pause);
        tracing::warn!(error = %e, retry_in = ?pause, "archive store failed {what}: holding, nothing more is read until it works");
        pause
    }

    fn ok(&mut self) {
        self.until = None;
        if self.backoff.worked() {
            tracing::info!("archive store works again: reading resumes");
        }
    }

    fn waiting(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }
}

/// Whether `e` is the archive store failing (worth a retry), not a bug.
fn store_failed(e: &BatchError) -> bool {
    matches!(e, BatchError::Blob(_))
}

/// Runs an archiver until `shutdown`, then writes out what it holds.
///
/// When the archive store fails (an outage), the archiver keeps what it
/// has, stops reading, and retries: no marker is written, so no offset
/// counts as archived, until the store takes the writes again.
pub async fn run(
    config: ArchiveConfig,
    shutdown: CancellationToken,
) -> Result<ArchiveStats, BatchError> {
    let mut held = Held::default();
    loop {
        match recover(&config.archive).await {
            Ok(_) => break,
            Err(e) if store_failed(&e) => {
                let pause = held.failed(&e, "at start");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(ArchiveStats::default()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
    held.ok();
    let revocations = RevocationContext::default();
    let consumer: StreamConsumer<RevocationContext> =
        consumer_config(&config.brokers, &config.group)
            .create_with_context(revocations.clone())
            .map_err(|e| KafkaError::client("creating the archive consumer", e))?;
    consumer
        .subscribe(&[Topics::READINGS])
        .map_err(|e| KafkaError::client("subscribing to braid.readings", e))?;
    let mut buffers: BTreeMap<i32, Buffer> = BTreeMap::new();
    let mut stats = ArchiveStats::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if !held.waiting() {
                    let due: Vec<i32> = buffers
                        .iter()
                        .filter(|(_, b)| {
                            b.pending.is_some()
                                || b.bytes >= config.roll_bytes
                                || b.since.is_some_and(|t| t.elapsed() >= config.roll_age)
                        })
                        .map(|(p, _)| *p)
                        .collect();
                    let mut failed = false;
                    for p in due {
                        match flush(&config, &mut buffers, p, &mut stats).await {
                            Ok(()) => {}
                            Err(e) if store_failed(&e) => {
                                held.failed(&e, &format!("publishing a roll of partition {p}"));
                                failed = true;
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    if !failed {
                        held.ok();
                    }
                }
                rejoin_if_stalled(&consumer, &config.group, Topics::READINGS, REJOIN_AFTER)?;
            }
            msg = consumer.recv(), if held.until.is_none() => {
                for p in revocations.take_revoked() {
                    // The new owner resumes from the markers; writing this
                    // buffer now would archive its offsets twice.
                    if buffers.remove(&p).is_some() {
                        tracing::info!(partition = p, "partition revoked: unwritten buffer dropped");
                    }
                }
                let m = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "archive consumer error; retrying");
                        continue;
                    }
                };
                let p = m.partition();
                let offset = m.offset();
                let buf = match buffers.entry(p) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        // A partition (re)assigned resumes where the markers
                        // say, not where this process started: since then it
                        // (or another owner) may have archived more.
                        let at = match next_offset(&config.archive, p).await {
                            Ok(at) => at,
                            Err(e) if store_failed(&e) => {
                                // Read this message again once the store answers.
                                consumer
                                    .seek(Topics::READINGS, p, Offset::Offset(offset), Duration::from_secs(5))
                                    .map_err(|e| KafkaError::client("seeking braid.readings", e))?;
                                held.failed(&e, &format!("reading the markers of partition {p}"));
                                continue;
                            }
                            Err(e) => return Err(e),
                        };
                        v.insert(Buffer {
                            resume: Resume::at(at),
                            records: Vec::new(),
                            bytes: 0,
                            since: None,
                            pending: None,
                        })
                    }
                };
                match buf.resume.step(offset) {
                    Step::Skip => continue,
                    Step::Seek(at) => {
                        consumer
                            .seek(Topics::READINGS, p, Offset::Offset(at), Duration::from_secs(5))
                            .map_err(|e| KafkaError::client("seeking braid.readings", e))?;
                        continue;
                    }
                    Step::Take => {}
                }
                let ingest_ts = m.timestamp().to_millis().unwrap_or(0);
                let payload = m.payload().unwrap_or_default();
                let (records, refused) = decode_records(payload, p, offset, ingest_ts);
                stats.invalid += refused.len() as u64;
                stats.records += records.len() as u64;
                for rec in records {
                    buf.bytes += 64 + rec.reading.device_id.len() + rec.reading.metric.len();
                    buf.records.push(rec);
                }
                buf.since.get_or_insert_with(Instant::now);
                buf.resume.done(offset);
                if buf.bytes >= config.roll_bytes {
                    match flush(&config, &mut buffers, p, &mut stats).await {
                        Ok(()) => {}
                        Err(e) if store_failed(&e) => {
                            held.failed(&e, &format!("publishing a roll of partition {p}"));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    let ps: Vec<i32> = buffers.keys().copied().collect();
    for p in ps {
        // Unpublished records stay in the log: the next archiver takes them.
        flush(&config, &mut buffers, p, &mut stats).await?;
    }
    Ok(stats)
}

/// Publishes partition `p`'s pending roll, then encodes and publishes its
/// buffer. On a store failure the roll stays pending.
async fn flush(
    config: &ArchiveConfig,
    buffers: &mut BTreeMap<i32, Buffer>,
    p: i32,
    stats: &mut ArchiveStats,
) -> Result<(), BatchError> {
    loop {
        let Some(buf) = buffers.get_mut(&p) else {
            return Ok(());
        };
        if buf.pending.is_none() {
            if buf.records.is_empty() {
                buf.since = None;
                return Ok(());
            }
            let records = std::mem::take(&mut buf.records);
            buf.bytes = 0;
            buf.since = None;
            buf.pending = tokio::task::spawn_blocking(move || EncodedRoll::encode(p, &records))
                .await
                .map_err(|e| BatchError::Internal(e.to_string()))??;
        }
        if let Some(roll) = &buf.pending {
            roll.publish(&config.archive).await?;
            tracing::debug!(partition = p, files = roll.files.len(), "roll archived");
            buf.pending = None;
            stats.rolls += 1;
        }
    }
}
