//! The `braid` command: every role of Braid behind one binary.
//!
//! Each subcommand parses its flags (shared groups in [`args`]), loads what
//! it needs and calls a library: the layers' `run(config, shutdown)`, the
//! Kafka crate's embedded broker, the core's view parser. Nothing here
//! decides anything about data; errors are reported once, at the top, with
//! their chain.

pub mod args;
pub mod compare;
pub mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use braid_core::ViewSet;
use braid_kafka::{BrokerStorage, EmbeddedBroker, ensure_topics};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::args::{
    AccessArgs, AlertArgs, ArchiveArgs, BatchScheduleArgs, HttpArgs, IngestArgs, KafkaArgs,
    SimArgs, SpeedArgs, StorageArgs, ViewsArgs, parse_scenario,
};

/// Braid: IoT readings into live and historical answers, counted exactly
/// once, with every window labelled by source, state and completeness.
#[derive(Parser, Debug)]
#[command(name = "braid", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run everything in one process: the embedded broker (unless --brokers),
    /// ingest, the archiver, the speed layer and the query API on one port.
    Up {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        views: ViewsArgs,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        ingest: IngestArgs,
        #[command(flatten)]
        speed: SpeedArgs,
        #[command(flatten)]
        batch: BatchScheduleArgs,
        #[command(flatten)]
        archive: ArchiveArgs,
        #[command(flatten)]
        alerts: AlertArgs,
        /// Also run a simulated fleet of this scenario: parking, home or farm.
        #[arg(long, env = "BRAID_SIMULATE", value_parser = parse_scenario)]
        simulate: Option<braid_sim::Scenario>,
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Send a simulated fleet's readings (or replay a real dataset) into
    /// braid.readings, straight to Kafka or over HTTP, until Ctrl-C or
    /// --duration.
    Simulate {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The fleet: parking, home or farm.
        #[arg(long, env = "BRAID_SCENARIO", value_parser = parse_scenario, required_unless_present = "replay")]
        scenario: Option<braid_sim::Scenario>,
        /// Replay this CSV file instead: ../shared/datasets'
        /// birmingham-parking.csv or wsn-single-hop.csv (known by their
        /// header), its times shifted to now.
        #[arg(long, conflicts_with = "scenario")]
        replay: Option<PathBuf>,
        /// How many times faster than the data's own pace a replay runs.
        #[arg(long, default_value_t = 60.0)]
        speedup: f64,
        /// Send over HTTP to this ingest gateway (http://HOST:PORT) instead
        /// of straight to Kafka.
        #[arg(long, env = "BRAID_INGEST_URL")]
        http_target: Option<String>,
        /// Bearer token for --http-target.
        #[arg(long, env = "BRAID_INGEST_TOKEN")]
        token: Option<String>,
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Run an archiver: braid.readings into the Parquet archive under the
    /// data directory, every offset exactly once.
    Archive {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        archive: ArchiveArgs,
    },
    /// Run a speed-layer worker: incremental views from braid.readings into
    /// braid.speed, checkpointed under the data directory.
    Speed {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        views: ViewsArgs,
        #[command(flatten)]
        speed: SpeedArgs,
    },
    /// Print batch against speed per window for a view, with the reasons
    /// they differ, from a running serving layer; or export both side by
    /// side (json, csv, parquet) for notebooks.
    Compare {
        /// The view.
        view: String,
        /// The serving layer to ask.
        #[arg(long, env = "BRAID_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Windows starting at or after (epoch ms or RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Windows starting before (epoch ms or RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        /// Only this metric.
        #[arg(long)]
        metric: Option<String>,
        /// table (printed), json, csv or parquet.
        #[arg(long, default_value = "table")]
        format: String,
        /// The aggregate the table shows (default: the first after count).
        #[arg(long)]
        column: Option<String>,
        /// Write the export here (needed for parquet; json and csv go to
        /// stdout without it).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// A read token for the view's devices (`Authorization: Bearer`), for a server with tokens.
        #[arg(long, env = "BRAID_TOKEN")]
        token: Option<String>,
    },
    /// Check the whole system against a from-scratch recomputation of
    /// braid.readings.
    ///
    /// Prints lost_acked, duplicate_in_view, view_mismatch, archive_gap,
    /// archive_dup_offset and each window that differs. Run it when
    /// producers are quiet. Exit codes: 0 every counter zero, 1 a counter is
    /// not zero, 2 the check could not be made.
    Verify {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        views: ViewsArgs,
        /// The serving layer to ask.
        #[arg(long, env = "BRAID_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Readings acknowledged to clients, NDJSON (`braid simulate
        /// --acked` writes it): each must be in the log.
        #[arg(long)]
        acked: Option<PathBuf>,
        /// How long to wait for the serving layer to catch up (e.g. 2m).
        #[arg(long, default_value = "2m", value_parser = args::parse_duration_ms)]
        wait: i64,
        /// Differing windows printed at most.
        #[arg(long, default_value_t = 20)]
        show: usize,
        /// text or json.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// A read token for every device (`Authorization: Bearer`), for a server with tokens.
        #[arg(long, env = "BRAID_TOKEN")]
        token: Option<String>,
    },
    /// Manage ingest tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run a serving replica alone: the query API over braid.speed.
    Serve {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        views: ViewsArgs,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        alerts: AlertArgs,
    },
    /// Run the ingest gateway alone: POST /v1/readings (JSON, NDJSON) and
    /// POST /v1/write (InfluxDB line protocol) into braid.readings.
    Ingest {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        ingest: IngestArgs,
    },
    /// Run the embedded Kafka-protocol broker alone (tansu, file-backed).
    Broker {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        storage: StorageArgs,
        /// Keep everything in memory instead of under the data directory.
        #[arg(long)]
        memory: bool,
    },
    /// Work with view definitions.
    Views {
        #[command(subcommand)]
        command: ViewsCommand,
    },
    /// Backfill history from a CSV or Parquet file straight into the archive
    /// (it enters answers at the next batch run). Exit codes: 0 imported,
    /// 1 failed, 65 invalid rows refused (nothing written).
    Import {
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        storage: StorageArgs,
        /// csv or parquet (default: from the file's extension).
        #[arg(long, value_parser = ["csv", "parquet"])]
        format: Option<String>,
        /// Column of the device id.
        #[arg(long, default_value = "device_id")]
        device_id: String,
        /// Column of the event time (epoch ms, RFC 3339 or YYYY-MM-DD HH:MM:SS).
        #[arg(long, default_value = "ts")]
        ts: String,
        /// Column of the value.
        #[arg(long, default_value = "value")]
        value: String,
        /// The metric of every row (instead of --metric-column).
        #[arg(long, conflicts_with = "metric_column")]
        metric: Option<String>,
        /// Column of the metric.
        #[arg(long, default_value = "metric")]
        metric_column: String,
        /// Column of the device's sequence number.
        #[arg(long)]
        seq: Option<String>,
        /// A tag from a column, NAME=COLUMN (repeatable).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Time zone of times written without one (e.g. Europe/London).
        #[arg(long, default_value = "UTC")]
        timezone: chrono_tz::Tz,
        /// Check every row and report; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import the valid rows even if some are invalid (they are listed).
        #[arg(long)]
        skip_invalid: bool,
    },
    /// The batch layer's recompute (for cron: see scripts/crontab.example).
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BatchCommand {
    /// Recompute views from the Parquet archive with DataFusion and publish
    /// them. Exit codes: 0 published, 1 failed (the previous run stays
    /// current), 75 another run holds the lock (nothing done).
    Run {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        views: ViewsArgs,
        /// Only this view.
        #[arg(long)]
        view: Option<String>,
        /// Extend the published run with what was archived since its cut
        /// (bit-identical to a full run; falls back to one when it cannot).
        #[arg(long)]
        incremental: bool,
        /// Runs kept per view, the published one included.
        #[arg(long, env = "BRAID_BATCH_KEEP", default_value_t = 5)]
        keep: usize,
        /// Threads for DataFusion.
        #[arg(long, env = "BRAID_BATCH_THREADS", default_value_t = 2)]
        threads: usize,
        /// Fold and aggregate on the DataFusion Ballista cluster whose
        /// scheduler (`braid batch scheduler`) is at df://HOST:PORT, not in
        /// this process. Its executors must reach the archive at the same
        /// URL (s3://, or a shared directory).
        #[arg(long, env = "BRAID_BALLISTA", value_name = "df://HOST:PORT")]
        ballista: Option<String>,
    },
    /// Run a DataFusion Ballista scheduler that `braid batch run --ballista`
    /// submits to (Braid's plan nodes need Braid's scheduler and executors,
    /// not stock Ballista binaries). Prints the address it listens on.
    Scheduler {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, env = "BRAID_SCHEDULER_BIND", default_value = "127.0.0.1:50050")]
        bind: std::net::SocketAddr,
        /// The host name executors and clients reach the scheduler by
        /// (default: the bind address).
        #[arg(long, env = "BRAID_EXTERNAL_HOST")]
        external_host: Option<String>,
    },
    /// Run a DataFusion Ballista executor for `braid batch scheduler`.
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(long, env = "BRAID_SCHEDULER", default_value = "127.0.0.1:50050")]
        scheduler: String,
        /// Address to bind.
        #[arg(long, env = "BRAID_EXECUTOR_BIND_HOST", default_value = "127.0.0.1")]
        bind_host: String,
        /// The host name the scheduler and the other executors reach this
        /// one by (default: the bind address).
        #[arg(long, env = "BRAID_EXTERNAL_HOST")]
        external_host: Option<String>,
        /// Arrow Flight port (shuffle data).
        #[arg(long, env = "BRAID_EXECUTOR_PORT", default_value_t = 50051)]
        port: u16,
        /// gRPC port (tasks).
        #[arg(long, env = "BRAID_EXECUTOR_GRPC_PORT", default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks run at once (default: the cores).
        #[arg(long, env = "BRAID_EXECUTOR_SLOTS")]
        slots: Option<usize>,
        /// Directory for shuffle files (default: a temporary one).
        #[arg(long, env = "BRAID_EXECUTOR_WORK_DIR")]
        work_dir: Option<PathBuf>,
    },
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| format!("`{s}` is not NAME=COLUMN"))
}

