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
    /// Data directory: archive, views, checkpoints, imports, broker files
    /// (the first three can live elsewhere: see the URLs below).
    #[arg(long, env = "BRAID_DATA_DIR", default_value = "./data/run")]
    pub data_dir: PathBuf,

    /// Where the archive lives: a directory, file:///DIR, or
    /// s3://BUCKET/PREFIX (credentials, region and endpoint from the usual
    /// AWS_* variables; AWS_ALLOW_HTTP=true for an endpoint without TLS).
    /// Default: the data directory.
    #[arg(long, env = "BRAID_ARCHIVE_URL")]
    pub archive_url: Option<String>,

    /// Where the speed layer keeps its checkpoints and sealed epoch
    /// boundaries, and batch runs read those boundaries: a URL as for
    /// --archive-url. Speed workers on several machines need one they all
    /// reach, so a partition can move between them. Default: the data
    /// directory.
    #[arg(long, env = "BRAID_CHECKPOINT_URL")]
    pub checkpoint_url: Option<String>,

    /// Where batch runs publish views and baselines, and serving replicas
    /// and speed workers read them: a URL as for --archive-url. Default:
    /// the data directory. The batch lock and imports stay in the data
    /// directory.
    #[arg(long, env = "BRAID_VIEWS_URL")]
    pub views_url: Option<String>,
}

impl StorageArgs {
    fn store(&self, url: Option<&String>) -> anyhow::Result<braid_store::Blobs> {
        match url {
            None => Ok(braid_store::Blobs::local(&self.data_dir)),
            Some(url) => Ok(braid_store::Blobs::open(url)?),
        }
    }

    /// The archive store.
    pub fn archive(&self) -> anyhow::Result<braid_store::Blobs> {
        self.store(self.archive_url.as_ref())
    }

    /// The checkpoint store.
    pub fn checkpoints(&self) -> anyhow::Result<braid_store::Blobs> {
        self.store(self.checkpoint_url.as_ref())
    }

    /// The store of published views and baselines.
    pub fn published(&self) -> anyhow::Result<braid_store::Blobs> {
        self.store(self.views_url.as_ref())
    }

    /// The data directory's layout, publishing where --views-url says.
    pub fn layout(&self) -> anyhow::Result<braid_store::Layout> {
        Ok(braid_store::Layout::new(&self.data_dir).publish_in(&self.published()?))
    }

    /// A batch run of `views` over this storage (the other settings at
    /// their defaults).
    pub fn run_config(
        &self,
        views: braid_core::ViewSet,
    ) -> anyhow::Result<braid_batch::recompute::RunConfig> {
        let mut c = braid_batch::recompute::RunConfig::new(self.data_dir.clone(), views);
        c.archive = self.archive()?;
        c.checkpoints = self.checkpoints()?;
        c.published = self.published()?;
        Ok(c)
    }
}

/// Which views.
#[derive(Args, Clone, Debug)]
pub struct ViewsArgs {
    /// View definitions.
    #[arg(long, env = "BRAID_VIEWS", default_value = "data/views.toml")]
    pub views: PathBuf,
}

/// Where alerts go besides `GET /v1/alerts`.
#[derive(Args, Clone, Debug)]
pub struct AlertArgs {
    /// POST every alert as JSON to this URL (http or https; at least once,
    /// retried 5 times with backoff; one sender per consumer group
    /// `braid-alert-webhook`, whatever the number of replicas).
    #[arg(long, env = "BRAID_ALERT_WEBHOOK", value_name = "URL")]
    pub alert_webhook: Option<String>,
}

impl AlertArgs {
    /// The URL, checked.
    pub fn webhook(&self) -> anyhow::Result<Option<String>> {
        match &self.alert_webhook {
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                anyhow::bail!("--alert-webhook {u}: give an http:// or https:// URL")
            }
            u => Ok(u.clone()),
        }
    }
}

