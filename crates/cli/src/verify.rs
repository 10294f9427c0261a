//! `braid verify`: the whole system checked against a from-scratch
//! recomputation of the log.
//!
//! It reads `braid.readings` from the start (outside any consumer group),
//! recomputes every view with the core's reference model
//! ([`braid_core::reference`]), splitting the log at the cut of the batch
//! run the serving layer answers with, asks the serving layer for every
//! view (Arrow, so values compare to the bit), and counts:
//!
//! - `lost_acked`: readings a client was told were durable (`--acked`, the
//!   file `braid simulate --acked` writes) that are not in the log;
//! - `duplicate_in_view`: readings a served window counts beyond the model;
//! - `view_mismatch`: windows whose values or counters differ from the
//!   model, or that only one side has;
//! - `archive_gap`: records of the log below an archived partition's
//!   highest offset that the archive lacks (and `archive_not_in_log`,
//!   archived records the log does not hold);
//! - `archive_dup_offset`: records archived more than once.
//!
//! Run it when producers are quiet: it waits for the serving layer to
//! catch up with the log it read, and refuses to judge if the log grew in
//! between.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use braid_core::fold::{GroupKey, Layer};
use braid_core::merge::Counters;
use braid_core::reference::{ModelView, recompute};
use braid_core::{Column, Position, Record, ViewDef, ViewSet};
use braid_kafka::Topics;
use braid_kafka::drain::drain_topic;
use braid_serving::query::COUNTERS;
use rdkafka::Message;
use serde::Deserialize;
use serde_json::{Value, json};

/// What to verify.
#[derive(Debug)]
pub struct VerifyArgs {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The serving layer, `http://HOST:PORT`.
    pub server: String,
    /// The data directory (imports) and where runs are published
    /// (manifests), if readable here.
    pub layout: braid_store::Layout,
    /// The archive.
    pub archive: braid_store::Blobs,
    /// The views the serving layer serves.
    pub views: ViewSet,
    /// Readings acknowledged to a client, NDJSON.
    pub acked: Option<PathBuf>,
    /// How long to wait for the serving layer to catch up.
    pub wait: Duration,
    /// Differing windows printed at most.
    pub show: usize,
    /// A read token for every device, for a server with tokens.
    pub token: Option<String>,
}

/// The counters, `None` where not checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Acknowledged readings missing from the log.
    pub lost_acked: Option<u64>,
    /// Readings counted beyond the model.
    pub duplicate_in_view: u64,
    /// Windows that differ from the model.
    pub view_mismatch: u64,
    /// Log records missing below the archive's high-water marks.
    pub archive_gap: Option<u64>,
    /// Records archived twice or more.
    pub archive_dup_offset: Option<u64>,
    /// Archived records the log does not hold.
    pub archive_not_in_log: Option<u64>,
}

impl Tally {
    /// Whether every checked counter is zero.
    pub fn clean(&self) -> bool {
        self.duplicate_in_view == 0
            && self.view_mismatch == 0
            && [
                self.lost_acked,
                self.archive_gap,
                self.archive_dup_offset,
                self.archive_not_in_log,
            ]
            .iter()
            .all(|c| c.is_none_or(|c| c == 0))
    }

    fn lines(&self) -> Vec<(&'static str, Option<u64>)> {
        vec![
            ("lost_acked", self.lost_acked),
            ("duplicate_in_view", Some(self.duplicate_in_view)),
            ("view_mismatch", Some(self.view_mismatch)),
            ("archive_gap", self.archive_gap),
            ("archive_dup_offset", self.archive_dup_offset),
            ("archive_not_in_log", self.archive_not_in_log),
        ]
    }

    /// The counters as JSON (`null` where not checked).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.lines()
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        )
    }
}

/// One window that differs.
#[derive(Debug)]
pub struct Difference {
    /// The view.
    pub view: String,
    /// Window start, epoch ms.
    pub window_start: i64,
    /// The group's values.
    pub group: GroupKey,
    /// What differs.
    pub what: String,
}

