//! The live driver.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use riskd_core::metric;
use riskd_core::SourcePosition;
use riskd_pipeline::config::KafkaConfig;
use riskd_pipeline::{Outcome, Pipeline};

use crate::client::{consumer_config, producer_config};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("kafka.brokers is empty: set it in the config or RISKD_KAFKA_BROKERS (or run `riskd demo`, which starts a local broker)")]
    NoBrokers,
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("output to `{topic}` was not acknowledged: {message}; stopping without committing past it")]
    Delivery { topic: String, message: String },
}

/// Counts for the shutdown log line.
#[derive(Clone, Debug, Default)]
pub struct ServeStats {
    pub consumed: u64,
    pub decisions: u64,
    pub dead_letters: u64,
}

/// An acknowledged (or failed) output, with the input it answers.
struct Done {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    output_topic: &'static str,
    acked: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
}

fn acknowledge(consumer: &StreamConsumer, done: Done) -> Result<(), ServeError> {
    match done.acked {
        Ok(Ok(_)) => {
            // Fails only when the partition was revoked meanwhile; its new
            // owner re-reads the input and repeats the same decision id.
            if let Err(e) = consumer.store_offset(&done.topic, done.partition, done.offset) {
                tracing::debug!(error = %e, partition = done.partition, "offset not stored (partition no longer assigned)");
            }
            Ok(())
        }
        Ok(Err((e, _))) => Err(ServeError::Delivery { topic: done.output_topic.to_string(), message: e.to_string() }),
        Err(_) => Err(ServeError::Delivery {
            topic: done.output_topic.to_string(),
            message: "the producer was dropped".into(),
        }),
    }
}

/// Enqueues one message, waiting while the producer queue is full.
pub(crate) async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    body: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<DeliveryFuture, ServeError> {
    loop {
        let mut record = FutureRecord::to(topic).key(key).payload(body);
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Consumes, decides and produces until `shutdown` resolves; then stops
/// consuming, waits for every in-flight output to be acknowledged, commits,
/// and returns. `ready` turns true once the consumer has subscribed.
pub async fn run(
    kafka: &KafkaConfig,
    mut pipeline: Pipeline,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeStats, ServeError> {
    if kafka.brokers.is_empty() {
        return Err(ServeError::NoBrokers);
    }
    let consumer: StreamConsumer = consumer_config(kafka).create()?;
    let producer: FutureProducer = producer_config(kafka).create()?;
    let topics: Vec<&str> = kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(brokers = %kafka.brokers, group = %kafka.group_id, topics = ?topics, "serving");

    // Leak-free 'static names for the two output topics.
    let decision_topic: &'static str = Box::leak(kafka.decision_topic.clone().into_boxed_str());
    let dead_letter_topic: &'static str = Box::leak(kafka.dead_letter_topic.clone().into_boxed_str());
    let in_flight_gauge = metrics::gauge!(metric::CONSUMER_LAG_MESSAGES);
    let output_errors = metrics::counter!(metric::OUTPUT_ERRORS_TOTAL, "sink" => "kafka");

    let mut stats = ServeStats::default();
    let mut in_flight: FuturesOrdered<_> = FuturesOrdered::new();
    let mut topic_names: Vec<Arc<str>> = Vec::new();
    let mut result = Ok(());
    tokio::pin!(shutdown);

    loop {
        in_flight_gauge.set(in_flight.len() as f64);
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = acknowledge(&consumer, done) {
                    output_errors.increment(1);
                    result = Err(e);
                    break;
                }
            }
            msg = consumer.recv(), if in_flight.len() < kafka.max_in_flight => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error; continuing");
                        continue;
                    }
                };
                stats.consumed += 1;
                let topic = match topic_names.iter().find(|t| ***t == *msg.topic()) {
                    Some(t) => t.clone(),
                    None => {
                        let t: Arc<str> = Arc::from(msg.topic());
                        topic_names.push(t.clone());
                        t
                    }
                };
                let (partition, offset) = (msg.partition(), msg.offset());
                let payload = msg.payload().unwrap_or_default();
                let outcome = pipeline.process(payload, || SourcePosition::Kafka { topic: topic.to_string(), partition, offset });
                let (output_topic, key, body) = match &outcome {
                    Outcome::Decision(d) => {
                        stats.decisions += 1;
                        (decision_topic, d.user_id.clone(), serde_json::to_vec(d))
                    }
                    Outcome::DeadLetter(dl) => {
                        stats.dead_letters += 1;
                        (dead_letter_topic, dl.event_id.clone().unwrap_or_default(), serde_json::to_vec(dl))
                    }
                };
                let body = body.expect("decision records always serialize");
                // Input headers (e.g. a producer timestamp) travel with the output.
                let headers = msg.headers().map(|h| h.detach());
                let delivery = match send(&producer, output_topic, &key, &body, headers).await {
                    Ok(d) => d,
                    Err(e) => {
                        output_errors.increment(1);
                        result = Err(e);
                        break;
                    }
                };
                in_flight.push_back(async move {
                    let acked = delivery.await;
                    Done { topic, partition, offset, output_topic, acked }
                });
            }
        }
    }

    if result.is_ok() {
        tracing::info!(in_flight = in_flight.len(), "stopping: draining in-flight outputs");
        while let Some(done) = in_flight.next().await {
            if let Err(e) = acknowledge(&consumer, done) {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is not an error worth failing for.
            if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                tracing::warn!(error = %e, "final commit failed; the next start may repeat some decisions");
            }
        }
    }
    ready.store(false, Ordering::Relaxed);
    tracing::info!(
        consumed = stats.consumed,
        decisions = stats.decisions,
        dead_letters = stats.dead_letters,
        "stopped"
    );
    result.map(|_| stats)
}
