//! Messages with headers (the load test times outputs by them) go through
//! the local broker once each, headers intact, also when the producer batches.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use riskd_kafka::local_broker::LocalBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip_once_each() {
    let broker = LocalBroker::start().expect("tansu");
    let brokers = broker.bootstrap();
    riskd_kafka::admin::ensure_topics(&brokers, &[("hdr", 1)]).await.unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let n = 50u64;
    for i in 0..n {
        let v = i.to_be_bytes();
        let h = OwnedHeaders::new().insert(Header { key: "seq", value: Some(&v[..]) });
        producer.send(BaseRecord::to("hdr").key("k").payload("x").headers(h)).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "g")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("hdr", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let seq = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "seq"))
                .and_then(|h| h.value)
                .map(|v| u64::from_be_bytes(v.try_into().unwrap()));
            got.push((m.offset(), seq));
        }
    }
    assert_eq!(got.len() as u64, n, "each message once");
    let seqs: Vec<Option<u64>> = got.iter().map(|g| g.1).collect();
    assert_eq!(seqs, (0..n).map(Some).collect::<Vec<_>>(), "headers intact, in order");
}
