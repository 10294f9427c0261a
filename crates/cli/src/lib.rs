//! The `braid` command: every role of Braid behind one binary.
//!
//! Each subcommand parses its flags (shared groups in [`args`]), loads what
//! it needs and calls a library: the layers' `run(config, shutdown)`, the
//! Kafka crate's embedded broker, the core's view parser. Nothing here
//! decides anything about data; errors are reported once, at the top, with
//! their chain.

pub mod args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use braid_core::ViewSet;
use braid_kafka::{BrokerStorage, EmbeddedBroker, ensure_topics};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::args::{HttpArgs, KafkaArgs, StorageArgs, ViewsArgs};

/// Braid: IoT readings into live and historical answers, counted exactly
/// once, with every window labelled by source, state and completeness.
#[derive(Parser, Debug)]
#[command(name = "braid", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run everything in one process: the embedded broker (unless --brokers)
    /// and every role built so far.
    Up {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        views: ViewsArgs,
        #[command(flatten)]
        http: HttpArgs,
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
}

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
        } => runtime()?.block_on(up(kafka, storage, views, http)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Reads and parses a views file, naming the file in any error.
pub fn load_views(path: &Path) -> Result<ViewSet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ViewSet::parse(&text).with_context(|| format!("{}", path.display()))
}

fn views_check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match load_views(file) {
            Ok(set) => {
                println!("{}: {} views, all valid", file.display(), set.views.len());
                for v in &set.views {
                    println!("  {v}");
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

async fn start_embedded(
    kafka: &KafkaArgs,
    storage: &StorageArgs,
    memory: bool,
) -> Result<EmbeddedBroker> {
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

async fn up(
    kafka: KafkaArgs,
    storage: StorageArgs,
    views: ViewsArgs,
    http: HttpArgs,
) -> Result<ExitCode> {
    let set = load_views(&views.views)?;
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
    println!(
        "braid up: Kafka at {brokers}, {} views from {}",
        set.views.len(),
        views.views.display()
    );
    println!(
        "braid up: ingest, speed, batch and serving are not built yet; nothing listens on {} (Ctrl-C stops)",
        http.http
    );
    shutdown.cancelled().await;
    if let Some(b) = embedded {
        b.stop().await;
    }
    println!("braid up: stopped");
    Ok(ExitCode::SUCCESS)
}
