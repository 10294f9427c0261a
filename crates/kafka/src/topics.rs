//! Braid's topics and their creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaError;

/// The topic names, in one place.
pub struct Topics;

impl Topics {
    /// All readings, keyed by device.
    pub const READINGS: &'static str = "braid.readings";
    /// Rejected records with a reason header.
    pub const READINGS_DLQ: &'static str = "braid.readings.dlq";
    /// Speed-view changes as absolute values.
    pub const SPEED: &'static str = "braid.speed";
    /// Anomaly alerts.
    pub const ALERTS: &'static str = "braid.alerts";

    /// Every topic with the partition count Braid gives it: readings and
    /// speed changes get `partitions`, the side topics one.
    pub fn all(partitions: i32) -> [(&'static str, i32); 4] {
        [
            (Self::READINGS, partitions),
            (Self::READINGS_DLQ, 1),
            (Self::SPEED, partitions),
            (Self::ALERTS, 1),
        ]
    }
}

/// The headers of a record in `braid.readings.dlq`: why it was refused
/// (naming the record and field) and where it came from.
pub fn dead_letter_headers(reason: &str, source: &str) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    OwnedHeaders::new()
        .insert(Header {
            key: "reason",
            value: Some(reason),
        })
        .insert(Header {
            key: "source",
            value: Some(source),
        })
}

/// Creates Braid's topics where they do not exist yet. Existing topics are
/// left as they are (their partition count included).
pub async fn ensure_topics(brokers: &str, partitions: i32) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("log_level", "4")
        .create()
        .map_err(|e| KafkaError::client("creating the admin client", e))?;
    let wanted = Topics::all(partitions);
    let new: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| KafkaError::client("creating topics", e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::client(
                    format!("creating topic {topic}"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}
