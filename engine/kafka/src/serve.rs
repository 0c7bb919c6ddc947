//! The live driver.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use riskd_core::metric;
use riskd_core::SourcePosition;
use riskd_features::EncodedState;
use riskd_pipeline::config::KafkaConfig;
use riskd_pipeline::{CheckpointError, CheckpointMeta, CheckpointStore, Outcome, Pipeline};

use crate::client::{consumer_config, producer_config};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("kafka.brokers is empty: set it in the config or RISKD_KAFKA_BROKERS (or run `riskd demo`, which starts a local broker)")]
    NoBrokers,
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("output to `{topic}` was not acknowledged: {message}; stopping without committing past it")]
    Delivery { topic: String, message: String },
    #[error("cannot start from the feature-state checkpoint")]
    Checkpoint(#[from] CheckpointError),
}

/// Where and how often feature state is checkpointed while serving.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    pub store: CheckpointStore,
    pub interval: Duration,
}

/// Consumer context that starts partitions restored from a checkpoint at
/// the checkpoint's offsets instead of the group's committed ones.
#[derive(Default)]
pub struct ResumeContext {
    resume: Mutex<HashMap<(String, i32), i64>>,
}

impl ClientContext for ResumeContext {}

impl ConsumerContext for ResumeContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut resume = self.resume.lock().expect("resume map");
                let assigned: Vec<(String, i32)> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                for (topic, partition) in assigned {
                    // Only the first assignment after start resumes from the
                    // checkpoint; later ones continue from committed offsets.
                    if let Some(o) = resume.remove(&(topic.clone(), partition)) {
                        tracing::info!(topic = %topic, partition, offset = o, "resuming from the checkpoint");
                        if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Offset(o)) {
                            tracing::warn!(error = %e, "cannot set the checkpoint offset");
                        }
                    }
                }
                drop(resume);
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "partition assignment failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "partition revocation failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}

type Input = StreamConsumer<ResumeContext>;

/// Restores feature state and decides where each partition resumes.
/// Returns the offsets the state reflects (empty without a checkpoint).
fn restore(
    consumer: &Input,
    kafka: &KafkaConfig,
    pipeline: &mut Pipeline,
    store: &CheckpointStore,
) -> Result<BTreeMap<String, i64>, ServeError> {
    let meta = match pipeline.restore_checkpoint(store) {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            tracing::info!(path = %store.path().display(), "no checkpoint yet: starting with empty feature state");
            return Ok(BTreeMap::new());
        }
        Err(CheckpointError::State {
            cause:
                cause @ (riskd_features::SnapshotError::FeatureSetChanged { .. }
                | riskd_features::SnapshotError::Format { .. }),
            ..
        }) => {
            // Another feature set, or the state format of another engine version.
            tracing::warn!(
                path = %store.path().display(),
                reason = %cause,
                "the checkpoint cannot be carried over: starting with empty feature state from the committed offsets; windowed features fill up again over their window"
            );
            return Ok(BTreeMap::new());
        }
        Err(e) => return Err(e.into()),
    };
    let timeout = Duration::from_secs(10);
    let cluster = consumer.client().fetch_cluster_id(timeout);
    let mut stale = None;
    if meta.cluster_id.is_some() && cluster.is_some() && meta.cluster_id != cluster {
        stale = Some("it was taken on another Kafka cluster".to_string());
    }
    if meta.group_id.as_deref() != Some(kafka.group_id.as_str()) {
        // The checkpoint's offsets, not the group's, say where the state stands.
        tracing::info!(checkpoint_group = ?meta.group_id, group = %kafka.group_id, "the checkpoint was taken under another consumer group; resuming from its offsets");
    }
    let partitions = meta.partitions();
    if partitions.is_none() {
        stale = Some("it names a malformed partition".to_string());
    }
    if let Some(why) = stale {
        tracing::warn!(path = %store.path().display(), reason = %why, "ignoring the checkpoint: starting with empty feature state from the committed offsets");
        pipeline.reset_features();
        return Ok(BTreeMap::new());
    }
    let mut resume = consumer.context().resume.lock().expect("resume map");
    resume.extend(partitions.unwrap_or_default());
    tracing::info!(
        path = %store.path().display(),
        events = meta.events,
        entities = pipeline.feature_engine().entity_count(),
        written_at = %meta.written_at,
        "feature state restored from the checkpoint"
    );
    Ok(meta.offsets)
}

