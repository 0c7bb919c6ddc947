//! Client settings shared by the engine, the demo and the tests, tuned for
//! latency: a short producer linger and consumer fetch wait (see
//! `docs/operations.md`, Latency or throughput).

use rdkafka::ClientConfig;
use riskd_pipeline::config::KafkaConfig;

/// Consumer settings: manual offset store (only after the output is
/// acknowledged), periodic auto-commit of stored offsets.
pub fn consumer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", k.commit_interval_ms.to_string())
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", k.fetch_wait_max_ms.to_string())
        .set("fetch.min.bytes", "1")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.partition.eof", "false");
    for (key, v) in &k.client {
        c.set(key, v);
    }
    c
}

/// Producer settings: idempotent, all replicas acknowledge, `kafka.linger_ms`.
pub fn producer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", k.linger_ms.to_string())
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "1000000");
    for (key, v) in &k.client {
        c.set(key, v);
    }
    c
}
