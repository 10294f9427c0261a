//! HTTPS: the gateway's routes over TLS (rustls through hyper-util) with a
//! self-signed certificate from `tests/fixtures`: a write is acknowledged
//! and lands in the topic, plain HTTP on the TLS port gets no answer, a
//! bad key names its file, and shutdown drains.

use std::path::PathBuf;
use std::time::Duration;

use braid_ingest::gateway::filters::routes;
use braid_ingest::tls::{TlsFiles, serve, server_config};
use braid_testkit::{init_tracing, logs::read_log, memory_broker};
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_https_are_acknowledged() {
    init_tracing();
    let broker = memory_broker().await;
    let gw = crate::default_gateway(&broker.brokers()).await;
    let files = TlsFiles {
        cert: fixture("tls-cert.pem"),
        key: fixture("tls-key.pem"),
    };
    let config = server_config(&files).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(serve(
        routes(gw),
        listener,
        Some(config),
        async move { s.cancelled().await },
        Duration::from_secs(10),
    ));

    let cert = reqwest::Certificate::from_pem(&std::fs::read(&files.cert).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .unwrap();
    let now = braid_ingest::system_clock();
    let r = https
        .post(format!("https://localhost:{port}/v1/readings"))
        .json(&serde_json::json!([{"device_id": "tls-1", "metric": "m", "ts": now, "value": 1.0, "seq": 1}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let ready = https
        .get(format!("https://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // Plain HTTP on the TLS port: no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );
    // A client that does not trust the certificate is refused.
    assert!(
        reqwest::Client::new()
            .get(format!("https://localhost:{port}/readyz"))
            .send()
            .await
            .is_err()
    );
    stop.cancel();
    assert!(server.await.unwrap(), "drained in time");
    let log = read_log(&broker.brokers());
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].reading.device_id, "tls-1");
}

#[test]
fn a_bad_key_or_certificate_names_its_file() {
    let e = server_config(&TlsFiles {
        cert: fixture("tls-cert.pem"),
        key: fixture("README.md"),
    })
    .unwrap_err();
    assert!(e.to_string().contains("README.md"), "{e}");
    let e = server_config(&TlsFiles {
        cert: fixture("missing.pem"),
        key: fixture("tls-key.pem"),
    })
    .unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
}
