//! Batch runs on a DataFusion Ballista cluster: `braid batch run --ballista
//! df://HOST:PORT`, and the scheduler and executors it runs on
//! (`braid ballista scheduler`, `braid ballista executor`).
//!
//! The plan is the local run's plan: a scan of the run's [`FoldJob`]
//! (one partition per source) under a `braid_state` aggregate grouped by
//! view, window and group. Ballista cuts it into stages at the hash
//! repartition: executors fold sources and aggregate partially, write
//! shuffle files, and the final aggregate merges the partial states, which
//! merge exactly, so the output is bit-identical to a local run.
//!
//! Braid's plan nodes cross process boundaries through [`BraidLogicalCodec`]
//! and [`BraidPhysicalCodec`], which encode the fold job and the aggregate
//! and hand everything else to Ballista's own codecs. The scheduler and the
//! executors must therefore be Braid's (`braid ballista ...`), not stock
//! Ballista binaries, and of the same build as the client: the job's
//! encoding carries the view definitions and fold states in Braid's binary
//! encoding.
//!
//! Every executor reads the sources itself: the archive must be at the
//! same URL for all of them (an `s3://` store, or a directory they share),
//! and so must the imports (under the client's data directory). Store
//! credentials come from each process's environment, never from the plan.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use super::effects::{EffectsExec, EffectsTable, FoldJob};
use super::udaf::BraidState;
use crate::BatchError;

/// The largest gRPC message any Braid Ballista process sends or takes: a
/// plan carries the sources' fold states, a shuffle batch the partial
/// states.
pub const MAX_MESSAGE: u32 = 1 << 30;

const UDAF_MAGIC: &[u8; 8] = b"BRAIDUA1";

fn encode_udaf(node: &AggregateUDF, buf: &mut Vec<u8>) -> bool {
    let Some(state) = node.inner().downcast_ref::<BraidState>() else {
        return false;
    };
    buf.extend_from_slice(UDAF_MAGIC);
    buf.extend(state.parts().iter().map(|p| p.bits()));
    true
}

fn decode_udaf(buf: &[u8]) -> Option<Result<Arc<AggregateUDF>>> {
    let bits = buf.strip_prefix(UDAF_MAGIC)?;
    let parts = bits
        .iter()
        .map(|&b| {
            braid_core::agg::Parts::from_bits(b).ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "braid_state: unknown state parts {b:#x} (is every process of the same build?)"
                ))
            })
        })
        .collect::<Result<Vec<_>>>();
    Some(parts.map(|p| Arc::new(AggregateUDF::from(BraidState::new(p)))))
}

/// The function half of both codecs (the logical and the physical traits
/// declare the same six methods): `braid_state` is Braid's, every other
/// function goes to Ballista's codec.
macro_rules! function_codec {
    () => {
        fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
            self.inner.try_decode_udf(name, buf)
        }

        fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.inner.try_encode_udf(node, buf)
        }

        fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
            decode_udaf(buf).unwrap_or_else(|| self.inner.try_decode_udaf(name, buf))
        }

        fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
            if encode_udaf(node, buf) {
                return Ok(());
            }
            self.inner.try_encode_udaf(node, buf)
        }

        fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
            self.inner.try_decode_udwf(name, buf)
        }

        fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.inner.try_encode_udwf(node, buf)
        }
    };
}

/// Braid's logical plan nodes over Ballista's codec: the fold job's table
/// and the `braid_state` aggregate.
#[derive(Debug, Default)]
pub struct BraidLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for BraidLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: arrow::datatypes::SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        if FoldJob::is_encoded(buf) {
            return Ok(Arc::new(EffectsTable {
                job: Arc::new(FoldJob::decode(buf)?),
                records: Arc::default(),
            }));
        }
        self.inner
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(t) = node.as_ref().downcast_ref::<EffectsTable>() {
            buf.extend(t.job.encode()?);
            return Ok(());
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    function_codec!();
}

/// Braid's physical plan nodes over Ballista's codec: the fold job's scan
/// and the `braid_state` aggregate.
#[derive(Debug, Default)]
pub struct BraidPhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for BraidPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if FoldJob::is_encoded(buf) {
            let [input] = inputs else {
                return Err(DataFusionError::Internal(
                    "EffectsExec has one input (its source slots)".into(),
                ));
            };
            return Ok(Arc::new(EffectsExec::with_input(
                Arc::new(FoldJob::decode(buf)?),
                input.clone(),
                Arc::default(),
            )));
        }
        self.inner.try_decode(buf, inputs, ctx, converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(e) = node.downcast_ref::<EffectsExec>() {
            buf.extend(e.job.encode()?);
            return Ok(());
        }
        self.inner.try_encode(node, buf, converter)
    }

    function_codec!();
}

