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
//! Offsets are zero-padded to 20 digits so names sort by offset. A roll is
//! what one partition buffered between two flushes (by size or age); it
//! becomes one file per event date, each named by the roll's offset range.
//! The files are written under `.tmp` names and synced, then the roll's
//! marker (listing them) is written atomically, then the files are renamed
//! into place. On start the archiver finishes the renames of every marked
//! roll and removes `.tmp` files no marker names. Whenever a partition is
//! assigned (at start, and again after any rebalance), the archiver resumes
//! it after the last offset its markers on disk name: not from a
//! consumer-group commit nor from what it knew at start, so a crash or a
//! rebalance at any point archives every offset exactly once.
//!
//! Each file holds the reading's fields (`device_id`, `metric`, `ts`,
//! `value`, `seq`, `tags` as a JSON object) plus `partition`, `offset`,
//! `index` and `ingest_ts`, so the archive alone can replay the log.
//! Records that fail validation are not archived (the speed layer sends them
//! to the dead-letter topic).

use std::collections::BTreeMap;
use std::fs;
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
}

impl ArchiveConfig {
    /// The defaults: rolls of 128 MiB or 60 s.
    pub fn new(brokers: String, data_dir: PathBuf) -> Self {
        Self {
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

fn rolls_dir(data_dir: &Path, partition: i32) -> PathBuf {
    data_dir.join(format!("archive/rolls/partition={partition}"))
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

fn sync_dir(dir: &Path) -> Result<(), BatchError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Finishes marked rolls, removes unmarked temporary files, and returns
/// the next offset to archive for each partition that has rolls.
pub fn recover(data_dir: &Path) -> Result<BTreeMap<i32, i64>, BatchError> {
    let mut next = BTreeMap::new();
    let mut marked = std::collections::BTreeSet::new();
    for (p, rolls) in marked_rolls(data_dir)? {
        for roll in &rolls {
            for rel in &roll.files {
                let path = data_dir.join(rel);
                let tmp = tmp_of(&path);
                if !path.exists() && tmp.exists() {
                    publish_once(&tmp, &path)?;
                } else if path.exists() && tmp.exists() {
                    fs::remove_file(&tmp).map_err(io(&tmp))?;
                }
                marked.insert(tmp);
            }
        }
        if let Some(last) = rolls.last() {
            next.insert(p, last.last + 1);
        }
    }
    remove_unmarked_tmp(&data_dir.join("archive/readings"), &marked)?;
    Ok(next)
}

/// The next offset to archive for partition `p`, from its marked rolls
/// (`None`: nothing of it archived yet).
/// Only the marker names of that partition are read, not every roll's
/// listing: this runs at each assignment.
pub fn next_offset(data_dir: &Path, p: i32) -> Result<Option<i64>, BatchError> {
    let dir = data_dir.join(format!("archive/rolls/partition={p}"));
    Ok(markers(&dir)?.iter().map(|(_, _, last)| last + 1).max())
}

/// The roll markers in a partition's marker folder, with their ranges.
fn markers(pdir: &Path) -> Result<Vec<(PathBuf, i64, i64)>, BatchError> {
    Ok(read_dir(pdir)?
        .into_iter()
        .filter(|m| m.extension().is_some_and(|e| e == "roll"))
        .filter_map(|m| {
            let (first, last) = m
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(parse_range)?;
            Some((m, first, last))
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
    /// Its files, relative to the data directory.
    pub files: Vec<String>,
}

/// Every marked roll, per partition, in offset order, as the markers list
/// them (whether or not their files are in place yet).
fn marked_rolls(data_dir: &Path) -> Result<BTreeMap<i32, Vec<Roll>>, BatchError> {
    let mut out = BTreeMap::new();
    for pdir in read_dir(&data_dir.join("archive/rolls"))? {
        let Some(p) = pdir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("partition="))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let mut rolls = Vec::new();
        for (marker, first, last) in markers(&pdir)? {
            let listed = fs::read_to_string(&marker).map_err(io(&marker))?;
            let files = listed
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            rolls.push(Roll { first, last, files });
        }
        rolls.sort_by_key(|r| r.first);
        out.insert(p, rolls);
    }
    Ok(out)
}

/// What a batch run may read, without changing anything: per partition,
/// the marked rolls in offset order, up to the first one whose files are
/// not all in place (an archiver is still publishing it).
pub fn inventory(data_dir: &Path) -> Result<BTreeMap<i32, Vec<Roll>>, BatchError> {
    let mut out = marked_rolls(data_dir)?;
    for rolls in out.values_mut() {
        if let Some(i) = rolls
            .iter()
            .position(|r| r.files.iter().any(|f| !data_dir.join(f).exists()))
        {
            rolls.truncate(i);
        }
    }
    Ok(out)
}

/// Reads an archive (or import) file back into records, in file order.
pub fn read_records(path: &Path) -> Result<Vec<Record>, BatchError> {
    let bad = |e: &dyn std::fmt::Display| BatchError::Internal(format!("{}: {e}", path.display()));
    let file = fs::File::open(path).map_err(io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
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

/// Moves `tmp` to `path` only if `path` does not exist yet (a hard link
/// fails on an existing name), so no archive file is ever overwritten.
fn publish_once(tmp: &Path, path: &Path) -> Result<(), BatchError> {
    fs::hard_link(tmp, path).map_err(io(path))?;
    fs::remove_file(tmp).map_err(io(tmp))
}

fn tmp_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, BatchError> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd.filter_map(Result::ok).map(|e| e.path()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
    }
}

fn remove_unmarked_tmp(
    dir: &Path,
    marked: &std::collections::BTreeSet<PathBuf>,
) -> Result<(), BatchError> {
    for entry in read_dir(dir)? {
        if entry.is_dir() {
            remove_unmarked_tmp(&entry, marked)?;
        } else if entry.extension().is_some_and(|e| e == "tmp") && !marked.contains(&entry) {
            tracing::info!(file = %entry.display(), "removing a file of an unfinished roll");
            fs::remove_file(&entry).map_err(io(&entry))?;
        }
    }
    Ok(())
}

/// Writes `records` to a new archive-schema Parquet file at `path`, synced.
pub fn write_parquet(path: &Path, records: &[&Record]) -> Result<(), BatchError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let bad =
        |e: parquet::errors::ParquetError| BatchError::Internal(format!("{}: {e}", path.display()));
    let file = fs::File::create(path).map_err(io(path))?;
    let mut w = ArrowWriter::try_new(file, schema(), Some(props)).map_err(bad)?;
    w.write(&batch_of(records)?).map_err(bad)?;
    let file = w.into_inner().map_err(bad)?;
    file.sync_all().map_err(io(path))
}

/// Writes one roll of a partition: a file per event date, the marker, the
/// renames. Returns the files' paths.
pub fn write_roll(
    data_dir: &Path,
    partition: i32,
    records: &[Record],
) -> Result<Vec<PathBuf>, BatchError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(Vec::new());
    };
    let name = roll_name(first.position.offset, last.position.offset);
    let mut by_date: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_date.entry(date_of(r.reading.ts)).or_default().push(r);
    }
    let mut files = Vec::new();
    for (date, rs) in &by_date {
        let rel = format!("archive/readings/date={date}/partition={partition}/{name}.parquet");
        let path = data_dir.join(&rel);
        let dir = path.parent().unwrap_or(data_dir);
        fs::create_dir_all(dir).map_err(io(dir))?;
        write_parquet(&tmp_of(&path), rs)?;
        files.push((rel, path));
    }
    let rdir = rolls_dir(data_dir, partition);
    fs::create_dir_all(&rdir).map_err(io(&rdir))?;
    let marker = rdir.join(format!("{name}.roll"));
    let marker_tmp = tmp_of(&marker);
    let listing: String = files.iter().map(|(rel, _)| format!("{rel}\n")).collect();
    fs::write(&marker_tmp, listing).map_err(io(&marker_tmp))?;
    fs::File::open(&marker_tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&marker_tmp))?;
    publish_once(&marker_tmp, &marker)?;
    sync_dir(&rdir)?;
    let mut out = Vec::new();
    for (_, path) in files {
        publish_once(&tmp_of(&path), &path)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        out.push(path);
    }
    Ok(out)
}

struct Buffer {
    resume: Resume,
    records: Vec<Record>,
    bytes: usize,
    since: Option<Instant>,
}

/// Runs an archiver until `shutdown`, then writes out what it holds.
pub async fn run(
    config: ArchiveConfig,
    shutdown: CancellationToken,
) -> Result<ArchiveStats, BatchError> {
    let dir = config.data_dir.clone();
    tokio::task::spawn_blocking(move || recover(&dir))
        .await
        .map_err(|e| BatchError::Internal(e.to_string()))??;
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
                let due: Vec<i32> = buffers
                    .iter()
                    .filter(|(_, b)| b.since.is_some_and(|t| t.elapsed() >= config.roll_age))
                    .map(|(p, _)| *p)
                    .collect();
                for p in due {
                    flush(&config, &mut buffers, p, &mut stats).await?;
                }
                rejoin_if_stalled(&consumer, &config.group, Topics::READINGS, REJOIN_AFTER)?;
            }
            msg = consumer.recv() => {
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
                        // A partition (re)assigned resumes where the markers on
                        // disk say, not where this process started: since then
                        // it (or another owner) may have archived more.
                        let at = next_offset(&config.data_dir, p)?;
                        v.insert(Buffer {
                            resume: Resume::at(at),
                            records: Vec::new(),
                            bytes: 0,
                            since: None,
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
                    flush(&config, &mut buffers, p, &mut stats).await?;
                }
            }
        }
    }
    let ps: Vec<i32> = buffers.keys().copied().collect();
    for p in ps {
        flush(&config, &mut buffers, p, &mut stats).await?;
    }
    Ok(stats)
}

async fn flush(
    config: &ArchiveConfig,
    buffers: &mut BTreeMap<i32, Buffer>,
    p: i32,
    stats: &mut ArchiveStats,
) -> Result<(), BatchError> {
    let Some(buf) = buffers.get_mut(&p) else {
        return Ok(());
    };
    if buf.records.is_empty() {
        buf.since = None;
        return Ok(());
    }
    let records = std::mem::take(&mut buf.records);
    buf.bytes = 0;
    buf.since = None;
    let dir = config.data_dir.clone();
    let files = tokio::task::spawn_blocking(move || write_roll(&dir, p, &records))
        .await
        .map_err(|e| BatchError::Internal(e.to_string()))??;
    stats.rolls += 1;
    tracing::debug!(partition = p, files = files.len(), "roll archived");
    Ok(())
}