/// What `braid verify` found.
#[derive(Debug)]
pub struct Report {
    /// The counters.
    pub tally: Tally,
    /// Records read from the log, per partition.
    pub records: BTreeMap<i32, u64>,
    /// Records the consumers refuse (they go to the dead-letter topic).
    pub refused: u64,
    /// Per view: windows compared and the batch run answered with.
    pub views: Vec<(String, usize, Option<String>)>,
    /// The differing windows.
    pub differences: Vec<Difference>,
    /// Distinct records in the archive (`None`: no archive here).
    pub archived: Option<u64>,
}

/// The log as the consumers take it: valid records in log order per
/// partition, one past the last offset per partition, refused count.
struct Log {
    records: Vec<Record>,
    ends: BTreeMap<i32, i64>,
    refused: u64,
}

fn read_log(brokers: &str) -> Result<Log> {
    let mut log = Log {
        records: Vec::new(),
        ends: BTreeMap::new(),
        refused: 0,
    };
    drain_topic(
        brokers,
        Topics::READINGS,
        Duration::from_secs(2),
        Duration::from_secs(1800),
        |m| {
            let ingest_ts = m.timestamp().to_millis().unwrap_or(0);
            let (records, refused) = braid_core::codec::decode_records(
                m.payload().unwrap_or_default(),
                m.partition(),
                m.offset(),
                ingest_ts,
            );
            log.records.extend(records);
            log.refused += refused.len() as u64;
            let end = log.ends.entry(m.partition()).or_insert(0);
            *end = (*end).max(m.offset() + 1);
        },
    )
    .with_context(|| format!("reading {} from {brokers}", Topics::READINGS))?;
    Ok(log)
}

async fn get(http: &reqwest::Client, url: &str) -> Result<reqwest::Response> {
    crate::compare::answer(http.get(url), url).await
}

/// The serving layer's next offset per partition of the speed view.
async fn served_progress(http: &reqwest::Client, server: &str) -> Result<BTreeMap<i32, i64>> {
    let status: Value = get(http, &format!("{server}/v1/status"))
        .await?
        .json()
        .await?;
    let mut out = BTreeMap::new();
    if let Some(parts) = status["speed"]["partitions"].as_object() {
        for (p, v) in parts {
            if let (Ok(p), Some(next)) = (p.parse(), v["next_offset"].as_i64()) {
                out.insert(p, next);
            }
        }
    }
    Ok(out)
}

/// Waits until the serving layer has applied the whole log; fails if it
/// has applied more (the log grew since it was read).
async fn wait_for_serving(
    http: &reqwest::Client,
    server: &str,
    ends: &BTreeMap<i32, i64>,
    wait: Duration,
) -> Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let served = served_progress(http, server).await?;
        grew(&served, ends)?;
        let behind: Vec<String> = ends
            .iter()
            .filter(|&(p, &end)| served.get(p).is_none_or(|&n| n < end))
            .map(|(p, end)| format!("partition {p} at {} of {end}", served.get(p).unwrap_or(&0)))
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the serving layer did not catch up with braid.readings in {wait:?}: {} (is the speed layer running?)",
                behind.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn grew(served: &BTreeMap<i32, i64>, ends: &BTreeMap<i32, i64>) -> Result<()> {
    if let Some((p, n)) = served
        .iter()
        .find(|&(p, &n)| n > ends.get(p).copied().unwrap_or(0))
    {
        bail!(
            "braid.readings grew while verifying (partition {p}: the serving layer is at offset {n}, the log read ended at {}): run braid verify when producers are quiet",
            ends.get(p).copied().unwrap_or(0)
        );
    }
    Ok(())
}

/// The header of a served answer.
#[derive(Debug, Deserialize)]
struct BatchHeader {
    run_id: String,
    cut: BTreeMap<i32, i64>,
}

/// One served row: aggregate values (`None`: null) and counters.
#[derive(Debug, PartialEq)]
struct ServedRow {
    values: Vec<Option<f64>>,
    counters: [u64; 6],
}

type Served = BTreeMap<(i64, GroupKey), ServedRow>;

