//! [`OrphanWatch`]: a partition with records that nobody reads makes the
//! consumer rejoin its group and take it; one whose records are committed
//! does not.

use std::time::{Duration, Instant};

use braid_kafka::{OrphanWatch, RevocationContext, Topics, consumer_config, producer_config};
use braid_testkit::{TEST_PARTITIONS, init_tracing, memory_broker};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Sends `n` messages to partition `p` of `braid.readings`, acknowledged.
async fn produce_to(brokers: &str, p: i32, n: usize) {
    let producer: FutureProducer = producer_config(brokers).create().expect("producer");
    for i in 0..n {
        let payload = format!("{{\"n\":{i}}}");
        producer
            .send(
                FutureRecord::<(), _>::to(Topics::READINGS)
                    .partition(p)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("acknowledged");
    }
}

/// Checks every `SHARE_CHECK_EVERY` until `deadline`; says whether the
/// watch rejoined.
fn watch_until(
    watch: &mut OrphanWatch,
    consumer: &BaseConsumer<RevocationContext>,
    deadline: Duration,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if watch
            .check(consumer, "it-orphans", Topics::READINGS)
            .expect("check")
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_partition_makes_the_consumer_rejoin_and_take_it() {
    init_tracing();
    let broker = memory_broker().await;
    let brokers = broker.brokers();
    produce_to(&brokers, 1, 3).await;
    let b = brokers.clone();
    // Holds partition 0 only (assigned by hand, as a group that forgot
    // partition 1 would); partition 1's three records are committed first.
    let consumer = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<RevocationContext> = consumer_config(&b, "it-orphans")
            .create_with_context(RevocationContext::default())
            .expect("consumer");
        let mut mine = TopicPartitionList::new();
        mine.add_partition(Topics::READINGS, 0);
        consumer.assign(&mine).expect("assign");
        let mut done = TopicPartitionList::new();
        done.add_partition_offset(Topics::READINGS, 1, Offset::Offset(3))
            .expect("offset");
        consumer.commit(&done, CommitMode::Sync).expect("commit");
        let mut watch = OrphanWatch::new(Duration::from_secs(1));
        assert!(
            !watch_until(&mut watch, &consumer, Duration::from_secs(12)),
            "no rejoin while every record of the partitions not held is committed"
        );
        (consumer, watch)
    })
    .await
    .expect("join");
    produce_to(&brokers, 1, 2).await;
    tokio::task::spawn_blocking(move || {
        let (consumer, mut watch) = consumer;
        assert!(
            watch_until(&mut watch, &consumer, Duration::from_secs(20)),
            "a rejoin once partition 1 has unread records and its committed offset stands still"
        );
        let start = Instant::now();
        let mut held = Vec::new();
        while start.elapsed() < Duration::from_secs(30) && held.len() < TEST_PARTITIONS as usize {
            let _ = consumer.poll(Duration::from_millis(200));
            held = consumer
                .assignment()
                .expect("assignment")
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect();
        }
        held.sort_unstable();
        let all: Vec<i32> = (0..TEST_PARTITIONS).collect();
        assert_eq!(
            held, all,
            "after the rejoin the lone member holds every partition"
        );
    })
    .await
    .expect("join");
}