fn ballista_err(what: &str) -> impl FnOnce(ballista_core::error::BallistaError) -> BatchError + '_ {
    move |e| BatchError::Internal(format!("{what}: {e}"))
}

/// A session whose queries run on the Ballista scheduler at `url`
/// (`df://HOST:PORT`), with Braid's codecs and `config`'s settings.
pub async fn context(url: &str, config: SessionConfig) -> Result<SessionContext, BatchError> {
    if !url.starts_with("df://") {
        return Err(BatchError::Usage(format!(
            "--ballista {url}: a Ballista scheduler is named df://HOST:PORT"
        )));
    }
    let config = config
        .upgrade_for_ballista()
        .with_ballista_logical_extension_codec(Arc::new(BraidLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(BraidPhysicalCodec::default()))
        .with_ballista_grpc_client_max_message_size(MAX_MESSAGE as usize)
        .with_ballista_job_name("braid batch run");
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    SessionContext::remote_with_state(url, state)
        .await
        .map_err(|e| {
            BatchError::Internal(format!(
                "connecting to the Ballista scheduler at {url}: {e}"
            ))
        })
}

/// Runs a Ballista scheduler with Braid's codecs on `bind` until the
/// process ends; `ready` gets the address it listens on (the port chosen
/// when `bind`'s is 0). `external_host` is the name executors and clients
/// reach it by.
pub async fn run_scheduler(
    bind: SocketAddr,
    external_host: Option<String>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), BatchError> {
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| {
        BatchError::Internal(format!("binding the Ballista scheduler to {bind}: {e}"))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| BatchError::Internal(format!("the scheduler's address: {e}")))?;
    let config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        external_host: external_host.unwrap_or_else(|| addr.ip().to_string()),
        override_logical_codec: Some(Arc::new(BraidLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(BraidPhysicalCodec::default())),
        grpc_server_max_decoding_message_size: MAX_MESSAGE,
        grpc_server_max_encoding_message_size: MAX_MESSAGE,
        grpc_client_max_message_size: MAX_MESSAGE,
        ..SchedulerConfig::default()
    };
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_err("starting the Ballista scheduler"))?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(ballista_err("starting the Ballista scheduler"))?;
    ready(addr);
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(ballista_err("the Ballista scheduler"))
}

/// How a Braid Ballista executor runs.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The scheduler, `HOST:PORT`.
    pub scheduler: String,
    /// The address the executor binds.
    pub bind_host: String,
    /// The name the scheduler and other executors reach it by (the bind
    /// address when `None`).
    pub external_host: Option<String>,
    /// Its Arrow Flight port (shuffle data).
    pub port: u16,
    /// Its gRPC port (tasks).
    pub grpc_port: u16,
    /// Tasks it runs at once.
    pub slots: usize,
    /// Where it keeps shuffle files (a temporary directory when `None`).
    pub work_dir: Option<String>,
}

/// Runs a Ballista executor with Braid's codecs until the process ends.
pub async fn run_executor(config: ExecutorConfig) -> Result<(), BatchError> {
    let (host, port) = config
        .scheduler
        .trim_start_matches("df://")
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            BatchError::Usage(format!(
                "--scheduler {}: expected HOST:PORT",
                config.scheduler
            ))
        })?;
    let process = ExecutorProcessConfig {
        bind_host: config.bind_host.clone(),
        external_host: config.external_host.or(Some(config.bind_host)),
        port: config.port,
        grpc_port: config.grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        scheduler_connect_timeout_seconds: 30,
        vcores: config.slots.max(1),
        work_dir: config.work_dir,
        print_thread_info: false,
        grpc_max_decoding_message_size: MAX_MESSAGE,
        grpc_max_encoding_message_size: MAX_MESSAGE,
        executor_heartbeat_interval_seconds: 5,
        override_logical_codec: Some(Arc::new(BraidLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(BraidPhysicalCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(process))
        .await
        .map_err(ballista_err("the Ballista executor"))
}
