//! `braid broker` as a process: readings written to it survive a restart
//! of the process (the file-backed default), killed with SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use braid_core::codec::{decode_message, encode_message};
use braid_kafka::{Topics, consumer_config, producer_config};
use braid_testkit::fixtures::fleet;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start(data_dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["broker", "--partitions", "2"])
        .arg("--broker-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("braid broker starts");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "broker did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Topics are created right after the port opens.
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let t = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_survive_a_broker_process_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let child = start(dir.path(), port);
    let readings = fleet(10, 50, 1_700_000_000_000, 1000);
    {
        let producer: FutureProducer = producer_config(&brokers).create().unwrap();
        for chunk in readings.chunks(25) {
            let payload = encode_message(chunk);
            producer
                .send(
                    FutureRecord::to(Topics::READINGS)
                        .key(&chunk[0].device_id)
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("acknowledged");
        }
    }
    terminate(child);
    assert!(dir.path().join("broker/tansu.db").exists());

    let child = start(dir.path(), port);
    let consumer: StreamConsumer = consumer_config(&brokers, "cli-restart").create().unwrap();
    consumer.subscribe(&[Topics::READINGS]).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let t = Instant::now();
    while seen.len() < readings.len() && t.elapsed() < Duration::from_secs(60) {
        if let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            for r in decode_message(msg.payload().unwrap()).unwrap() {
                let r = r.unwrap();
                assert!(seen.insert((r.device_id, r.seq)), "delivered twice");
            }
        }
    }
    terminate(child);
    assert_eq!(
        seen.len(),
        readings.len(),
        "readings lost across the restart"
    );
}
