//! `braid import`: historical backfill of CSV or Parquet straight into the
//! archive, as a source of its own (not the log).
//!
//! Each input row becomes one reading through a [`Mapping`] (which column is
//! the device, the time, the value; a fixed or mapped metric; columns kept
//! as tags). Every row is validated by the core's `Reading::validate`; a row
//! that fails is reported with its row number and the column at fault, and
//! by default the import then writes nothing at all (`--skip-invalid`
//! imports the valid rows and reports the rest).
//!
//! An import is written to the archive store (the data directory, or
//! `--archive-url`) as `archive/imports/<import id>/date=YYYY-MM-DD/
//! <import id>.parquet` (the archive's schema, `partition` -1, `offset` the
//! row number, `ingest_ts` the import's start), each file create-only, then
//! `COMPLETE` last: a batch run reads only complete imports, so a killed
//! import is never half-applied. Imported
//! history enters answers at the next batch run; until then `/v1/status`
//! lists it under `pending_imports`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use braid_core::time::date_of;
use braid_core::{Limits, Position, Reading, Record};
use braid_store::layout::{IMPORT_COMPLETE, IMPORTS};
use braid_store::{Blobs, Put};
use chrono::{NaiveDateTime, TimeZone};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::BatchError;
use crate::archive::encode_parquet;

/// The input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

/// How input columns become readings.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// Column of the device id.
    pub device_id: String,
    /// Column of the event time.
    pub ts: String,
    /// Column of the value.
    pub value: String,
    /// Column of the metric, or a fixed metric for every row.
    pub metric: MetricFrom,
    /// Column of the device's sequence number, if any.
    pub seq: Option<String>,
    /// Tags: tag name and the column it comes from.
    pub tags: Vec<(String, String)>,
    /// How times without a zone are read.
    pub timezone: chrono_tz::Tz,
}

/// Where the metric comes from.
#[derive(Clone, Debug)]
pub enum MetricFrom {
    /// This column.
    Column(String),
    /// This name, for every row.
    Fixed(String),
}

/// An import.
#[derive(Clone, Debug)]
pub struct ImportConfig {
    /// The archive store the import is written to.
    pub archive: Blobs,
    /// The input file.
    pub file: PathBuf,
    /// Its format.
    pub format: Format,
    /// The mapping.
    pub mapping: Mapping,
    /// Check everything, write nothing.
    pub dry_run: bool,
    /// Import the valid rows even if some are invalid.
    pub skip_invalid: bool,
}

/// One invalid row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// Row number in the input, 1 = the first data row.
    pub row: u64,
    /// The column (or reading field) at fault.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}: {}: {}", self.row, self.field, self.reason)
    }
}

/// What an import did (or, dry, would do).
#[derive(Clone, Debug)]
pub struct ImportReport {
    /// The import id (`None` on a dry run or when nothing was written).
    pub id: Option<String>,
    /// Rows read.
    pub rows: u64,
    /// Readings written (or that would be).
    pub readings: u64,
    /// Invalid rows (all of them counted, the first 100 kept).
    pub invalid: u64,
    /// The first invalid rows.
    pub errors: Vec<RowError>,
    /// Event-time range of the readings.
    pub ts_range: Option<(i64, i64)>,
}

/// Rows as strings by column name, whatever the input format.
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

fn read_csv(path: &Path) -> Result<Table, BatchError> {
    let bad = |e: csv::Error| BatchError::Usage(format!("{}: {e}", path.display()));
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .map_err(bad)?;
    let columns = r
        .headers()
        .map_err(bad)?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(bad)?;
        rows.push(
            rec.iter()
                .map(|v| Some(v.to_string()).filter(|s| !s.is_empty()))
                .collect(),
        );
    }
    Ok(Table { columns, rows })
}

