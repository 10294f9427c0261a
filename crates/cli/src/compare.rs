//! `braid compare VIEW`: the serving layer's comparison of batch against
//! speed (`GET /v1/compare/{view}`), printed per window with a summary, or
//! exported side by side as JSON, CSV or Parquet for notebooks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, PrimitiveArray, RecordBatch, StringArray};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float64Type, Schema, TimestampMillisecondType, UInt64Type,
};
use braid_core::time::format_rfc3339;
use serde_json::Value;

/// What to compare and how to print it.
#[derive(Debug)]
pub struct CompareArgs {
    /// The serving layer, `http://HOST:PORT`.
    pub server: String,
    /// The view.
    pub view: String,
    /// Query parameters passed on (`from`, `to`, `device`, `metric`).
    pub params: Vec<(&'static str, String)>,
    /// `table`, `json`, `csv` or `parquet`.
    pub format: String,
    /// The aggregate column the table shows.
    pub column: Option<String>,
    /// Where exports go (stdout for json and csv when absent).
    pub output: Option<PathBuf>,
    /// A read token, for a server with tokens.
    pub token: Option<String>,
}

async fn fetch(args: &CompareArgs, format: &str) -> Result<reqwest::Response> {
    let url = format!(
        "{}/v1/compare/{}",
        args.server.trim_end_matches('/'),
        args.view
    );
    let mut params = args.params.clone();
    params.push(("format", format.to_string()));
    answer(
        client(args.token.as_deref())?.get(&url).query(&params),
        &url,
    )
    .await
}

/// An HTTP client that sends `token` (a read token) with every request.
pub(crate) fn client(token: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .context("building the HTTP client")
}

/// Sends `request` (to `url`): a connection failure names the server to
/// start, a refusal carries the serving layer's reason.
pub(crate) async fn answer(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<reqwest::Response> {
    let r = request
        .send()
        .await
        .with_context(|| format!("asking {url} (is `braid serve` or `braid up` running?)"))?;
    if !r.status().is_success() {
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        bail!(
            "{url}: {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(r)
}

/// Runs the comparison.
pub async fn run(args: CompareArgs) -> Result<()> {
    match args.format.as_str() {
        "table" => {
            let answer: Value = fetch(&args, "json").await?.json().await?;
            print!("{}", table(&answer, args.column.as_deref()));
        }
        "json" | "csv" => {
            let text = fetch(&args, &args.format).await?.text().await?;
            write_out(args.output.as_deref(), text.as_bytes())?;
        }
        "parquet" => {
            let Some(out) = &args.output else {
                bail!("--format parquet needs --output FILE");
            };
            let text = fetch(&args, "csv").await?.text().await?;
            let n = write_parquet(&text, out)?;
            eprintln!("braid compare: {n} rows written to {}", out.display());
        }
        other => bail!("--format {other}: expected table, json, csv or parquet"),
    }
    Ok(())
}

fn write_out(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match path {
        Some(p) => std::fs::write(p, bytes).with_context(|| format!("writing {}", p.display())),
        None => {
            use std::io::Write;
            std::io::stdout().write_all(bytes).context("writing stdout")
        }
    }
}

/// The printed comparison: one line per window and group, then the summary.
fn table(answer: &Value, column: Option<&str>) -> String {
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    let column = column.map(str::to_string).or_else(|| {
        // The first aggregate after count, else count.
        let first = rows.first()?.as_object()?;
        let cols: Vec<&str> = first
            .keys()
            .filter_map(|k| k.strip_prefix("batch_"))
            .filter(|c| !c.contains("readings") && !c.contains("pending") && !c.contains("dup"))
            .collect();
        cols.iter()
            .find(|c| **c != "count")
            .or(cols.first())
            .map(|c| c.to_string())
    });
    let group_keys: Vec<String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|o| {
            o.keys()
                .filter(|k| {
                    !k.starts_with("batch_")
                        && !k.starts_with("speed_")
                        && !k.starts_with("diff_")
                        && !matches!(
                            k.as_str(),
                            "window_start" | "window_end" | "status" | "reasons"
                        )
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let col = column.clone().unwrap_or_else(|| "count".into());
    out.push_str(&format!(
        "{:<24} {:<20} {:<10} {:>9} {:>9} {:>12} {:>12} {:>12}  reasons\n",
        "window",
        "group",
        "status",
        "n batch",
        "n speed",
        format!("{col} batch"),
        format!("{col} speed"),
        "difference"
    ));
    for r in &rows {
        let group: Vec<String> = group_keys.iter().map(|k| cell(&r[k])).collect();
        let reasons: Vec<&str> = r["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "{:<24} {:<20} {:<10} {:>9} {:>9} {:>12} {:>12} {:>12}  {}\n",
            r["window_start"]
                .as_i64()
                .map_or("-".into(), format_rfc3339),
            group.join(","),
            cell(&r["status"]),
            cell(&r["batch_readings"]),
            cell(&r["speed_readings"]),
            cell(&r[format!("batch_{col}")]),
            cell(&r[format!("speed_{col}")]),
            cell(&r[format!("diff_{col}")]),
            reasons.join(",")
        ));
    }
    let s = &answer["summary"];
    out.push_str(&format!(
        "\n{} windows: {} equal, {} differing, {} only in batch, {} only in speed",
        cell(&s["windows"]),
        cell(&s["equal"]),
        cell(&s["differing"]),
        cell(&s["only_batch"]),
        cell(&s["only_speed"]),
    ));
    if let Some(reasons) = s["reasons"].as_object().filter(|m| !m.is_empty()) {
        let r: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("; reasons: {}", r.join(", ")));
    }
    out.push('\n');
    out
}

/// The comparison's CSV as one Parquet file: times as UTC timestamps,
/// counters as integers, values as doubles, the rest as strings.
fn write_parquet(csv_text: &str, path: &Path) -> Result<usize> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .context("reading the comparison's header")?
        .iter()
        .map(String::from)
        .collect();
    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .context("reading the comparison's rows")?;
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (i, name) in header.iter().enumerate() {
        let cells = || {
            records
                .iter()
                .map(move |r| r.get(i).filter(|c| !c.is_empty()))
        };
        let (kind, nullable, col): (DataType, bool, ArrayRef) =
            if name == "window_start" || name == "window_end" {
                let a = numbers::<TimestampMillisecondType>(name, cells())?.with_timezone("UTC");
                (a.data_type().clone(), false, Arc::new(a))
            } else if name.ends_with("readings")
                || name.ends_with("readings_after_cut")
                || name.ends_with("pending_historical")
                || name.ends_with("duplicates_dropped")
            {
                let a = numbers::<UInt64Type>(name, cells())?;
                (DataType::UInt64, true, Arc::new(a))
            } else if name.starts_with("batch_")
                || name.starts_with("speed_")
                || name.starts_with("diff_")
            {
                let a = numbers::<Float64Type>(name, cells())?;
                (DataType::Float64, true, Arc::new(a))
            } else {
                (
                    DataType::Utf8,
                    true,
                    Arc::new(StringArray::from_iter(cells())),
                )
            };
        fields.push(Field::new(name, kind, nullable));
        cols.push(col);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .context("building the comparison's columns")?;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
        .context("starting the Parquet file")?;
    w.write(&batch).context("writing Parquet")?;
    w.close().context("closing the Parquet file")?;
    Ok(records.len())
}

/// A column of numbers from CSV cells (`None`: empty), naming the column
/// and the cell that does not parse.
fn numbers<'a, T>(
    name: &str,
    cells: impl Iterator<Item = Option<&'a str>>,
) -> Result<PrimitiveArray<T>>
where
    T: ArrowPrimitiveType,
    T::Native: std::str::FromStr,
{
    cells
        .map(|c| {
            c.map(|c| {
                c.parse::<T::Native>()
                    .map_err(|_| anyhow::anyhow!("column {name}: `{c}` is not a number"))
            })
            .transpose()
        })
        .collect()
}
