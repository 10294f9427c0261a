//! Serving the HTTP roles, in the clear or with TLS (rustls) when given a
//! certificate: `--tls-cert FILE --tls-key FILE` (PEM) on `braid ingest`,
//! `braid serve` and `braid up`. warp 0.4 has no TLS of its own, so with
//! TLS the routes run as a service on hyper-util's server over
//! tokio-rustls streams, HTTP/1.1 and HTTP/2 (ALPN).
//!
//! Either way the server stops the same: at `shutdown` it accepts no new
//! connection, lets the requests in flight finish, and gives up on them
//! after the drain limit.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use warp::filters::BoxedFilter;

/// A certificate chain and its key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// The server configuration for `files`, with the ring provider and ALPN
/// for HTTP/2 and HTTP/1.1.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let bad = |path: &PathBuf, reason: String| TlsError::File {
        path: path.clone(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(&files.cert, "no CERTIFICATE in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad(&files.key, format!("no private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves `routes` on `listener` until `shutdown` resolves, with TLS when
/// `tls` is given, then drains for at most `drain` (saying so when requests
/// were still in flight then). Whether every request finished in time.
pub async fn serve(
    routes: BoxedFilter<(warp::reply::Response,)>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> bool {
    let drained = serve_until(routes, listener, tls, shutdown, drain).await;
    if !drained {
        tracing::warn!(
            "requests still in flight {drain:?} after shutdown began: stopped without them (not acknowledged)"
        );
    }
    drained
}

async fn serve_until(
    routes: BoxedFilter<(warp::reply::Response,)>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> bool {
    let Some(tls) = tls else {
        let (begun_tx, begun) = tokio::sync::oneshot::channel::<()>();
        let server = warp::serve(routes)
            .incoming(listener)
            .graceful(async move {
                shutdown.await;
                let _ = begun_tx.send(());
            })
            .run();
        tokio::pin!(server);
        return tokio::select! {
            () = &mut server => true,
            () = async { let _ = begun.await; tokio::time::sleep(drain).await } => false,
        };
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let service = warp::service(routes);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, service, watcher) = (acceptor.clone(), service.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_ok()
}