fn read_parquet(path: &Path) -> Result<Table, BatchError> {
    let bad = |e: &dyn std::fmt::Display| BatchError::Usage(format!("{}: {e}", path.display()));
    let file = fs::File::open(path).map_err(|source| BatchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| bad(&e))?;
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        if columns.is_empty() {
            columns = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        let as_text: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                let c = match c.data_type() {
                    // Times as epoch milliseconds, so zones never matter.
                    DataType::Timestamp(_, _) => cast(
                        c,
                        &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                    )
                    .and_then(|c| cast(&c, &DataType::Int64)),
                    _ => Ok(c.clone()),
                }?;
                cast(&c, &DataType::Utf8)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&e))?;
        for i in 0..batch.num_rows() {
            rows.push(
                as_text
                    .iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        s.is_valid(i).then(|| s.value(i).to_string())
                    })
                    .collect(),
            );
        }
    }
    Ok(Table { columns, rows })
}

/// Parses an event time: epoch milliseconds, RFC 3339, or
/// `YYYY-MM-DD HH:MM:SS[.fff]` (also with `T`) in `tz`.
pub fn parse_time(s: &str, tz: chrono_tz::Tz) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(ms) = braid_core::time::parse_rfc3339(s) {
        return Ok(ms);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return match tz.from_local_datetime(&naive) {
                chrono::LocalResult::Single(t) => Ok(t.timestamp_millis()),
                // The repeated hour when clocks go back: the earlier one.
                chrono::LocalResult::Ambiguous(a, _) => Ok(a.timestamp_millis()),
                chrono::LocalResult::None => Err(format!(
                    "`{s}` does not exist in {tz} (clocks went forward)"
                )),
            };
        }
    }
    Err(format!(
        "`{s}` is not epoch milliseconds, RFC 3339 or YYYY-MM-DD HH:MM:SS"
    ))
}

fn index_of(t: &Table, column: &str) -> Result<usize, BatchError> {
    t.columns.iter().position(|c| c == column).ok_or_else(|| {
        BatchError::Usage(format!(
            "no column `{column}` in the input (columns: {})",
            t.columns.join(", ")
        ))
    })
}

struct Columns {
    device: usize,
    ts: usize,
    value: usize,
    metric: Result<usize, String>,
    seq: Option<usize>,
    tags: Vec<(String, usize)>,
}

fn row_to_reading(
    row: &[Option<String>],
    t: &Table,
    cols: &Columns,
    m: &Mapping,
    now_ms: i64,
) -> Result<Reading, (String, String)> {
    let get = |i: usize| -> Result<&str, (String, String)> {
        row.get(i)
            .and_then(|v| v.as_deref())
            .ok_or_else(|| (t.columns[i].clone(), "is empty".to_string()))
    };
    let ts = parse_time(get(cols.ts)?, m.timezone).map_err(|e| (t.columns[cols.ts].clone(), e))?;
    let raw = get(cols.value)?;
    let value: f64 = raw.trim().parse().map_err(|_| {
        (
            t.columns[cols.value].clone(),
            format!("`{raw}` is not a number"),
        )
    })?;
    let metric = match &cols.metric {
        Ok(i) => get(*i)?.to_string(),
        Err(fixed) => fixed.clone(),
    };
    let seq = match cols.seq {
        Some(i) => {
            let raw = get(i)?;
            Some(raw.trim().parse::<u64>().map_err(|_| {
                (
                    t.columns[i].clone(),
                    format!("`{raw}` is not an unsigned integer"),
                )
            })?)
        }
        None => None,
    };
    let mut tags = BTreeMap::new();
    for (name, i) in &cols.tags {
        if let Some(v) = row.get(*i).and_then(|v| v.as_deref()) {
            tags.insert(name.clone(), v.to_string());
        }
    }
    let reading = Reading {
        device_id: get(cols.device)?.to_string(),
        metric,
        ts,
        value,
        seq,
        tags,
    };
    reading
        .validate(now_ms, &Limits::default())
        .map_err(|e| (e.field, e.reason))?;
    Ok(reading)
}