async fn served_view(
    http: &reqwest::Client,
    server: &str,
    view: &ViewDef,
) -> Result<(Option<BatchHeader>, Served)> {
    let url = format!("{server}/v1/views/{}?format=arrow", view.name);
    let bytes = get(http, &url)
        .await
        .with_context(|| {
            format!(
                "view {}: is --views the file the serving layer uses?",
                view.name
            )
        })?
        .bytes()
        .await?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .with_context(|| format!("{url}: not an Arrow stream"))?;
    let header: Option<BatchHeader> = match reader.schema().metadata.get("braid.batch") {
        None => bail!("{url}: the answer names no batch run (an older serving layer?)"),
        Some(text) => serde_json::from_str::<Option<BatchHeader>>(text)
            .with_context(|| format!("{url}: braid.batch metadata"))?,
    };
    let mut rows = Served::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("{url}: reading the Arrow stream"))?;
        rows_of(view, &batch, &mut rows).with_context(|| format!("{url}: unexpected columns"))?;
    }
    Ok((header, rows))
}

fn rows_of(view: &ViewDef, batch: &RecordBatch, out: &mut Served) -> Result<()> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .with_context(|| format!("no column {name}"))
    };
    let starts = col("window_start")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .context("window_start is not a timestamp")?;
    let groups = view
        .group_by
        .iter()
        .map(|g| {
            col(g)?
                .as_string_opt::<i32>()
                .context("a group is not a string")
        })
        .collect::<Result<Vec<_>>>()?;
    let columns = view.columns();
    let mut values = Vec::new();
    for c in &columns {
        let a = col(c.name())?;
        values.push(if *c == Column::Count {
            let a = a.as_primitive_opt::<UInt64Type>().context("count")?;
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i) as f64))
                .collect::<Vec<_>>()
        } else {
            let a = a.as_primitive_opt::<Float64Type>().context(c.name())?;
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect()
        });
    }
    let counters = COUNTERS
        .iter()
        .map(|n| col(n)?.as_primitive_opt::<UInt64Type>().context(*n))
        .collect::<Result<Vec<_>>>()?;
    for i in 0..batch.num_rows() {
        let group = groups
            .iter()
            .map(|g| g.is_valid(i).then(|| g.value(i).to_string()))
            .collect();
        let mut c = [0u64; 6];
        for (slot, a) in c.iter_mut().zip(&counters) {
            *slot = a.value(i);
        }
        out.insert(
            (starts.value(i), group),
            ServedRow {
                values: values.iter().map(|v| v[i]).collect(),
                counters: c,
            },
        );
    }
    Ok(())
}

/// The model's row in the served shape: values as the serving layer
/// writes them (not finite: null; count: a whole number).
fn model_row(view: &ViewDef, w: &braid_core::reference::ModelWindow) -> ServedRow {
    let values = view
        .columns()
        .iter()
        .map(|c| {
            let v = w.state.value(*c).filter(|v| v.is_finite());
            if *c == Column::Count {
                v.map(|v| (v as u64) as f64)
            } else {
                v
            }
        })
        .collect();
    let (b, s): (&Counters, &Counters) = (&w.batch, &w.speed);
    ServedRow {
        values,
        counters: [
            b.readings + s.readings,
            b.readings,
            s.readings,
            b.late_readings + s.late_readings,
            b.pending_historical + s.pending_historical,
            b.duplicates_dropped + s.duplicates_dropped,
        ],
    }
}

fn describe(view: &ViewDef, served: &ServedRow, model: &ServedRow) -> String {
    let mut out = Vec::new();
    for ((c, a), b) in view.columns().iter().zip(&served.values).zip(&model.values) {
        if a.map(f64::to_bits) != b.map(f64::to_bits) {
            out.push(format!("{}: served {a:?}, model {b:?}", c.name()));
        }
    }
    for ((name, a), b) in COUNTERS.iter().zip(served.counters).zip(model.counters) {
        if a != b {
            out.push(format!("{name}: served {a}, model {b}"));
        }
    }
    out.join("; ")
}