/// Exit code of an import refused for invalid rows (EX_DATAERR).
pub const EXIT_INVALID: u8 = 65;

/// Exit code of a batch run that found another one running (EX_TEMPFAIL).
pub const EXIT_LOCKED: u8 = 75;

#[derive(Subcommand, Debug)]
enum ViewsCommand {
    /// Check view files: print each view, or the line and field at fault.
    Check {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Parses the command line, runs it, and maps the outcome to an exit code:
/// 0 on success, 1 on a failure (printed with its causes).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BRAID_LOG")
        .unwrap_or_else(|_| "info,tansu=warn,librdkafka=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Views {
            command: ViewsCommand::Check { files },
        } => Ok(views_check(&files)),
        Command::Import {
            file,
            storage,
            format,
            device_id,
            ts,
            value,
            metric,
            metric_column,
            seq,
            tags,
            timezone,
            dry_run,
            skip_invalid,
        } => {
            use braid_batch::import::{Format, ImportConfig, Mapping, MetricFrom};
            let format = match format
                .as_deref()
                .or_else(|| file.extension().and_then(|e| e.to_str()))
            {
                Some("parquet") => Format::Parquet,
                Some("csv") => Format::Csv,
                _ => anyhow::bail!(
                    "cannot tell the format of {}: give --format csv or --format parquet",
                    file.display()
                ),
            };
            let config = ImportConfig {
                archive: storage.archive()?,
                file,
                format,
                mapping: Mapping {
                    device_id,
                    ts,
                    value,
                    metric: metric.map_or(MetricFrom::Column(metric_column), MetricFrom::Fixed),
                    seq,
                    tags,
                    timezone,
                },
                dry_run,
                skip_invalid,
            };
            import(&config)
        }
        Command::Batch {
            command:
                BatchCommand::Run {
                    storage,
                    views,
                    view,
                    incremental,
                    keep,
                    threads,
                    ballista,
                },
        } => {
            let (set, detectors) = load_views_and_detectors(&views.views)?;
            let mut config = storage.run_config(set)?;
            config.detectors = detectors;
            config.only = view;
            config.incremental = incremental;
            config.keep = keep;
            config.threads = threads;
            config.cluster = ballista;
            runtime()?.block_on(batch_run(config))
        }
        Command::Batch {
            command:
                BatchCommand::Scheduler {
                    bind,
                    external_host,
                },
        } => {
            runtime()?.block_on(braid_batch::recompute::cluster::run_scheduler(
                bind,
                external_host,
                |addr| println!("braid batch scheduler: listening on {addr}"),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Batch {
            command:
                BatchCommand::Executor {
                    scheduler,
                    bind_host,
                    external_host,
                    port,
                    grpc_port,
                    slots,
                    work_dir,
                },
        } => {
            let config = braid_batch::recompute::cluster::ExecutorConfig {
                scheduler,
                bind_host,
                external_host,
                port,
                grpc_port,
                slots: slots.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
                }),
                work_dir: work_dir.map(|d| d.display().to_string()),
            };
            runtime()?.block_on(braid_batch::recompute::cluster::run_executor(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Broker {
            kafka,
            storage,
            memory,
        } => runtime()?.block_on(broker(kafka, storage, memory)),
        Command::Up {
            kafka,
            storage,
            views,
            http,
            ingest,
            speed,
            batch,
            archive,
            alerts,
            simulate,
            sim,
        } => runtime()?.block_on(up(
            kafka,
            storage,
            views,
            http,
            ingest,
            (speed, batch, archive, alerts),
            simulate.map(|s| (s, sim)),
        )),
        Command::Simulate {
            kafka,
            scenario,
            replay,
            speedup,
            http_target,
            token,
            sim,
        } => {
            let target = match http_target {
                Some(url) => braid_sim::send::Target::Http { url, token },
                None => braid_sim::send::Target::Kafka(external_brokers(&kafka, "simulate")?),
            };
            runtime()?.block_on(simulate(
                target,
                scenario,
                replay.map(|f| (f, speedup)),
                sim,
            ))
        }
        Command::Ingest {
            kafka,
            http,
            ingest,
        } => runtime()?.block_on(ingest_alone(kafka, http, ingest)),
        Command::Speed {
            kafka,
            storage,
            views,
            speed,
        } => runtime()?.block_on(speed_alone(kafka, storage, views, speed)),
        Command::Archive {
            kafka,
            storage,
            archive,
        } => runtime()?.block_on(archive_alone(kafka, storage, archive)),
        Command::Token {
            command:
                TokenCommand::New {
                    tokens,
                    name,
                    access,
                    devices,
                    rate,
                },
        } => {
            let secret = braid_ingest::auth::add_token(&tokens, &name, access, devices, rate)?;
            eprintln!(
                "braid token: `{name}` added to {}; its secret, shown only now:",
                tokens.display()
            );
            println!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: TokenCommand::Revoke { tokens, name },
        } => {
            braid_ingest::auth::revoke_token(&tokens, &name)?;
            eprintln!(
                "braid token: `{name}` revoked in {}; running servers refuse it within a second",
                tokens.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            view,
            server,
            from,
            to,
            device,
            metric,
            format,
            column,
            output,
            token,
        } => {
            let params = [
                ("from", from),
                ("to", to),
                ("device", device),
                ("metric", metric),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            runtime()?.block_on(compare::run(compare::CompareArgs {
                server,
                view,
                params,
                format,
                column,
                output,
                token,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            kafka,
            storage,
            views,
            http,
            access,
            alerts,
        } => runtime()?.block_on(serve_alone(kafka, storage, views, http, (access, alerts))),
        Command::Verify {
            kafka,
            storage,
            views,
            server,
            acked,
            wait,
            show,
            format,
            token,
        } => {
            let args = verify::VerifyArgs {
                // Absent: the embedded broker of a running `braid up`.
                brokers: kafka
                    .brokers
                    .clone()
                    .unwrap_or_else(|| kafka.broker_listen.to_string()),
                server,
                archive: storage.archive()?,
                layout: storage.layout()?,
                views: load_views(&views.views)?,
                acked,
                wait: std::time::Duration::from_millis(wait.max(0) as u64),
                show,
                token,
            };
            let report =
                match runtime()?.block_on(verify::run(&args, |m| eprintln!("braid verify: {m}"))) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return Ok(ExitCode::from(2));
                    }
                };
            if format == "json" {
                let differences: Vec<serde_json::Value> = report
                    .differences
                    .iter()
                    .take(show)
                    .map(|d| {
                        serde_json::json!({
                            "view": d.view, "window_start": d.window_start,
                            "group": d.group, "what": d.what,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "counters": report.tally.to_json(),
                        "records": report.records.values().sum::<u64>(),
                        "refused": report.refused,
                        "archived": report.archived,
                        "differences": differences,
                    })
                );
            } else {
                print!("{}", verify::render(&report, show));
            }
            Ok(if report.tally.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// `braid token`.
#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Add a token to a tokens file (created if absent) and print its
    /// secret, which is shown only this once and stored hashed.
    New {
        /// The tokens file.
        #[arg(long, env = "BRAID_TOKENS")]
        tokens: PathBuf,
        /// A name for the token (unique in the file).
        #[arg(long)]
        name: String,
        /// What it may do: write readings, read views, or both
        /// (`--access read,write`).
        #[arg(long, value_parser = crate::args::parse_access, value_delimiter = ',', default_value = "write")]
        access: Vec<braid_ingest::auth::Access>,
        /// A device it may write or read: an id, or a prefix ending in `*`
        /// (repeatable; `*` alone for every device).
        #[arg(long = "device", required = true)]
        devices: Vec<String>,
        /// Readings per second it may write (429 beyond).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Revoke a token: running gateways and servers refuse it (401) within
    /// a second, without a restart.
    Revoke {
        /// The tokens file.
        #[arg(long, env = "BRAID_TOKENS")]
        tokens: PathBuf,
        /// The token's name.
        name: String,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Reads and parses a views file, naming the file in any error.
pub fn load_views(path: &Path) -> Result<ViewSet> {
    Ok(load_views_and_detectors(path)?.0)
}

/// Reads a views file's views and its `[[detectors]]`, naming the file in
/// any error.
pub fn load_views_and_detectors(path: &Path) -> Result<(ViewSet, braid_core::detect::Detectors)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let set = ViewSet::parse(&text).with_context(|| format!("{}", path.display()))?;
    let detectors = braid_core::detect::Detectors::parse(&text)
        .with_context(|| format!("{}", path.display()))?;
    detectors
        .check_views(&set)
        .with_context(|| format!("{}", path.display()))?;
    Ok((set, detectors))
}

fn views_check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match load_views_and_detectors(file) {
            Ok((set, detectors)) => {
                println!("{}: {} views, all valid", file.display(), set.views.len());
                for v in &set.views {
                    println!("  {v}");
                }
                if !detectors.defs.is_empty() {
                    let metrics: Vec<String> = detectors
                        .defs
                        .iter()
                        .map(|d| match &d.seasonal {
                            Some(v) => format!("{} (seasonal from {v}, {})", d.metric, d.timezone),
                            None => d.metric.clone(),
                        })
                        .collect();
                    println!(
                        "  {} detectors, valid: {}",
                        detectors.defs.len(),
                        metrics.join(", ")
                    );
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C still stops Braid");
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        t.cancel();
    });
    token
}

/// Makes a failure of the embedded broker's storage end the process with
/// a clear message, instead of leaving a broker that answers nothing (tansu
/// 0.6's storage thread panics when SQLite cannot write, e.g. on a full
/// disk, and every request fails after). What was acknowledged is already
/// in the database; a supervisor (or the user) starts the broker again.
fn exit_when_the_broker_storage_fails(dir: PathBuf) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let in_storage = info.location().is_some_and(|l| {
            l.file().contains("tansu-storage") || l.file().contains("tansu_storage")
        });
        if !in_storage {
            return;
        }
        // Say whether the data directory can still be written.
        let probe = dir.join(".braid-write-probe");
        let disk = match std::fs::write(&probe, [0u8; 4096]) {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                "it can still be written".to_string()
            }
            Err(e) => format!("writing there fails: {e}"),
        };
        eprintln!(
            "braid: the embedded broker's storage failed ({info}); data directory {}: {disk}. Exiting: free space if the disk is full, then start it again (what was acknowledged is kept)",
            dir.display()
        );
        std::process::exit(70);
    }));
}

async fn start_embedded(
    kafka: &KafkaArgs,
    storage: &StorageArgs,
    memory: bool,
) -> Result<EmbeddedBroker> {
    if !memory {
        exit_when_the_broker_storage_fails(storage.data_dir.clone());
    }
    let store = if memory {
        BrokerStorage::Memory
    } else {
        BrokerStorage::Dir(storage.data_dir.join("broker"))
    };
    let broker = EmbeddedBroker::start(kafka.broker_listen, store)
        .await
        .context("starting the embedded broker")?;
    ensure_topics(&broker.brokers(), kafka.partitions)
        .await
        .context("creating Braid's topics")?;
    Ok(broker)
}

async fn broker(kafka: KafkaArgs, storage: StorageArgs, memory: bool) -> Result<ExitCode> {
    if let Some(b) = &kafka.brokers {
        anyhow::bail!(
            "--brokers ({b}) names an external cluster; `braid broker` runs the embedded one: drop --brokers"
        );
    }
    let shutdown = shutdown_on_signal();
    let broker = start_embedded(&kafka, &storage, memory).await?;
    println!(
        "braid broker: listening on {} (Ctrl-C stops)",
        broker.addr()
    );
    shutdown.cancelled().await;
    broker.stop().await;
    println!("braid broker: stopped");
    Ok(ExitCode::SUCCESS)
}

fn external_brokers(kafka: &KafkaArgs, role: &str) -> Result<String> {
    kafka.brokers.clone().ok_or_else(|| {
        anyhow::anyhow!("`braid {role}` joins a running Kafka: give --brokers (or BRAID_BROKERS), e.g. the address `braid broker` prints")
    })
}

async fn ingest_alone(kafka: KafkaArgs, http: HttpArgs, ingest: IngestArgs) -> Result<ExitCode> {
    let brokers = external_brokers(&kafka, "ingest")?;
    let shutdown = shutdown_on_signal();
    println!(
        "braid ingest: writing to {brokers}, listening on http://{}",
        http.http
    );
    braid_ingest::run(ingest.config(brokers, &http)?, shutdown).await?;
    println!("braid ingest: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn speed_alone(
    kafka: KafkaArgs,
    storage: StorageArgs,
    views: ViewsArgs,
    speed: SpeedArgs,
) -> Result<ExitCode> {
    let brokers = external_brokers(&kafka, "speed")?;
    let set = load_views(&views.views)?;
    let shutdown = shutdown_on_signal();
    println!(
        "braid speed: reading {brokers}, checkpoints in {}",
        storage.checkpoints()?.location()
    );
    let mut config = speed.config(brokers, &storage, set)?;
    config.detectors = load_views_and_detectors(&views.views)?.1;
    let stats = braid_speed::run(config, shutdown).await?;
    println!(
        "braid speed: stopped after {} records, {} checkpoints",
        stats.records, stats.checkpoints
    );
    Ok(ExitCode::SUCCESS)
}

async fn archive_alone(
    kafka: KafkaArgs,
    storage: StorageArgs,
    archive: ArchiveArgs,
) -> Result<ExitCode> {
    let brokers = external_brokers(&kafka, "archive")?;
    let shutdown = shutdown_on_signal();
    let config = archive.config(brokers.clone(), &storage)?;
    println!(
        "braid archive: reading {brokers}, writing the archive in {}",
        config.archive.location()
    );
    let stats = braid_batch::run(config, shutdown).await?;
    println!(
        "braid archive: stopped after {} records in {} rolls ({} invalid skipped)",
        stats.records, stats.rolls, stats.invalid
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve_alone(
    kafka: KafkaArgs,
    storage: StorageArgs,
    views: ViewsArgs,
    http: HttpArgs,
    (access, alerts): (AccessArgs, AlertArgs),
) -> Result<ExitCode> {
    let brokers = external_brokers(&kafka, "serve")?;
    let (set, detectors) = load_views_and_detectors(&views.views)?;
    let alert_webhook = alerts.webhook()?;
    access.check(http.http)?;
    let tokens = access.load()?;
    let shutdown = shutdown_on_signal();
    println!(
        "braid serve: reading {brokers}, listening on http://{}",
        http.http
    );
    braid_serving::run(
        braid_serving::ServingConfig {
            brokers,
            layout: storage.layout()?,
            archive: storage.archive()?,
            views: set,
            http: http.http,
            openapi_extra: None,
            tokens,
            tls: http.tls(),
            detectors,
            alert_webhook,
        },
        shutdown,
    )
    .await?;
    println!("braid serve: stopped");
    Ok(ExitCode::SUCCESS)
}

fn import(config: &braid_batch::import::ImportConfig) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let progress = |done: u64, total: u64| {
        if terminal {
            eprint!(
                "\r  reading {}: {done} of {total} rows   ",
                config.file.display()
            );
        }
    };
    let report = braid_batch::import::run(config, &progress)?;
    if terminal {
        eprintln!();
    }
    for e in &report.errors {
        eprintln!("invalid: {e}");
    }
    if report.invalid > report.errors.len() as u64 {
        eprintln!(
            "invalid: ... and {} more",
            report.invalid - report.errors.len() as u64
        );
    }
    let range = report.ts_range.map_or(String::new(), |(a, b)| {
        format!(
            ", {} to {}",
            braid_core::time::format_rfc3339(a),
            braid_core::time::format_rfc3339(b)
        )
    });
    if report.invalid > 0 && !config.skip_invalid {
        eprintln!(
            "braid import: {} of {} rows are invalid: nothing imported (fix them, or --skip-invalid)",
            report.invalid, report.rows
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    match &report.id {
        Some(id) => println!(
            "braid import: {} readings from {} rows as {id}{range} ({} invalid skipped); they enter answers at the next batch run",
            report.readings, report.rows, report.invalid
        ),
        None => println!(
            "braid import: {}{} readings would be imported from {} rows{range} ({} invalid)",
            if config.dry_run { "dry run: " } else { "" },
            report.readings,
            report.rows,
            report.invalid
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn batch_run(mut config: braid_batch::recompute::RunConfig) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    config.progress = Some(braid_batch::recompute::Progress(std::sync::Arc::new(
        move |done: u64, total: u64| {
            let pct = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            if terminal {
                eprint!("\r  folding the archive: {done} of about {total} records ({pct:.0}%)   ");
            } else {
                tracing::info!(done, total, "batch run progress");
            }
        },
    )));
    match braid_batch::recompute::run(config).await {
        Ok(report) => {
            if terminal {
                eprintln!();
            }
            println!(
                "braid batch run: run {} published in {:.1} s ({} records, {}; cut {:?})",
                report.run_id,
                report.elapsed.as_secs_f64(),
                report.records,
                if report.incremental {
                    "incremental"
                } else {
                    "full"
                },
                report.cut.0
            );
            for (name, rows, readings) in &report.views {
                println!("  {name}: {rows} windows, {readings} readings");
            }
            if let Some((metrics, profiles)) = report.baselines {
                println!("  seasonal baselines: {metrics} metrics, {profiles} device profiles");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ braid_batch::BatchError::Locked { .. }) => {
            eprintln!("braid batch run: {e}");
            Ok(ExitCode::from(EXIT_LOCKED))
        }
        Err(e) => Err(e.into()),
    }
}

/// `braid up`'s in-process batch schedule: an incremental run of
/// `template` every `every`, skipped while another run (cron's, say)
/// holds the lock.
async fn batch_schedule(
    mut template: braid_batch::recompute::RunConfig,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    template.incremental = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let config = template.clone();
        // A run does blocking file work between its awaits: it gets a runtime
        // of its own, so HTTP and the speed layer keep theirs.
        let run = tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| {
                    braid_batch::BatchError::Internal(format!("starting the batch runtime: {e}"))
                })?
                .block_on(braid_batch::recompute::run(config))
        })
        .await
        .unwrap_or_else(|e| {
            Err(braid_batch::BatchError::Internal(format!(
                "the batch run panicked: {e}"
            )))
        });
        match run {
            Ok(r) => {
                tracing::info!(run = %r.run_id, records = r.records, incremental = r.incremental, "scheduled batch run published")
            }
            Err(e @ braid_batch::BatchError::Locked { .. }) => {
                tracing::info!(reason = %e, "scheduled batch run skipped")
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduled batch run failed; the previous run stays current")
            }
        }
    }
}

async fn simulate(
    target: braid_sim::send::Target,
    scenario: Option<braid_sim::Scenario>,
    replay: Option<(PathBuf, f64)>,
    sim: SimArgs,
) -> Result<ExitCode> {
    let shutdown = shutdown_on_signal();
    let sent = match (replay, scenario) {
        (Some((file, speedup)), _) => {
            println!(
                "braid simulate: replaying {} at {speedup}x into {target} (Ctrl-C stops)",
                file.display()
            );
            let config = braid_sim::replay::ReplayConfig {
                target,
                file,
                speedup,
                acked: sim.acked.clone(),
                duration: sim.duration(),
            };
            braid_sim::replay::replay(config, shutdown).await?
        }
        (None, Some(scenario)) => {
            println!(
                "braid simulate: {} {scenario:?} devices at {} readings/s into {target} (Ctrl-C stops)",
                sim.devices, sim.rate
            );
            braid_sim::run(sim.config(target, scenario), shutdown).await?
        }
        (None, None) => anyhow::bail!("give --scenario or --replay"),
    };
    println!("braid simulate: stopped after {sent} readings acknowledged");
    Ok(ExitCode::SUCCESS)
}

async fn up(
    kafka: KafkaArgs,
    storage: StorageArgs,
    views: ViewsArgs,
    http: HttpArgs,
    ingest: IngestArgs,
    (speed_args, batch_args, archive_args, alerts): (
        SpeedArgs,
        BatchScheduleArgs,
        ArchiveArgs,
        AlertArgs,
    ),
    simulate: Option<(braid_sim::Scenario, SimArgs)>,
) -> Result<ExitCode> {
    use warp::Filter;
    use warp::Reply;

    let set = load_views(&views.views)?;
    let ingest_config = ingest.config(String::new(), &http)?;
    let tls = ingest_config
        .tls
        .as_ref()
        .map(braid_ingest::tls::server_config)
        .transpose()?;
    ingest.access.check(http.http)?;
    let shutdown = shutdown_on_signal();
    let (brokers, embedded) = match &kafka.brokers {
        Some(b) => {
            ensure_topics(b, kafka.partitions)
                .await
                .with_context(|| format!("creating Braid's topics on {b}"))?;
            (b.clone(), None)
        }
        None => {
            let broker = start_embedded(&kafka, &storage, false).await?;
            (broker.brokers(), Some(broker))
        }
    };
    let detectors = load_views_and_detectors(&views.views)?.1;
    let mut speed_config = speed_args.config(brokers.clone(), &storage, set.clone())?;
    speed_config.detectors = detectors.clone();
    let speed = tokio::spawn(braid_speed::run(speed_config, shutdown.clone()));
    let archive = tokio::spawn(braid_batch::run(
        archive_args.config(brokers.clone(), &storage)?,
        shutdown.clone(),
    ));
    let mqtt_config = ingest_config.mqtt.clone();
    if let Some(m) = &mqtt_config {
        m.host_port()?;
    }
    let gateway = braid_ingest::gateway(&braid_ingest::IngestConfig {
        brokers: brokers.clone(),
        ..ingest_config
    })
    .await?;
    let mqtt = mqtt_config.map(|m| {
        println!(
            "braid up: subscribing to {} on MQTT {}",
            braid_ingest::mqtt::TOPIC_FILTER,
            m.addr
        );
        tokio::spawn(braid_ingest::mqtt::run(
            m,
            gateway.clone(),
            shutdown.clone(),
        ))
    });
    let serving = braid_serving::start(
        &braid_serving::ServingConfig {
            brokers: brokers.clone(),
            layout: storage.layout()?,
            archive: storage.archive()?,
            views: set.clone(),
            http: http.http,
            openapi_extra: serde_json::from_str(braid_ingest::gateway::OPENAPI_PATHS).ok(),
            tokens: gateway.config.tokens.clone(),
            tls: None,
            detectors: detectors.clone(),
            alert_webhook: alerts.webhook()?,
        },
        shutdown.clone(),
    )?;
    // One /metrics: the serving layer's families, then the gateway's.
    let metrics = {
        let (gateway, serving) = (gateway.clone(), serving.clone());
        warp::get().and(warp::path!("metrics")).map(move || {
            let mut text = braid_serving::metrics::render(&serving);
            text.push_str(&gateway.metrics_text());
            warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4")
                .into_response()
        })
    };
    let routes = metrics
        .or(braid_ingest::gateway::filters::mountable(gateway.clone()))
        .unify()
        .or(braid_serving::api::mountable(serving.clone()))
        .unify()
        .recover(braid_serving::api::recover)
        .unify()
        .with(braid_serving::api::observe(serving));
    let listener = tokio::net::TcpListener::bind(http.http)
        .await
        .with_context(|| format!("binding {}", http.http))?;
    let addr = listener.local_addr().unwrap_or(http.http);
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "braid up: Kafka at {brokers}; {} views from {}; data under {}",
        set.views.len(),
        views.views.display(),
        storage.data_dir.display()
    );
    println!(
        "braid up: dashboard {scheme}://{addr}/ ; write to {scheme}://{addr}/v1/readings or /v1/write, query {scheme}://{addr}/v1/views (Ctrl-C stops)"
    );
    if let Some((scenario, sim)) = simulate {
        println!(
            "braid up: simulating {} {scenario:?} devices at {} readings/s",
            sim.devices, sim.rate
        );
        let config = sim.config(braid_sim::send::Target::Kafka(brokers.clone()), scenario);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = braid_sim::run(config, stop).await {
                tracing::warn!(error = %e, "the simulator stopped");
            }
        });
    }
    if batch_args.batch_every > 0 {
        let every = std::time::Duration::from_millis(batch_args.batch_every as u64);
        println!(
            "braid up: batch runs every {}",
            braid_core::time::format_duration(batch_args.batch_every)
        );
        let mut template = storage.run_config(set.clone())?;
        template.detectors = detectors.clone();
        tokio::spawn(batch_schedule(template, every, shutdown.clone()));
    }
    let stop = shutdown.clone();
    braid_ingest::tls::serve(
        routes.map(Reply::into_response).boxed(),
        listener,
        tls,
        async move { stop.cancelled().await },
        braid_ingest::DRAIN,
    )
    .await;
    shutdown.cancel();
    if let Some(m) = mqtt {
        match m.await {
            Ok(Ok(stats)) => println!(
                "braid up: MQTT: {} messages, {} readings, {} dead-lettered",
                stats.messages, stats.readings, stats.dead_lettered
            ),
            Ok(Err(e)) => eprintln!("braid up: MQTT ingest: {e}"),
            Err(e) => eprintln!("braid up: MQTT ingest panicked: {e}"),
        }
    }
    let flushed = gateway.sink.flush(std::time::Duration::from_secs(10));
    let speed_outcome = speed.await;
    let archive_outcome = archive.await;
    if let Some(b) = embedded {
        b.stop().await;
    }
    flushed.context("flushing the ingest producer")?;
    match archive_outcome {
        Ok(Ok(stats)) => println!(
            "braid up: archived {} records in {} rolls",
            stats.records, stats.rolls
        ),
        Ok(Err(e)) => return Err(e).context("the archiver stopped"),
        Err(e) => return Err(anyhow::anyhow!("the archiver panicked: {e}")),
    }
    match speed_outcome {
        Ok(Ok(stats)) => {
            println!(
                "braid up: stopped ({} records folded, {} checkpoints)",
                stats.records, stats.checkpoints
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => Err(e).context("the speed layer stopped"),
        Err(e) => Err(anyhow::anyhow!("the speed layer panicked: {e}")),
    }
}