/// Runs an import. `progress` is called with (rows done, rows in all).
pub fn run(config: &ImportConfig, progress: &dyn Fn(u64, u64)) -> Result<ImportReport, BatchError> {
    let table = match config.format {
        Format::Csv => read_csv(&config.file)?,
        Format::Parquet => read_parquet(&config.file)?,
    };
    let m = &config.mapping;
    let cols = Columns {
        device: index_of(&table, &m.device_id)?,
        ts: index_of(&table, &m.ts)?,
        value: index_of(&table, &m.value)?,
        metric: match &m.metric {
            MetricFrom::Column(c) => Ok(index_of(&table, c)?),
            MetricFrom::Fixed(name) => Err(name.clone()),
        },
        seq: m.seq.as_deref().map(|c| index_of(&table, c)).transpose()?,
        tags: m
            .tags
            .iter()
            .map(|(name, c)| index_of(&table, c).map(|i| (name.clone(), i)))
            .collect::<Result<_, _>>()?,
    };
    let now = now_ms();
    let total = table.rows.len() as u64;
    let mut records = Vec::with_capacity(table.rows.len());
    let mut errors = Vec::new();
    let mut invalid = 0u64;
    let mut range: Option<(i64, i64)> = None;
    for (i, row) in table.rows.iter().enumerate() {
        if i % 10_000 == 0 {
            progress(i as u64, total);
        }
        match row_to_reading(row, &table, &cols, m, now) {
            Ok(reading) => {
                range = Some(range.map_or((reading.ts, reading.ts), |(a, b)| {
                    (a.min(reading.ts), b.max(reading.ts))
                }));
                records.push(Record {
                    reading,
                    ingest_ts: now,
                    position: Position {
                        partition: -1,
                        offset: i as i64,
                        index: 0,
                    },
                });
            }
            Err((field, reason)) => {
                invalid += 1;
                if errors.len() < 100 {
                    errors.push(RowError {
                        row: i as u64 + 1,
                        field,
                        reason,
                    });
                }
            }
        }
    }
    progress(total, total);
    let mut report = ImportReport {
        id: None,
        rows: total,
        readings: records.len() as u64,
        invalid,
        errors,
        ts_range: range,
    };
    if config.dry_run || records.is_empty() || (invalid > 0 && !config.skip_invalid) {
        if invalid > 0 && !config.skip_invalid {
            report.readings = 0;
        }
        return Ok(report);
    }
    let archive = config.archive.clone();
    report.id = Some(braid_store::published::block_on(async move {
        publish_import(&archive, &records).await
    })?);
    Ok(report)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes `records` as a new import in the archive store; returns its
/// id. Every file is written create-only and the `COMPLETE` marker last:
/// an import counts once its marker exists, and a batch run never reads
/// part of one.
pub async fn publish_import(archive: &Blobs, records: &[Record]) -> Result<String, BatchError> {
    let mut ms = now_ms();
    let id = loop {
        let id: String = format!(
            "import-{}",
            braid_core::time::format_rfc3339(ms)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        );
        if archive.list(&format!("{IMPORTS}/{id}")).await?.is_empty() {
            break id;
        }
        ms += 1;
    };
    let mut by_date: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_date.entry(date_of(r.reading.ts)).or_default().push(r);
    }
    for (date, rs) in &by_date {
        let key = format!("{IMPORTS}/{id}/date={date}/{id}.parquet");
        let bytes = bytes::Bytes::from(encode_parquet(rs)?);
        if archive.put_create(&key, bytes).await? == Put::Existed {
            return Err(BatchError::Internal(format!(
                "{key} in {} exists already: archive files are never overwritten",
                archive.location()
            )));
        }
    }
    let marker = format!("{IMPORTS}/{id}/{IMPORT_COMPLETE}");
    let text = format!("{} readings\n", records.len());
    archive.put_create(&marker, text.into()).await?;
    Ok(id)
}

/// [`publish_import`] into the local archive under `data_dir`, from
/// synchronous code (fixtures, benchmarks).
pub fn write_import(data_dir: &Path, records: &[Record]) -> Result<String, BatchError> {
    let (archive, records) = (Blobs::local(data_dir), records.to_vec());
    braid_store::published::block_on(async move { publish_import(&archive, &records).await })
}