/// Imports the batch run included, as records of pseudo-partitions of
/// their own (below every real one), in file order. Each import is read
/// once into `cache`, whichever views' runs include it.
async fn imports_of(
    layout: &braid_store::Layout,
    archive: &braid_store::Blobs,
    view: &str,
    run_id: &str,
    cache: &mut HashMap<String, Vec<Record>>,
) -> Result<Vec<Record>> {
    let manifest = braid_store::views::read_manifest(layout, view, run_id).with_context(|| {
        format!(
            "reading the manifest of run {run_id} of {view} in {} (are --data-dir and --views-url the serving layer's?)",
            layout.published_location()
        )
    })?;
    if manifest.imports.is_empty() {
        return Ok(Vec::new());
    }
    let complete = braid_store::layout::complete_imports(archive)
        .await
        .with_context(|| format!("listing imports in {}", archive.location()))?;
    let mut out = Vec::new();
    for (k, id) in manifest.imports.iter().enumerate() {
        if !cache.contains_key(id) {
            let files = complete
                .get(id)
                .with_context(|| format!("import {id} of run {run_id} is gone"))?;
            let mut records = Vec::new();
            for f in files {
                let bytes = archive
                    .get(f)
                    .await?
                    .with_context(|| format!("{f} of import {id} is gone"))?;
                records.extend(braid_batch::archive::records_in(f, bytes)?);
            }
            records.sort_by_key(|r| (r.position.offset, r.position.index));
            cache.insert(id.clone(), records);
        }
        out.extend(cache[id].iter().cloned().map(|mut r| {
            r.position.partition = i32::MIN + k as i32;
            r
        }));
    }
    Ok(out)
}

fn compare_view(view: &ViewDef, served: &Served, model: &ModelView, report: &mut Report) {
    let model: BTreeMap<&(i64, GroupKey), ServedRow> =
        model.iter().map(|(k, w)| (k, model_row(view, w))).collect();
    let mut differ = |key: &(i64, GroupKey), what: String| {
        report.tally.view_mismatch += 1;
        report.differences.push(Difference {
            view: view.name.clone(),
            window_start: key.0,
            group: key.1.clone(),
            what,
        });
    };
    for (key, want) in &model {
        match served.get(*key) {
            None => differ(
                key,
                format!(
                    "missing from the serving layer ({} readings in the model)",
                    want.counters[0]
                ),
            ),
            Some(got) => {
                report.tally.duplicate_in_view += got.counters[0].saturating_sub(want.counters[0]);
                if got != want {
                    differ(key, describe(view, got, want));
                }
            }
        }
    }
    for (key, got) in served {
        if !model.contains_key(key) {
            report.tally.duplicate_in_view += got.counters[0];
            differ(
                key,
                format!(
                    "served with {} readings, absent from the model",
                    got.counters[0]
                ),
            );
        }
    }
}

/// Archive checks against the log: gaps, duplicates, strangers; returns
/// the distinct records archived.
async fn check_archive(
    archive: &braid_store::Blobs,
    log: &Log,
    tally: &mut Tally,
) -> Result<Option<u64>> {
    let inventory = braid_batch::archive::inventory(archive).await?;
    if inventory.is_empty() {
        return Ok(None);
    }
    let mut seen: HashMap<(i32, i64, u32), u32> = HashMap::new();
    let mut high: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, rolls) in &inventory {
        for roll in rolls {
            for f in &roll.files {
                let bytes = archive
                    .get(f)
                    .await?
                    .with_context(|| format!("{f}, listed by its roll, is gone"))?;
                for r in braid_batch::archive::records_in(f, bytes)? {
                    let Position {
                        partition,
                        offset,
                        index,
                    } = r.position;
                    *seen.entry((partition, offset, index)).or_default() += 1;
                }
            }
            let h = high.entry(*p).or_insert(-1);
            *h = (*h).max(roll.last);
        }
    }
    let in_log: HashSet<(i32, i64, u32)> = log
        .records
        .iter()
        .map(|r| (r.position.partition, r.position.offset, r.position.index))
        .collect();
    tally.archive_dup_offset = Some(seen.values().filter(|&&n| n > 1).count() as u64);
    tally.archive_not_in_log = Some(seen.keys().filter(|k| !in_log.contains(k)).count() as u64);
    tally.archive_gap = Some(
        in_log
            .iter()
            .filter(|(p, o, _)| high.get(p).is_some_and(|&h| *o <= h))
            .filter(|k| !seen.contains_key(k))
            .count() as u64,
    );
    Ok(Some(seen.len() as u64))
}

