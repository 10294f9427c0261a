//! Argument groups shared by every role, each flag with an environment twin
//! (`BRAID_...`), flattened into the subcommands that need them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Where Kafka is.
#[derive(Args, Clone, Debug)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (comma-separated). Absent: Braid runs its
    /// embedded broker.
    #[arg(long, env = "BRAID_BROKERS")]
    pub brokers: Option<String>,

    /// Where the embedded broker listens.
    #[arg(long, env = "BRAID_BROKER_LISTEN", default_value = "127.0.0.1:9092")]
    pub broker_listen: SocketAddr,

    /// Partitions of braid.readings and braid.speed when Braid creates them.
    #[arg(long, env = "BRAID_PARTITIONS", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub partitions: i32,
}

/// Where data lives.
#[derive(Args, Clone, Debug)]
pub struct StorageArgs {
    /// Data directory: archive, views, checkpoints, broker files.
    #[arg(long, env = "BRAID_DATA_DIR", default_value = "./data/run")]
    pub data_dir: PathBuf,
}

/// Which views.
#[derive(Args, Clone, Debug)]
pub struct ViewsArgs {
    /// View definitions.
    #[arg(long, env = "BRAID_VIEWS", default_value = "data/views.toml")]
    pub views: PathBuf,
}

/// Where the HTTP API and dashboard listen.
#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// Address of the HTTP API and dashboard.
    #[arg(long, env = "BRAID_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
}
