//! A real MQTT broker for tests: Debian's `mosquitto` as a process on a
//! free loopback port, anonymous, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running mosquitto.
pub struct Mosquitto {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("mosquitto"))
}

impl Mosquitto {
    /// Starts mosquitto and waits until it listens; panics saying what to
    /// install when it is missing.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("config");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting mosquitto ({e}): install Debian's `mosquitto` package (.ci/run does)"
                )
            });
        let addr = format!("127.0.0.1:{port}");
        let t = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "mosquitto never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Mosquitto {
    /// Publishes each (topic, payload) with QoS 1 as a device would, and
    /// waits until the broker acknowledged every one.
    pub async fn publish(&self, messages: &[(String, String)]) {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let (host, port) = self.addr.split_once(':').expect("host:port");
        let id = format!(
            "device-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mut options = MqttOptions::new(id, host, port.parse().expect("port"));
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(options, messages.len().max(1) + 8);
        for (topic, payload) in messages {
            client
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    payload.clone().into_bytes(),
                )
                .await
                .expect("queue a publish");
        }
        let mut acked = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked < messages.len() {
            assert!(
                Instant::now() < deadline,
                "the MQTT broker acknowledged {acked} of {}",
                messages.len()
            );
            if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
                tokio::time::timeout(Duration::from_secs(1), events.poll()).await
            {
                acked += 1;
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