/// One line of the acknowledged-readings file.
#[derive(Debug, Deserialize, PartialEq, Eq, Hash)]
struct AckedKey {
    device_id: String,
    metric: String,
    ts: i64,
    seq: Option<u64>,
}

fn lost_acked(path: &Path, log: &Log) -> Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let have: HashSet<(&str, &str, i64, Option<u64>)> = log
        .records
        .iter()
        .map(|r| {
            let r = &r.reading;
            (r.device_id.as_str(), r.metric.as_str(), r.ts, r.seq)
        })
        .collect();
    let mut lost = 0;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let k: AckedKey = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not an acknowledged reading",
                path.display(),
                i + 1
            )
        })?;
        if !have.contains(&(k.device_id.as_str(), k.metric.as_str(), k.ts, k.seq)) {
            lost += 1;
        }
    }
    Ok(lost)
}

/// Runs every check.
pub async fn run(args: &VerifyArgs, progress: impl Fn(&str)) -> Result<Report> {
    let server = args.server.trim_end_matches('/').to_string();
    let http = crate::compare::client(args.token.as_deref())?;
    progress(&format!(
        "reading {} from {}",
        Topics::READINGS,
        args.brokers
    ));
    let brokers = args.brokers.clone();
    let log = tokio::task::spawn_blocking(move || read_log(&brokers)).await??;
    let mut report = Report {
        tally: Tally::default(),
        records: BTreeMap::new(),
        refused: log.refused,
        views: Vec::new(),
        differences: Vec::new(),
        archived: None,
    };
    for r in &log.records {
        *report.records.entry(r.position.partition).or_default() += 1;
    }
    if let Some(path) = &args.acked {
        report.tally.lost_acked = Some(lost_acked(path, &log)?);
    }
    progress(&format!(
        "{} records read; waiting for the serving layer at {server} to apply them",
        log.records.len()
    ));
    wait_for_serving(&http, &server, &log.ends, args.wait).await?;
    let mut imported = HashMap::new();
    for view in &args.views.views {
        let (header, served) = served_view(&http, &server, view).await?;
        let imports = match &header {
            Some(h) => {
                imports_of(
                    &args.layout,
                    &args.archive,
                    &view.name,
                    &h.run_id,
                    &mut imported,
                )
                .await?
            }
            None => Vec::new(),
        };
        let cut = header.as_ref().map(|h| h.cut.clone()).unwrap_or_default();
        let layer = |r: &Record| {
            let p = r.position.partition;
            if p < 0 || r.position.offset < cut.get(&p).copied().unwrap_or(0) {
                Layer::Batch
            } else {
                Layer::Speed
            }
        };
        let model = recompute(
            view,
            &args.views.settings,
            log.records.iter().chain(&imports),
            layer,
        );
        compare_view(view, &served, &model, &mut report);
        report.views.push((
            view.name.clone(),
            model.len().max(served.len()),
            header.map(|h| h.run_id),
        ));
    }
    grew(&served_progress(&http, &server).await?, &log.ends)?;
    report.archived = check_archive(&args.archive, &log, &mut report.tally).await?;
    Ok(report)
}

