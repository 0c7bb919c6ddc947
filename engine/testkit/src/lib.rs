//! Support for integration tests against a real broker: a tansu process
//! per test, fresh topic names, producing lines and collecting outputs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
pub use riskd_kafka::local_broker::LocalBroker;

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn start_broker() -> LocalBroker {
    LocalBroker::start().unwrap_or_else(|e| panic!("integration tests need the tansu broker: {e}"))
}

pub async fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    riskd_kafka::admin::ensure_topics(brokers, topics).await.expect("create topics");
}

/// Produces each line (keyed by `key(line)`), waiting for every acknowledgement.
pub async fn produce(brokers: &str, topic: &str, lines: &[Vec<u8>], key: impl Fn(&[u8]) -> String) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut acks = Vec::with_capacity(lines.len());
    for line in lines {
        let k = key(line);
        acks.push(
            producer.send_result(FutureRecord::to(topic).key(&k).payload(line)).map_err(|(e, _)| e).expect("enqueue"),
        );
    }
    for ack in acks {
        ack.await.expect("producer alive").map_err(|(e, _)| e).expect("produce acknowledged");
    }
}

/// Like [`produce`], but waits for each acknowledgement before the next send,
/// so every message is its own record batch. tansu 0.6 serves a fetch only
/// from batch boundaries, so a consumer resuming at an offset inside a batch
/// would get nothing; tests that restart mid-stream produce this way.
pub async fn produce_one_by_one(brokers: &str, topic: &str, lines: &[Vec<u8>], key: impl Fn(&[u8]) -> String) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for line in lines {
        let k = key(line);
        producer
            .send(FutureRecord::to(topic).key(&k).payload(line), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce acknowledged");
    }
}

/// Reads every message of `topics` (all partitions, from the beginning)
/// until `want` messages were read in total or `timeout` passes.
pub fn collect(brokers: &str, topics: &[&str], partitions: i32, want: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_topic("collector"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(t, p, Offset::Beginning).expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

/// The message payload as text.
pub fn text(m: &OwnedMessage) -> &str {
    std::str::from_utf8(m.payload().unwrap_or_default()).expect("utf-8 output")
}
