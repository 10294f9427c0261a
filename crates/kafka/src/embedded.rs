//! The embedded Kafka-protocol broker: tansu, in-process.
//!
//! `braid up` and `braid broker` run it file-backed (tansu's SQLite engine
//! under `<data dir>/broker/`), tests in memory on an ephemeral port. Clients
//! reach it through rdkafka like any Kafka cluster; nothing in Braid talks to
//! it any other way.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::marker::PhantomData;

use tansu_broker::broker::Builder;
use tokio::sync::oneshot;
use url::Url;

use crate::config::KafkaError;

/// Where the broker keeps its data.
#[derive(Clone, Debug)]
pub enum BrokerStorage {
    /// In memory: gone when the broker stops (tests).
    Memory,
    /// tansu's SQLite engine in this directory (created if missing).
    Dir(PathBuf),
}

/// A running embedded broker. Dropping it stops the broker.
///
/// The broker runs on a runtime of its own, on its own threads, so that
/// stopping it ends every task it spawned and releases its files, as a
/// process exit would.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a broker listening on `listen` (port 0 picks a free port).
    /// Returns once it accepts connections.
    pub async fn start(listen: SocketAddr, storage: BrokerStorage) -> Result<Self, KafkaError> {
        let addr = if listen.port() == 0 {
            // tansu binds what it is told and advertises the same address, so
            // pick a free port first.
            let probe = TcpListener::bind(listen)
                .map_err(|e| KafkaError::Broker(format!("binding {listen}: {e}")))?;
            probe
                .local_addr()
                .map_err(|e| KafkaError::Broker(e.to_string()))?
        } else {
            listen
        };
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Err(KafkaError::Broker(format!(
                "{addr} is already in use: stop what listens there, or give --broker-listen another address"
            )));
        }
        let storage_url = match &storage {
            BrokerStorage::Memory => url("memory://tansu/")?,
            BrokerStorage::Dir(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| KafkaError::Broker(format!("creating {}: {e}", dir.display())))?;
                sqlite_url(&dir.join("tansu.db"))?
            }
        };
        let listener = url(&format!("tcp://{addr}"))?;
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("braid-broker".into())
            .spawn(move || run_broker(addr, listener, storage_url, ready_tx, stop_rx))
            .map_err(|e| KafkaError::Broker(format!("spawning the broker thread: {e}")))?;
        let mut broker = Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.await {
            Ok(Ok(())) => {
                tracing::info!(%addr, ?storage, "embedded broker listening");
                Ok(broker)
            }
            Ok(Err(e)) => {
                broker.stop.take();
                Err(KafkaError::Broker(e))
            }
            Err(_) => Err(KafkaError::Broker(
                "the broker thread ended while starting".into(),
            )),
        }
    }

    /// The address clients bootstrap from.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bootstrap list for rdkafka.
    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the broker and waits until its tasks ended and its files and
    /// port are released.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The broker thread: its own runtime, the broker, and a wait for the stop
/// signal; dropping the runtime ends every task tansu spawned.
fn run_broker(
    addr: SocketAddr,
    listener: Url,
    storage_url: Url,
    ready: oneshot::Sender<Result<(), String>>,
    stop: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tansu")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("building the broker runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let built = Builder::<
            PhantomData<i32>,
            PhantomData<String>,
            PhantomData<uuid::Uuid>,
            PhantomData<Url>,
            PhantomData<Url>,
            PhantomData<Url>,
        >::default()
        .node_id(tansu_broker::NODE_ID)
        .cluster_id("braid")
        .incarnation_id(uuid::Uuid::new_v4())
        .advertised_listener(listener.clone())
        .storage(storage_url)
        .listener(listener)
        .silent(true)
        .build()
        .await;
        let mut broker = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = ready.send(Err(format!("building the broker: {e:?}")));
                return;
            }
        };
        let mut serve = tokio::spawn(async move {
            if let Err(e) = broker.serve(tokio::time::Instant::now()).await {
                tracing::error!(error = ?e, "embedded broker stopped");
            }
        });
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let _ = ready.send(Ok(()));
                break;
            }
            if serve.is_finished() || started.elapsed() > Duration::from_secs(15) {
                let _ = ready.send(Err(format!("the broker did not start listening on {addr}")));
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::select! {
            _ = stop => serve.abort(),
            _ = &mut serve => {}
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
}

fn url(s: &str) -> Result<Url, KafkaError> {
    Url::parse(s).map_err(|e| KafkaError::Broker(format!("bad url {s}: {e}")))
}

/// tansu resolves a `sqlite://` path against the working directory after
/// dropping one leading `/`, so an absolute path needs a second one.
fn sqlite_url(path: &Path) -> Result<Url, KafkaError> {
    let abs = std::path::absolute(path)
        .map_err(|e| KafkaError::Broker(format!("{}: {e}", path.display())))?;
    url(&format!("sqlite:///{}", abs.display()))
}