/// The report as text: a summary, the counters, the first differences.
pub fn render(report: &Report, show: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let total: u64 = report.records.values().sum();
    let _ = writeln!(
        s,
        "braid verify: {total} records in {} over {} partitions ({} refused by the consumers)",
        Topics::READINGS,
        report.records.len(),
        report.refused
    );
    if let Some(n) = report.archived {
        let _ = writeln!(s, "  archive: {n} of them archived so far");
    }
    for (view, windows, run) in &report.views {
        let _ = writeln!(
            s,
            "  view {view}: {windows} windows, batch run {}",
            run.as_deref().unwrap_or("none")
        );
    }
    for (name, v) in report.tally.lines() {
        match v {
            Some(v) => {
                let _ = writeln!(s, "{name:<20} {v}");
            }
            None => {
                let _ = writeln!(s, "{name:<20} not checked");
            }
        }
    }
    for d in report.differences.iter().take(show) {
        let _ = writeln!(
            s,
            "differs: view {} window {} group {:?}: {}",
            d.view,
            braid_core::time::format_rfc3339(d.window_start),
            d.group,
            d.what
        );
    }
    if report.differences.len() > show {
        let _ = writeln!(s, "... and {} more", report.differences.len() - show);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (ViewSet, ModelView) {
        let set = ViewSet::parse(
            r#"
[[views]]
name = "v"
window = "1m"
group_by = ["device_id"]
aggregates = ["count", "sum"]
"#,
        )
        .unwrap();
        let records: Vec<Record> = (0..6)
            .map(|i| Record {
                reading: braid_core::Reading {
                    device_id: format!("d{}", i % 2),
                    metric: "m".into(),
                    ts: 1_000 * i,
                    value: i as f64,
                    seq: Some(i as u64),
                    tags: Default::default(),
                },
                ingest_ts: 1_000 * i,
                position: Position {
                    partition: 0,
                    offset: i,
                    index: 0,
                },
            })
            .collect();
        let model = recompute(&set.views[0], &set.settings, &records, |r| {
            if r.position.offset < 3 {
                Layer::Batch
            } else {
                Layer::Speed
            }
        });
        (set, model)
    }

    fn report() -> Report {
        Report {
            tally: Tally::default(),
            records: BTreeMap::new(),
            refused: 0,
            views: Vec::new(),
            differences: Vec::new(),
            archived: None,
        }
    }

    #[test]
    fn the_model_served_back_is_clean() {
        let (set, model) = setup();
        let view = &set.views[0];
        let served: Served = model
            .iter()
            .map(|(k, w)| (k.clone(), model_row(view, w)))
            .collect();
        assert_eq!(served.len(), 2);
        let d0 = &served[&(0, vec![Some("d0".to_string())])];
        assert_eq!(d0.values, vec![Some(3.0), Some(6.0)]);
        assert_eq!(d0.counters, [3, 2, 1, 0, 0, 0]);
        let mut r = report();
        compare_view(view, &served, &model, &mut r);
        assert!(r.tally.clean() && r.differences.is_empty(), "{r:?}");
    }

    #[test]
    fn a_reading_counted_twice_a_changed_value_and_a_missing_window_are_counted() {
        let (set, model) = setup();
        let view = &set.views[0];
        let mut served: Served = model
            .iter()
            .map(|(k, w)| (k.clone(), model_row(view, w)))
            .collect();
        let d0 = (0, vec![Some("d0".to_string())]);
        let d1 = (0, vec![Some("d1".to_string())]);
        // d0's last reading counted twice; d1 gone; a stranger served.
        let row = served.get_mut(&d0).unwrap();
        row.counters[0] += 1;
        row.counters[2] += 1;
        row.values = vec![Some(4.0), Some(10.0)];
        served.remove(&d1);
        served.insert(
            (60_000, vec![Some("d9".to_string())]),
            ServedRow {
                values: vec![Some(1.0), Some(1.0)],
                counters: [1, 0, 1, 0, 0, 0],
            },
        );
        let mut r = report();
        compare_view(view, &served, &model, &mut r);
        assert_eq!(r.tally.duplicate_in_view, 2);
        assert_eq!(r.tally.view_mismatch, 3);
        assert!(!r.tally.clean());
        let what: Vec<&str> = r.differences.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "count: served Some(4.0), model Some(3.0); sum: served Some(10.0), model Some(6.0); readings: served 4, model 3; readings_speed: served 2, model 1",
                "missing from the serving layer (3 readings in the model)",
                "served with 1 readings, absent from the model",
            ]
        );
    }
}