/// Inputs from a restored partition that were decided and acknowledged
/// before the restart (below the group's committed offset) rebuild state
/// without being published again.
fn already_published(consumer: &Input, offsets: &BTreeMap<String, i64>) -> HashMap<(String, i32), i64> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in offsets.keys().filter_map(|k| CheckpointMeta::parse_partition_key(k)) {
        tpl.add_partition(t, p);
    }
    let mut out = HashMap::new();
    match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(committed) => {
            for e in committed.elements() {
                let key = CheckpointMeta::partition_key(e.topic(), e.partition());
                if let (Offset::Offset(c), Some(&s)) = (e.offset(), offsets.get(&key)) {
                    if c > s {
                        out.insert((e.topic().to_string(), e.partition()), c);
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "committed offsets unavailable: inputs since the checkpoint may be decided twice (same decision ids)")
        }
    }
    out
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

fn acknowledge(consumer: &Input, done: Done) -> Result<(), ServeError> {
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

/// What a serve checkpoint records beside the state.
fn serve_meta(
    pipeline: &Pipeline,
    kafka: &KafkaConfig,
    cluster_id: &Option<String>,
    positions: &HashMap<(Arc<str>, i32), i64>,
    events: u64,
) -> CheckpointMeta {
    CheckpointMeta {
        feature_set: pipeline.deployment().features.version.clone(),
        cluster_id: cluster_id.clone(),
        group_id: Some(kafka.group_id.clone()),
        offsets: positions.iter().map(|((t, p), &o)| (CheckpointMeta::partition_key(t, *p), o)).collect(),
        events,
        written_at: riskd_pipeline::checkpoint::now_text(),
        replay: None,
    }
}

/// Entities a checkpoint in progress encodes after each input: a few
/// microseconds per input, so no input waits long for it.
const CAPTURE_PER_INPUT: usize = 16;
/// Entities encoded per turn of the loop while no input is waiting: short
/// enough (well under a millisecond) that an arriving input is not held up.
const CAPTURE_WHEN_IDLE: usize = 128;

/// A checkpoint on its way: the state of one instant being encoded between
/// inputs, then waiting for the outputs decided before that instant to be
/// acknowledged.
struct Pending {
    meta: CheckpointMeta,
    /// Outputs in flight at the instant not yet acknowledged.
    before: usize,
    /// The encoded state, once complete.
    state: Option<EncodedState>,
    /// Time the event loop spent encoding it.
    encoding: Duration,
}

impl Pending {
    /// Encodes a little more of the state.
    fn step(&mut self, pipeline: &mut Pipeline, budget: usize) {
        if self.state.is_none() {
            let t = Instant::now();
            self.state = pipeline.checkpoint_step(budget);
            self.encoding += t.elapsed();
            if self.state.is_some() {
                metrics::histogram!(metric::CHECKPOINT_SECONDS, "phase" => "encode")
                    .record(self.encoding.as_secs_f64());
            }
        }
    }
}

/// The whole state at once, for the final checkpoint at shutdown (nothing
/// is waiting for the loop then).
fn encode_state(pipeline: &mut Pipeline) -> EncodedState {
    let t = Instant::now();
    let state = pipeline.encode_state();
    metrics::histogram!(metric::CHECKPOINT_SECONDS, "phase" => "encode").record(t.elapsed().as_secs_f64());
    state
}

/// Assembles (checksum included) and writes a checkpoint on a blocking
/// thread. A failed write is logged and counted; serving goes on and the
/// previous checkpoint stays.
fn store_checkpoint(ck: &Checkpointing, meta: CheckpointMeta, state: EncodedState) -> tokio::task::JoinHandle<()> {
    let store = ck.store.clone();
    tokio::task::spawn_blocking(move || {
        let bytes = state.len();
        metrics::gauge!(metric::CHECKPOINT_BYTES).set(bytes as f64);
        let t = Instant::now();
        let written = store.write_state(&meta, &state);
        metrics::histogram!(metric::CHECKPOINT_SECONDS, "phase" => "write").record(t.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                metrics::counter!(metric::CHECKPOINTS_TOTAL, "outcome" => "ok").increment(1);
                tracing::debug!(bytes, "checkpoint written");
            }
            Err(e) => {
                metrics::counter!(metric::CHECKPOINTS_TOTAL, "outcome" => "error").increment(1);
                tracing::error!(error = %e, "checkpoint not written; the previous one stays in place");
            }
        }
    })
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
    checkpoints: Option<Checkpointing>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeStats, ServeError> {
    if kafka.brokers.is_empty() {
        return Err(ServeError::NoBrokers);
    }
    let consumer: Input = consumer_config(kafka).create_with_context(ResumeContext::default())?;
    let producer: FutureProducer = producer_config(kafka).create()?;
    let mut restored = BTreeMap::new();
    let mut skip_output: HashMap<(String, i32), i64> = HashMap::new();
    if let Some(ck) = &checkpoints {
        restored = restore(&consumer, kafka, &mut pipeline, &ck.store)?;
        skip_output = already_published(&consumer, &restored);
    }
    let cluster_id = consumer.client().fetch_cluster_id(Duration::from_secs(5));
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
    // The first input read from each restored partition must be the one the
    // checkpoint expects; anything earlier means the topic was recreated.
    let mut expect_first: HashMap<(String, i32), i64> = restored
        .iter()
        .filter_map(|(k, &o)| CheckpointMeta::parse_partition_key(k).map(|(t, p)| ((t.to_string(), p), o)))
        .collect();
    // Next offset to read per partition, as reflected in the feature state.
    let mut positions: HashMap<(Arc<str>, i32), i64> =
        expect_first.iter().map(|((t, p), &o)| ((Arc::from(t.as_str()), *p), o)).collect();
    let mut events_in_state = 0u64;
    let mut checkpointed_at = 0u64;
    let mut next_checkpoint = checkpoints.as_ref().map(|c| Instant::now() + c.interval);
    // One timer for the next checkpoint, reset after each, not one per input.
    let wake = tokio::time::sleep_until(next_checkpoint.unwrap_or_else(Instant::now).into());
    tokio::pin!(wake);
    // A checkpoint stands for the state between two inputs. It is encoded a
    // little at a time while inputs go on (an input that changes an entity
    // not yet encoded encodes it first, as it was), and becomes durable once
    // every output decided before it is acknowledged: the outputs in flight
    // when it was taken, which `FuturesOrdered` completes first. Consumption
    // never pauses for it.
    let mut pending: Option<Pending> = None;
    let mut writing: Option<tokio::task::JoinHandle<()>> = None;
    tokio::pin!(shutdown);

    loop {
        in_flight_gauge.set(in_flight.len() as f64);
        if let (Some(ck), Some(at)) = (&checkpoints, next_checkpoint) {
            if pending.is_none() && Instant::now() >= at {
                if events_in_state != checkpointed_at && pipeline.begin_checkpoint() {
                    let meta = serve_meta(&pipeline, kafka, &cluster_id, &positions, events_in_state);
                    pending = Some(Pending { meta, before: in_flight.len(), state: None, encoding: Duration::ZERO });
                    checkpointed_at = events_in_state;
                }
                let at = Instant::now() + ck.interval;
                next_checkpoint = Some(at);
                wake.as_mut().reset(at.into());
            }
            if pending.as_ref().is_some_and(|p| p.state.is_none() && !pipeline.checkpoint_in_progress()) {
                // The feature state was reset meanwhile: nothing to write.
                pending = None;
                checkpointed_at = u64::MAX;
            }
            if pending.as_ref().is_some_and(|p| p.before == 0 && p.state.is_some()) {
                let Pending { meta, state, .. } = pending.take().expect("checked");
                if let Some(previous) = writing.take() {
                    let _ = previous.await;
                }
                writing = Some(store_checkpoint(ck, meta, state.expect("checked")));
            }
        }
        let capturing = pending.as_ref().is_some_and(|p| p.state.is_none());
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = &mut wake, if next_checkpoint.is_some() && pending.is_none() => {}
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = acknowledge(&consumer, done) {
                    output_errors.increment(1);
                    result = Err(e);
                    break;
                }
                if let Some(p) = &mut pending {
                    p.before = p.before.saturating_sub(1);
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
                if !expect_first.is_empty() {
                    if let Some(expected) = expect_first.remove(&(topic.to_string(), partition)) {
                        if offset < expected {
                            tracing::error!(topic = %topic, partition, offset, expected, "the input is behind the checkpoint (topic recreated?): dropping the restored feature state");
                            pipeline.reset_features();
                            expect_first.clear();
                        } else if offset > expected {
                            tracing::warn!(topic = %topic, partition, offset, expected, "inputs between the checkpoint and the first available offset are gone (retention?): features miss them");
                        }
                    }
                }
                let outcome = pipeline.process(payload, || SourcePosition::Kafka { topic: topic.to_string(), partition, offset });
                if checkpoints.is_some() {
                    positions.insert((topic.clone(), partition), offset + 1);
                    events_in_state += 1;
                    // Only right after a restart: no allocation per input otherwise.
                    if !skip_output.is_empty() {
                        let at = (topic.to_string(), partition);
                        if let Some(&until) = skip_output.get(&at) {
                            if offset < until {
                                // Decided and acknowledged before the restart.
                                continue;
                            }
                            skip_output.remove(&at);
                        }
                    }
                }
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
                if let Some(p) = &mut pending {
                    p.step(&mut pipeline, CAPTURE_PER_INPUT);
                }
            }
            // Nothing else to do: encode more of the checkpoint in progress.
            _ = std::future::ready(()), if capturing => {
                if let Some(p) = &mut pending {
                    p.step(&mut pipeline, CAPTURE_WHEN_IDLE);
                }
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
        if let Some(previous) = writing.take() {
            let _ = previous.await;
        }
        if let (Ok(()), Some(ck)) = (&result, &checkpoints) {
            // Everything is acknowledged now: the state as it stands.
            if events_in_state != checkpointed_at || pending.is_some() {
                let meta = serve_meta(&pipeline, kafka, &cluster_id, &positions, events_in_state);
                let state = encode_state(&mut pipeline);
                let _ = store_checkpoint(ck, meta, state).await;
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
