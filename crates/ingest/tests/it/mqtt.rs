//! MQTT ingest against a real broker (mosquitto) and the embedded Kafka
//! broker: what devices publish with QoS 1 lands in `braid.readings`,
//! refused records in `braid.readings.dlq` with their reason, and what is
//! published while the gateway is away arrives once it is back (the
//! broker's persistent session holds it until the gateway acknowledges).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use braid_ingest::mqtt::{MqttConfig, run};
use braid_kafka::Topics;
use braid_kafka::drain::drain_topic;
use braid_testkit::mosquitto::Mosquitto;
use braid_testkit::{init_tracing, logs::read_log, memory_broker};
use rdkafka::Message;
use rdkafka::message::Headers;
use tokio_util::sync::CancellationToken;

fn now() -> i64 {
    braid_ingest::system_clock()
}

fn reading(device: &str, seq: u64) -> String {
    format!(
        r#"{{"device_id":"{device}","metric":"occupancy","ts":{},"value":{seq},"seq":{seq}}}"#,
        now() - 1000
    )
}

/// (device, seq) of every record in braid.readings.
fn in_log(brokers: &str) -> Vec<(String, u64)> {
    read_log(brokers)
        .into_iter()
        .map(|r| (r.reading.device_id, r.reading.seq.unwrap_or(0)))
        .collect()
}

fn dead_letters(brokers: &str) -> Vec<String> {
    let mut out = Vec::new();
    drain_topic(
        brokers,
        Topics::READINGS_DLQ,
        Duration::from_millis(1500),
        Duration::from_secs(30),
        |m| {
            let reason = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "reason"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
                .unwrap_or_default();
            out.push(reason);
        },
    )
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_readings_land_once_and_refusals_in_the_dlq() {
    init_tracing();
    let mqtt = Mosquitto::start();
    let broker = memory_broker().await;
    let brokers = broker.brokers();
    let gw = crate::default_gateway(&brokers).await;
    let config = MqttConfig {
        addr: mqtt.addr.clone(),
        client_id: "braid-test".into(),
    };
    let stop = CancellationToken::new();
    let first = tokio::spawn(run(config.clone(), gw.clone(), stop.clone()));
    // Wait for the subscription: a probe message comes through.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        mqtt.publish(&[("braid/probe/readings".into(), reading("probe", 1))])
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if gw
            .metrics_text()
            .lines()
            .any(|l| l.starts_with("braid_ingest_readings_accepted_total ") && !l.ends_with(" 0"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "MQTT ingest never subscribed");
    }
    mqtt.publish(&[
        (
            "braid/d1/readings".into(),
            format!(
                "[{},{},{}]",
                reading("d1", 1),
                reading("d1", 2),
                reading("d1", 3)
            ),
        ),
        (
            "braid/d2/readings".into(),
            format!("{}\n{}\n", reading("d2", 1), reading("d2", 2)),
        ),
        (
            "braid/d1/readings".into(),
            format!("[{},{}]", reading("d2", 9), reading("d1", 4)),
        ),
        ("braid/d1/readings".into(), "{".into()),
    ])
    .await;
    // Until the four messages are in, then stop the gateway's MQTT side.
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_log(&brokers).len() < 7 {
        assert!(Instant::now() < deadline, "{:?}", in_log(&brokers));
    }
    stop.cancel();
    let stats = first.await.unwrap().unwrap();
    assert!(stats.messages >= 5, "{stats:?}");
    assert_eq!(stats.dead_lettered, 2, "{stats:?}");

    // Published while the gateway is away: held by the broker's session.
    mqtt.publish(&[(
        "braid/d3/readings".into(),
        format!("[{},{}]", reading("d3", 1), reading("d3", 2)),
    )])
    .await;
    let stop = CancellationToken::new();
    let second = tokio::spawn(run(config, gw.clone(), stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = in_log(&brokers);
        if log.iter().any(|(d, _)| d == "d3") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "held messages never came: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.cancel();
    second.await.unwrap().unwrap();
    // Every reading once at least (a redelivery may add an equal copy,
    // which the views drop), nothing else.
    let distinct: BTreeSet<(String, u64)> =
        log.iter().filter(|(d, _)| d != "probe").cloned().collect();
    let expected: BTreeSet<(String, u64)> = [
        ("d1", 1),
        ("d1", 2),
        ("d1", 3),
        ("d1", 4),
        ("d2", 1),
        ("d2", 2),
        ("d3", 1),
        ("d3", 2),
    ]
    .into_iter()
    .map(|(d, s)| (d.to_string(), s))
    .collect();
    assert_eq!(distinct, expected, "{log:?}");
    let dlq = dead_letters(&brokers);
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    assert!(
        dlq.iter()
            .any(|r| r.contains("device_id") && r.contains("d2")),
        "{dlq:?}"
    );
    assert!(dlq.iter().any(|r| !r.contains("device_id")), "{dlq:?}");
}