/// Where the HTTP API and dashboard listen.
#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// Address of the HTTP API and dashboard.
    #[arg(long, env = "BRAID_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,

    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
    /// --tls-key.
    #[arg(long, env = "BRAID_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "BRAID_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl HttpArgs {
    /// The TLS files, when both are given.
    pub fn tls(&self) -> Option<braid_ingest::tls::TlsFiles> {
        Some(braid_ingest::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }
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

    /// Body bytes all write requests in flight may hold together; beyond,
    /// writes get 503 with Retry-After before their body is read.
    #[arg(long, env = "BRAID_MAX_IN_FLIGHT_BYTES", default_value_t = 64 << 20)]
    pub max_in_flight_bytes: usize,

    /// How far ahead of the clock an event time may be (e.g. 1h).
    #[arg(long, env = "BRAID_MAX_FUTURE", default_value = "1h", value_parser = parse_duration_ms)]
    pub max_future: i64,

    /// How long a write waits for Kafka's acknowledgement before it answers
    /// 503 with Retry-After (e.g. 5s).
    #[arg(long, env = "BRAID_ACK_TIMEOUT", default_value = "5s", value_parser = parse_duration_ms)]
    pub ack_timeout: i64,

    /// Also subscribe (QoS 1) to `braid/<device>/readings` on this MQTT
    /// broker (HOST:PORT): payloads as for POST /v1/readings, refused
    /// records to braid.readings.dlq, acknowledged to the broker only once
    /// Kafka has them.
    #[arg(long, env = "BRAID_MQTT")]
    pub mqtt: Option<String>,

    /// The MQTT client id; the broker keeps the session (messages not yet
    /// acknowledged) under it, so give each gateway its own.
    #[arg(long, env = "BRAID_MQTT_CLIENT_ID", default_value = "braid-ingest")]
    pub mqtt_client_id: String,

    /// Who may write (and read, where the routes are served together).
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Who may write and read.
#[derive(Args, Clone, Debug)]
pub struct AccessArgs {
    /// Accept requests without tokens on an address beyond loopback.
    #[arg(long, env = "BRAID_INSECURE")]
    pub insecure: bool,

    /// Tokens (TOML, secrets stored hashed; `braid token new` adds one,
    /// `braid token revoke` revokes one; changes apply within a second):
    /// writes then need `Authorization: Bearer <token>` with `write`
    /// access for the readings' devices, and view queries one with `read`
    /// access for the devices asked for.
    #[arg(long, env = "BRAID_TOKENS")]
    pub tokens: Option<std::path::PathBuf>,
}

impl AccessArgs {
    /// The tokens file read, if one is given.
    pub fn load(
        &self,
    ) -> Result<Option<std::sync::Arc<braid_ingest::auth::Tokens>>, braid_ingest::auth::TokensError>
    {
        self.tokens
            .as_deref()
            .map(|path| braid_ingest::auth::Tokens::load(path).map(std::sync::Arc::new))
            .transpose()
    }

    /// Refuses to listen on `addr` beyond loopback without tokens, unless
    /// told `--insecure`.
    pub fn check(&self, addr: SocketAddr) -> Result<(), braid_ingest::IngestRunError> {
        braid_ingest::check_exposure(addr, self.insecure, self.tokens.is_some())
    }
}

/// Parses a token's access: `write` or `read`.
pub fn parse_access(s: &str) -> Result<braid_ingest::auth::Access, String> {
    match s {
        "write" => Ok(braid_ingest::auth::Access::Write),
        "read" => Ok(braid_ingest::auth::Access::Read),
        other => Err(format!("`{other}` is not write or read")),
    }
}

/// Parses a schedule's period: a duration, or `0` / `off` for none.
pub fn parse_every(s: &str) -> Result<i64, String> {
    match s.trim() {
        "0" | "off" => Ok(0),
        other => parse_duration_ms(other),
    }
}

/// Parses a duration such as `500ms`, `10s` or `2m` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    braid_core::time::parse_duration(s)
}

impl IngestArgs {
    /// The ingest configuration for `brokers` and `http`, with the tokens
    /// file read.
    pub fn config(
        &self,
        brokers: String,
        http: &HttpArgs,
    ) -> Result<braid_ingest::IngestConfig, braid_ingest::auth::TokensError> {
        let tokens = self.access.load()?;
        Ok(braid_ingest::IngestConfig {
            brokers,
            http: http.http,
            gateway: braid_ingest::GatewayConfig {
                max_body_bytes: self.max_body_bytes,
                max_inflated_bytes: self.max_inflated_bytes,
                limits: braid_core::Limits {
                    max_future_ms: self.max_future,
                },
                tokens,
                max_in_flight_bytes: self.max_in_flight_bytes,
            },
            ack_timeout: std::time::Duration::from_millis(self.ack_timeout.max(1) as u64),
            insecure: self.access.insecure,
            mqtt: self
                .mqtt
                .clone()
                .map(|addr| braid_ingest::mqtt::MqttConfig {
                    addr,
                    client_id: self.mqtt_client_id.clone(),
                }),
            tls: http.tls(),
        })
    }
}

/// A simulated fleet.
#[derive(Args, Clone, Debug)]
pub struct SimArgs {
    /// Devices in the fleet.
    #[arg(long, env = "BRAID_SIM_DEVICES", default_value_t = 50)]
    pub devices: usize,

    /// Readings per second over the whole fleet.
    #[arg(long, env = "BRAID_SIM_RATE", default_value_t = 100.0)]
    pub rate: f64,

    /// Random seed: the same seed gives the same fleet.
    #[arg(long, env = "BRAID_SIM_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Share of readings stamped up to a minute late (out of order).
    #[arg(long, default_value_t = 0.05)]
    pub out_of_order: f64,

    /// Share of readings 2 to 50 minutes late (outdated).
    #[arg(long, default_value_t = 0.01)]
    pub outdated: f64,

