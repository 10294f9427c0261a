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

/// Limits of the ingest gateway.
#[derive(Args, Clone, Debug)]
pub struct IngestArgs {
    /// Largest request body read, in bytes (413 beyond).
    #[arg(long, env = "BRAID_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Largest inflated gzip body, in bytes (413 beyond).
    #[arg(long, env = "BRAID_MAX_INFLATED_BYTES", default_value_t = 16 << 20)]
    pub max_inflated_bytes: usize,

    /// How far ahead of the clock an event time may be (e.g. 1h).
    #[arg(long, env = "BRAID_MAX_FUTURE", default_value = "1h", value_parser = parse_duration_ms)]
    pub max_future: i64,

    /// How long a write waits for Kafka's acknowledgement before it answers
    /// 503 with Retry-After (e.g. 5s).
    #[arg(long, env = "BRAID_ACK_TIMEOUT", default_value = "5s", value_parser = parse_duration_ms)]
    pub ack_timeout: i64,

    /// Accept unauthenticated writes on an address beyond loopback.
    #[arg(long, env = "BRAID_INSECURE")]
    pub insecure: bool,
}

fn parse_duration_ms(s: &str) -> Result<i64, String> {
    braid_core::time::parse_duration(s)
}

impl IngestArgs {
    /// The ingest configuration for `brokers` and `http`.
    pub fn config(&self, brokers: String, http: SocketAddr) -> braid_ingest::IngestConfig {
        braid_ingest::IngestConfig {
            brokers,
            http,
            gateway: braid_ingest::GatewayConfig {
                max_body_bytes: self.max_body_bytes,
                max_inflated_bytes: self.max_inflated_bytes,
                limits: braid_core::Limits {
                    max_future_ms: self.max_future,
                },
            },
            ack_timeout: std::time::Duration::from_millis(self.ack_timeout.max(1) as u64),
            insecure: self.insecure,
        }
    }
}