    /// Share of readings 2 to 24 hours late (historical).
    #[arg(long, default_value_t = 0.002)]
    pub historical: f64,

    /// Share of readings sent twice.
    #[arg(long, default_value_t = 0.01)]
    pub duplicate: f64,

    /// Share of readings with an injected spike.
    #[arg(long, default_value_t = 0.001)]
    pub anomaly: f64,

    /// Append every acknowledged reading to this file (NDJSON), for
    /// `braid verify --acked`.
    #[arg(long)]
    pub acked: Option<PathBuf>,

    /// Stop the fleet after this long (e.g. 60s; default: at Ctrl-C).
    #[arg(long, value_parser = parse_duration_ms)]
    pub duration: Option<i64>,
}

impl SimArgs {
    /// How long to run, if bounded.
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.duration
            .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64))
    }

    /// The simulator configuration for `target` and `scenario`.
    pub fn config(
        &self,
        target: braid_sim::send::Target,
        scenario: braid_sim::Scenario,
    ) -> braid_sim::SimConfig {
        braid_sim::SimConfig {
            target,
            scenario,
            devices: self.devices,
            rate: self.rate,
            shares: braid_sim::Shares {
                out_of_order: self.out_of_order,
                outdated: self.outdated,
                historical: self.historical,
                duplicate: self.duplicate,
                anomaly: self.anomaly,
            },
            seed: self.seed,
            acked: self.acked.clone(),
            duration: self.duration(),
        }
    }
}

/// Parses a scenario name.
pub fn parse_scenario(s: &str) -> Result<braid_sim::Scenario, String> {
    braid_sim::Scenario::parse(s)
        .ok_or_else(|| format!("`{s}` is not a scenario: use parking, home or farm"))
}

/// Timing of the speed layer.
#[derive(Args, Clone, Debug)]
pub struct SpeedArgs {
    /// How often epochs are sealed and checkpoints written (e.g. 10s).
    #[arg(long, env = "BRAID_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = parse_duration_ms)]
    pub checkpoint_interval: i64,

    /// How often changed states are published to braid.speed (e.g. 100ms).
    #[arg(long, env = "BRAID_PUBLISH_INTERVAL", default_value = "100ms", value_parser = parse_duration_ms)]
    pub publish_interval: i64,
}

impl SpeedArgs {
    /// The speed configuration for `brokers`, `storage` and `views`.
    pub fn config(
        &self,
        brokers: String,
        storage: &StorageArgs,
        views: braid_core::ViewSet,
    ) -> anyhow::Result<braid_speed::SpeedConfig> {
        let mut c = braid_speed::SpeedConfig::new(brokers, storage.data_dir.clone(), views);
        c.checkpoints = storage.checkpoints()?;
        c.published = storage.published()?;
        c.checkpoint_interval =
            std::time::Duration::from_millis(self.checkpoint_interval.max(1) as u64);
        c.publish_interval = std::time::Duration::from_millis(self.publish_interval.max(1) as u64);
        Ok(c)
    }
}

/// The batch schedule inside `braid up`.
#[derive(Args, Clone, Debug)]
pub struct BatchScheduleArgs {
    /// How often `braid up` runs an incremental batch run (e.g. 2m); 0
    /// turns the schedule off (run `braid batch run` from cron instead).
    #[arg(long, env = "BRAID_BATCH_EVERY", default_value = "5m", value_parser = parse_every)]
    pub batch_every: i64,
}

/// How the archiver rolls files.
#[derive(Args, Clone, Debug)]
pub struct ArchiveArgs {
    /// A partition's buffer is written out once its oldest record is this
    /// old (e.g. 60s): the archive, and so a batch run, lags the log by
    /// about this much.
    #[arg(long, env = "BRAID_ROLL_AGE", default_value = "60s", value_parser = parse_duration_ms)]
    pub roll_age: i64,

    /// ... or once it holds about this many bytes.
    #[arg(long, env = "BRAID_ROLL_BYTES", default_value_t = 128 << 20)]
    pub roll_bytes: usize,
}

impl ArchiveArgs {
    /// The archiver configuration for `brokers` and `storage`.
    pub fn config(
        &self,
        brokers: String,
        storage: &StorageArgs,
    ) -> anyhow::Result<braid_batch::ArchiveConfig> {
        let mut c = braid_batch::ArchiveConfig::new(brokers, storage.data_dir.clone());
        c.archive = storage.archive()?;
        c.roll_age = std::time::Duration::from_millis(self.roll_age.max(1) as u64);
        c.roll_bytes = self.roll_bytes.max(1);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_schedule_of_zero_or_off_is_none() {
        assert_eq!(super::parse_every("0"), Ok(0));
        assert_eq!(super::parse_every("off"), Ok(0));
        assert_eq!(super::parse_every("2m"), Ok(120_000));
        assert!(super::parse_every("2").is_err());
    }
}
