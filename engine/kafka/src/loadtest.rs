//! `riskd loadtest`: an open-loop, end-to-end load test through a real broker.
//!
//! For each target rate it runs two workers at the same time on the same
//! broker, each with its own topics (of the same shape), the same client
//! settings and the same generated events:
//!
//! 1. **pass-through**: a process that consumes each input and produces it
//!    unchanged to an output topic, committing after acknowledgement like the
//!    engine does: the cost of the two broker hops alone;
//! 2. **engine**: `riskd serve` as a child process.
//!
//! A producer thread sends the events on a fixed schedule (event *i* is due
//! at `start + i / rate`, and goes to both workers' input topics back to
//! back, in an order that rotates) whatever the outputs are doing: the test
//! is open loop. Running the two side by side puts them under the same
//! broker conditions, which vary from one run to the next by more than the
//! engine's own cost; the broker carries twice the rate meanwhile. Each input carries two headers, its sequence number and its
//! *scheduled* send time in nanoseconds since the Unix epoch; the worker
//! copies input headers onto its output, and a collector thread computes the
//! latency of every output as its arrival time minus that scheduled time.
//! Because the clock starts at the scheduled time and not at the actual send,
//! a stalled producer or a queue in front of the engine shows up as latency
//! instead of being hidden (no coordinated omission). The collector also
//! reads the input topic, which gives the broker's own one-hop floor.
//!
//! Every sequence number must come back exactly once (as a decision or a
//! dead letter); a missing one is a lost event and fails the run. The
//! worker's CPU time and peak RSS are read from `/proc`. A rate is saturated
//! when the outputs arrive at less than 95% of the target rate or the median
//! latency exceeds one second (a growing backlog); the test stops after the
//! first saturated rate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures::stream::{FuturesOrdered, StreamExt};
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureProducer, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use riskd_gen::{GenConfig, Generator};
use riskd_pipeline::config::KafkaConfig;
use riskd_pipeline::Config;
use serde::Serialize;

use crate::admin::ensure_topics;
use crate::client::{consumer_config, producer_config};
use crate::local_broker::{free_port, LocalBroker};

/// Header carrying the input's sequence number (8 bytes, big-endian).
pub const SEQ_HEADER: &str = "riskd-lt-seq";
/// Header carrying the input's scheduled send time, ns since the Unix epoch
/// (8 bytes, big-endian).
pub const SCHEDULED_HEADER: &str = "riskd-lt-scheduled-ns";

#[derive(clap::Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// Target rates in events per second, run in this order.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,15000,20000,30000,40000")]
    pub rates: Vec<u32>,
    /// Measured seconds per rate and worker.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds sent at the rate before measuring starts (counted for loss, not for latency).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Most users in the generated workload (seed 7; fewer for short runs).
    #[arg(long, default_value_t = 50_000)]
    pub users: u32,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Keep going after the first saturated rate.
    #[arg(long)]
    pub past_saturation: bool,
    /// Run the engine alone, without the pass-through beside it.
    #[arg(long)]
    pub no_pass_through: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The riskd binary to run the workers with (default: this one).
    #[arg(long)]
    pub riskd: Option<PathBuf>,
    /// Run as the pass-through worker (started by the load test itself).
    #[arg(long, hide = true)]
    pub pass_through_worker: bool,
}

/// Which worker a run measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Worker {
    PassThrough,
    Engine,
}

impl Worker {
    fn as_str(self) -> &'static str {
        match self {
            Worker::PassThrough => "pass-through",
            Worker::Engine => "engine",
        }
    }
}

/// Latency quantiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quantiles {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Quantiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Quantiles {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What one worker did at one rate.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub worker: Worker,
    pub target_rate: u32,
    /// Inputs sent (including warm-up, excluding the readiness probe).
    pub sent: u64,
    /// Inputs the broker did not acknowledge to the producer.
    pub produce_failures: u64,
    /// Input rate the producer achieved.
    pub send_rate: f64,
    /// Outputs per second from the first scheduled send to the last output.
    pub achieved_rate: f64,
    pub decisions: u64,
    pub dead_letters: u64,
    /// Inputs with no output at the end of the run. Must be 0.
    pub lost: u64,
    /// Outputs seen more than once for the same input.
    pub duplicates: u64,
    /// Scheduled send to output consumed (measured window).
    pub end_to_end: Quantiles,
    /// Scheduled send to input consumed: the broker's one-hop floor.
    pub one_hop: Quantiles,
    /// How late the producer sent relative to its schedule.
    pub producer_lag: Quantiles,
    /// Worker CPU over the run, in percent of one core.
    pub cpu_percent: f64,
    /// Worker peak resident memory.
    pub peak_rss_mib: f64,
    pub saturated: bool,
}

/// Runs the load test; returns false when any run lost events.
pub async fn run(cfg: Config, config_path: Option<PathBuf>, args: LoadtestArgs) -> Result<bool> {
    if args.rates.is_empty() || args.rates.contains(&0) {
        bail!("--rates must list rates above 0");
    }
    let riskd = match &args.riskd {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating the riskd binary")?,
    };
    let mut kafka = cfg.kafka.clone();
    let _broker = if kafka.brokers.is_empty() {
        let b = LocalBroker::start()?;
        kafka.brokers = b.bootstrap();
        eprintln!("loadtest: started a local tansu broker on {}", kafka.brokers);
        Some(b)
    } else {
        None
    };
    let keys_dir = tempfile_dir()?;
    let key_file = keys_dir.join("keys.toml");
    std::fs::write(&key_file, riskd_core::KeyRing::generate_file("k1"))?;

    eprintln!(
        "loadtest: fetch.wait.max.ms={} linger.ms={} partitions={} duration={}s warmup={}s rates={:?}",
        kafka.fetch_wait_max_ms, kafka.linger_ms, args.partitions, args.duration, args.warmup, args.rates
    );
    let mut results = Vec::new();
    let mut ok = true;
    for (n, &rate) in args.rates.iter().enumerate() {
        let count = 1 + u64::from(rate) * (args.duration + args.warmup);
        let workload = Arc::new(Workload::generate(args.users, count)?);
        let workers: &[Worker] =
            if args.no_pass_through { &[Worker::Engine] } else { &[Worker::PassThrough, Worker::Engine] };
        let mut lanes = Vec::new();
        for &worker in workers {
            let prefix = format!("lt-{}-{}-{}-{n}", worker.as_str(), rate, std::process::id());
            let topics = Topics {
                input: format!("{prefix}-in"),
                output: format!("{prefix}-out"),
                dead: format!("{prefix}-dlq"),
                group: format!("{prefix}-grp"),
            };
            ensure_topics(
                &kafka.brokers,
                &[(&topics.input, args.partitions), (&topics.output, args.partitions), (&topics.dead, args.partitions)],
            )
            .await?;
            lanes.push(Lane { worker, topics });
        }
        let spec = RunSpec {
            lanes,
            rate,
            warmup: u64::from(rate) * args.warmup,
            partitions: args.partitions,
            kafka: kafka.clone(),
            riskd: riskd.clone(),
            config_path: config_path.clone(),
            key_file: key_file.clone(),
        };
        let runs = tokio::task::spawn_blocking(move || run_rate(&spec, &workload)).await??;
        let mut saturated = false;
        for r in runs {
            eprintln!("{}", r.line());
            if r.lost > 0 || r.produce_failures > 0 {
                ok = false;
            }
            saturated |= r.saturated;
            results.push(r);
        }
        if saturated && !args.past_saturation {
            eprintln!("loadtest: {rate} events/s saturates; stopping");
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&keys_dir);

    println!("{}", render(&results));
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "fetch_wait_max_ms": kafka.fetch_wait_max_ms,
            "linger_ms": kafka.linger_ms,
            "partitions": args.partitions,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "users": args.users,
            "runs": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?).with_context(|| format!("{}", path.display()))?;
    }
    if !ok {
        eprintln!("loadtest: FAILED: events were lost or not acknowledged by the broker");
    }
    Ok(ok)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("riskd-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The generated events, stored once per rate and reused by both workers.
struct Workload {
    data: Vec<u8>,
    /// (line start, line end, key start, key end) in `data`.
    lines: Vec<(usize, usize, usize, usize)>,
}

impl Workload {
    /// Exactly `events` events. The population is scaled to the count (about
    /// 25 events per user, at most `users`), because the generator never
    /// makes fewer events than its users' planned activity.
    fn generate(users: u32, events: u64) -> Result<Workload> {
        let users = (events / 25).clamp(100, u64::from(users.max(100))) as u32;
        let cfg = GenConfig { seed: 7, users, days: 30, events, ..GenConfig::default() };
        let mut gen = Generator::new(&cfg)?;
        let mut w = Workload { data: Vec::new(), lines: Vec::with_capacity(events as usize) };
        let mut line = String::new();
        while w.lines.len() < events as usize && gen.next_into(&mut line).is_some() {
            let start = w.data.len();
            w.data.extend_from_slice(line.as_bytes());
            let (ks, ke) = user_key_span(line.as_bytes()).map_or((start, start), |(s, e)| (start + s, start + e));
            w.lines.push((start, w.data.len(), ks, ke));
            line.clear();
        }
        Ok(w)
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    fn get(&self, i: usize) -> (&[u8], &[u8]) {
        let (s, e, ks, ke) = self.lines[i];
        (&self.data[s..e], &self.data[ks..ke])
    }
}

/// Where the user id's value is in a generated line (the partition key).
fn user_key_span(line: &[u8]) -> Option<(usize, usize)> {
    const NEEDLE: &[u8] = b"\"user_id\":\"";
    let at = line.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    Some((at, at + len))
}

struct Topics {
    input: String,
    output: String,
    dead: String,
    group: String,
}

/// One worker with its own topics.
struct Lane {
    worker: Worker,
    topics: Topics,
}

struct RunSpec {
    lanes: Vec<Lane>,
    rate: u32,
    /// Inputs after the probe that are sent but not measured.
    warmup: u64,
    partitions: i32,
    kafka: KafkaConfig,
    riskd: PathBuf,
    config_path: Option<PathBuf>,
    key_file: PathBuf,
}

/// A worker process, stopped (SIGTERM, then SIGKILL) when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(spec: &RunSpec, lane: &Lane) -> Result<WorkerProcess> {
        let mut c = Command::new(&spec.riskd);
        if let Some(p) = &spec.config_path {
            c.arg("--config").arg(p);
        }
        match lane.worker {
            Worker::Engine => c.arg("serve"),
            Worker::PassThrough => c.args(["loadtest", "--pass-through-worker"]),
        };
        let http = format!("127.0.0.1:{}", free_port()?);
        c.env("RISKD_KAFKA_BROKERS", &spec.kafka.brokers)
            .env("RISKD_KAFKA_INPUT_TOPICS", &lane.topics.input)
            .env("RISKD_KAFKA_DECISION_TOPIC", &lane.topics.output)
            .env("RISKD_KAFKA_DEAD_LETTER_TOPIC", &lane.topics.dead)
            .env("RISKD_KAFKA_GROUP_ID", &lane.topics.group)
            .env("RISKD_PII_KEY_FILE", &spec.key_file)
            // Each run starts from empty feature state: a checkpoint left in the
            // configured state_dir by an earlier run was taken with another key
            // (one is generated per run) and for other topics.
            .env("RISKD_ENGINE_STATE_DIR", spec.key_file.with_file_name(format!("state-{}", lane.topics.group)))
            .env("RISKD_HTTP_LISTEN", http)
            .env("RISKD_LOG", std::env::var("RISKD_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = c.spawn().with_context(|| format!("starting {}", spec.riskd.display()))?;
        Ok(WorkerProcess(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM and wait up to 15 s; true when it exited successfully.
    fn stop(&mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// User + system CPU time of a process, from `/proc/PID/stat` (in clock
/// ticks of 1/100 s, Linux's fixed USER_HZ).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Peak resident set size from `/proc/PID/status` (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 us to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Counts the producer's deliveries.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
}

/// The producer's context: counts into shared [`Deliveries`].
struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// What the collector thread saw for one worker.
struct Collected {
    end_to_end: Histogram<u64>,
    one_hop: Histogram<u64>,
    decisions: u64,
    dead_letters: u64,
    duplicates: u64,
    /// Inputs (by sequence number) that got an output.
    answered: Vec<bool>,
    last_output: Option<Instant>,
}

impl Collected {
    fn new(total: usize) -> Collected {
        Collected {
            end_to_end: histogram(),
            one_hop: histogram(),
            decisions: 0,
            dead_letters: 0,
            duplicates: 0,
            answered: vec![false; total],
            last_output: None,
        }
    }
}

fn header_u64(msg: &impl Message, key: &str) -> Option<u64> {
    let headers = msg.headers()?;
    let h = headers.iter().find(|h| h.key == key)?;
    Some(u64::from_be_bytes(h.value?.try_into().ok()?))
}

#[derive(Clone, Copy)]
enum TopicRole {
    Input,
    Output,
    DeadLetter,
}

/// Reads every lane's input, output and dead-letter topics until `stop`,
/// timing every message from its scheduled send time.
fn collect(
    consumer: BaseConsumer,
    lanes: &[Lane],
    total: usize,
    measured_from: u64,
    answered_counts: &[AtomicU64],
    stop: &AtomicBool,
) -> Vec<Collected> {
    let mut out: Vec<Collected> = lanes.iter().map(|_| Collected::new(total)).collect();
    let roles: Vec<(&str, usize, TopicRole)> = lanes
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            [
                (l.topics.input.as_str(), i, TopicRole::Input),
                (l.topics.output.as_str(), i, TopicRole::Output),
                (l.topics.dead.as_str(), i, TopicRole::DeadLetter),
            ]
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(20)) else { continue };
        let arrived = now_ns();
        let (Some(seq), Some(scheduled)) = (header_u64(&msg, SEQ_HEADER), header_u64(&msg, SCHEDULED_HEADER)) else {
            continue;
        };
        let Some(&(_, lane, role)) = roles.iter().find(|(t, _, _)| *t == msg.topic()) else { continue };
        let c = &mut out[lane];
        let latency_us = (arrived.saturating_sub(scheduled) / 1000).max(1);
        match role {
            TopicRole::Input => {
                if seq >= measured_from {
                    c.one_hop.saturating_record(latency_us);
                }
                continue;
            }
            TopicRole::Output => c.decisions += 1,
            TopicRole::DeadLetter => c.dead_letters += 1,
        }
        c.last_output = Some(Instant::now());
        match c.answered.get_mut(seq as usize) {
            Some(seen) if *seen => c.duplicates += 1,
            Some(seen) => {
                *seen = true;
                answered_counts[lane].fetch_add(1, Ordering::Relaxed);
                if seq >= measured_from {
                    c.end_to_end.saturating_record(latency_us);
                }
            }
            None => {}
        }
    }
    out
}

/// Runs every lane's worker at once at one rate; one result per lane.
fn run_rate(spec: &RunSpec, workload: &Workload) -> Result<Vec<RunResult>> {
    let total = workload.len();
    let lanes = &spec.lanes;
    let mut workers = lanes.iter().map(|l| WorkerProcess::start(spec, l)).collect::<Result<Vec<_>>>()?;

    // The collector reads every partition from the beginning, without a group.
    let mut cc = spec.kafka.clone();
    cc.group_id = format!("{}-collector", lanes[0].topics.group);
    let consumer: BaseConsumer = consumer_config(&cc).set("enable.auto.commit", "false").create()?;
    let mut tpl = TopicPartitionList::new();
    for l in lanes {
        for t in [&l.topics.input, &l.topics.output, &l.topics.dead] {
            for p in 0..spec.partitions {
                tpl.add_partition_offset(t, p, Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let stop = AtomicBool::new(false);
    let answered: Vec<AtomicU64> = lanes.iter().map(|_| AtomicU64::new(0)).collect();
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<Counting> =
        producer_config(&spec.kafka).create_with_context(Counting(deliveries.clone()))?;
    let period_ns = 1_000_000_000 / u64::from(spec.rate);
    let all_answered = |at_least: u64| answered.iter().all(|a| a.load(Ordering::Relaxed) >= at_least);

    std::thread::scope(|scope| -> Result<Vec<RunResult>> {
        let collector = scope.spawn(|| collect(consumer, lanes, total, 1 + spec.warmup, &answered, &stop));
        let finish = |workers: &mut Vec<WorkerProcess>| {
            stop.store(true, Ordering::Relaxed);
            for w in workers {
                w.stop();
            }
        };
        // Event i goes to every lane's input, in an order that rotates with
        // i so that no worker is always sent to first.
        let send = |i: usize, scheduled: u64| -> Result<()> {
            let (line, key) = workload.get(i);
            let seq = (i as u64).to_be_bytes();
            let at = scheduled.to_be_bytes();
            for k in 0..lanes.len() {
                let lane = &lanes[(i + k) % lanes.len()];
                let headers = OwnedHeaders::new_with_capacity(2)
                    .insert(Header { key: SEQ_HEADER, value: Some(&seq[..]) })
                    .insert(Header { key: SCHEDULED_HEADER, value: Some(&at[..]) });
                let mut record = BaseRecord::to(&lane.topics.input).key(key).payload(line).headers(headers);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_micros(100));
                        }
                        Err((e, _)) => bail!("produce: {e}"),
                    }
                }
            }
            Ok(())
        };

        // Readiness: the first event must come back from every worker before
        // the clock starts (they join their consumer groups meanwhile).
        send(0, now_ns())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !all_answered(1) {
            if Instant::now() > deadline {
                finish(&mut workers);
                bail!("a worker did not answer its first input within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let cpu0: Vec<f64> = workers.iter().map(|w| cpu_seconds(w.pid()).unwrap_or(0.0)).collect();

        // Open loop: event i is due at start + (i - 1) * period.
        let start = Instant::now();
        let start_ns = now_ns();
        let mut lag = histogram();
        for i in 1..total {
            let due_offset = Duration::from_nanos((i as u64 - 1) * period_ns);
            let due = start + due_offset;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            lag.saturating_record((Instant::now().saturating_duration_since(due).as_micros() as u64).max(1));
            send(i, start_ns + due_offset.as_nanos() as u64)?;
        }
        let sent_for = start.elapsed();
        let _ = producer.flush(Duration::from_secs(30));

        // Wait for every output, or until they stop coming.
        let sum = || answered.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>();
        let mut last = (sum(), Instant::now());
        while !all_answered(total as u64) {
            let n = sum();
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let wall = start.elapsed();
        let cpu1: Vec<f64> = workers.iter().zip(&cpu0).map(|(w, c0)| cpu_seconds(w.pid()).unwrap_or(*c0)).collect();
        let rss: Vec<f64> = workers.iter().map(|w| peak_rss_mib(w.pid()).unwrap_or(0.0)).collect();
        finish(&mut workers);
        let collected = collector.join().map_err(|_| anyhow::anyhow!("the collector thread panicked"))?;

        let acked = deliveries.acked.load(Ordering::Relaxed);
        let failed = deliveries.failed.load(Ordering::Relaxed);
        let produced = (total * lanes.len()) as u64;
        let sent = total as u64 - 1;
        let mut results = Vec::new();
        for (k, c) in collected.into_iter().enumerate() {
            let answered_inputs = c.answered.iter().filter(|a| **a).count() as u64;
            let span = c.last_output.map_or(wall, |t| t.saturating_duration_since(start)).as_secs_f64().max(1e-9);
            let achieved = answered_inputs.saturating_sub(1) as f64 / span;
            let e2e = Quantiles::of(&c.end_to_end);
            // A backlog that builds up shows in the rate and the median; a single
            // stall of the broker or the machine only in the tail.
            let saturated = achieved < 0.95 * f64::from(spec.rate) || e2e.p50_ms > 1000.0;
            results.push(RunResult {
                worker: lanes[k].worker,
                target_rate: spec.rate,
                sent,
                // Not attributable to a lane: every lane reports the producer's total.
                produce_failures: failed + produced.saturating_sub(acked + failed),
                send_rate: sent as f64 / sent_for.as_secs_f64().max(1e-9),
                achieved_rate: achieved,
                decisions: c.decisions,
                dead_letters: c.dead_letters,
                lost: total as u64 - answered_inputs,
                duplicates: c.duplicates,
                end_to_end: e2e,
                one_hop: Quantiles::of(&c.one_hop),
                producer_lag: Quantiles::of(&lag),
                cpu_percent: 100.0 * (cpu1[k] - cpu0[k]) / wall.as_secs_f64(),
                peak_rss_mib: rss[k],
                saturated,
            });
        }
        Ok(results)
    })
}

impl RunResult {
    /// One progress line.
    fn line(&self) -> String {
        format!(
            "loadtest: {:<12} {:>6}/s: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (one hop p50 {:.2} ms, p99 {:.2} ms; producer lag p99 {:.2} ms); lost {}, dead letters {}, cpu {:.0}%, rss {:.0} MiB{}",
            self.worker.as_str(),
            self.target_rate,
            self.achieved_rate,
            self.end_to_end.p50_ms,
            self.end_to_end.p99_ms,
            self.end_to_end.p999_ms,
            self.end_to_end.max_ms,
            self.one_hop.p50_ms,
            self.one_hop.p99_ms,
            self.producer_lag.p99_ms,
            self.lost,
            self.dead_letters,
            self.cpu_percent,
            self.peak_rss_mib,
            if self.saturated { " (saturated)" } else { "" }
        )
    }
}

/// Markdown tables: every run, then the engine's latency added over the
/// pass-through at each rate.
pub fn render(results: &[RunResult]) -> String {
    let mut s = String::from(
        "| worker | target/s | achieved/s | p50 ms | p99 ms | p99.9 ms | max ms | one hop p50 / p99 ms | lost | dup | dead letters | CPU % | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let e = &r.end_to_end;
        s += &format!(
            "| {}{} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {} | {} | {} | {:.0} | {:.0} |\n",
            r.worker.as_str(),
            if r.saturated { " (saturated)" } else { "" },
            r.target_rate,
            r.achieved_rate,
            e.p50_ms,
            e.p99_ms,
            e.p999_ms,
            e.max_ms,
            r.one_hop.p50_ms,
            r.one_hop.p99_ms,
            r.lost,
            r.duplicates,
            r.dead_letters,
            r.cpu_percent,
            r.peak_rss_mib
        );
    }
    let by_rate: HashMap<(u32, Worker), &RunResult> = results.iter().map(|r| ((r.target_rate, r.worker), r)).collect();
    let mut added = String::new();
    let mut rates: Vec<u32> = results.iter().map(|r| r.target_rate).collect();
    rates.dedup();
    for rate in rates {
        if let (Some(p), Some(e)) = (by_rate.get(&(rate, Worker::PassThrough)), by_rate.get(&(rate, Worker::Engine))) {
            added += &format!(
                "| {} | {:+.2} | {:+.2} | {:+.2} |\n",
                rate,
                e.end_to_end.p50_ms - p.end_to_end.p50_ms,
                e.end_to_end.p99_ms - p.end_to_end.p99_ms,
                e.end_to_end.p999_ms - p.end_to_end.p999_ms
            );
        }
    }
    if !added.is_empty() {
        s += "\nEngine latency added over the pass-through at the same rate:\n\n| target/s | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|\n";
        s += &added;
    }
    s
}

/// The pass-through worker: consumes the input topics and produces every
/// message unchanged (key, payload, headers) to the decision topic, storing
/// an input's offset for commit only after its output is acknowledged, with
/// the same client settings as `riskd serve`.
pub async fn pass_through(kafka: &KafkaConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<u64> {
    if kafka.brokers.is_empty() {
        bail!("kafka.brokers is empty");
    }
    let consumer: StreamConsumer = consumer_config(kafka).create()?;
    let producer: FutureProducer = producer_config(kafka).create()?;
    let topics: Vec<&str> = kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let mut in_flight = FuturesOrdered::new();
    let mut forwarded = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some((topic, partition, offset, acked)) = in_flight.next(), if !in_flight.is_empty() => {
                let acked: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, _> = acked;
                match acked {
                    Ok(Ok(_)) => {
                        let topic: String = topic;
                        let _ = consumer.store_offset(&topic, partition, offset);
                    }
                    _ => bail!("a forwarded message was not acknowledged"),
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
                let key = std::str::from_utf8(msg.key().unwrap_or_default()).unwrap_or_default();
                let headers = msg.headers().map(|h| h.detach());
                let delivery = crate::serve::send(&producer, &kafka.decision_topic, key, msg.payload().unwrap_or_default(), headers).await?;
                forwarded += 1;
                let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
                in_flight.push_back(async move { (topic, partition, offset, delivery.await) });
            }
        }
    }
    while let Some((topic, partition, offset, acked)) = in_flight.next().await {
        if let Ok(Ok(_)) = acked {
            let _ = consumer.store_offset(&topic, partition, offset);
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Ok(forwarded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_key_is_the_user_id() {
        let line = br#"{"event_id":"e","entities":{"user_id":"u-000398","device_id":"d"}}"#;
        let (s, e) = user_key_span(line).unwrap();
        assert_eq!(&line[s..e], b"u-000398");
        assert_eq!(user_key_span(b"{}"), None);
    }

    #[test]
    fn proc_readings_of_this_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some_and(|s| s >= 0.0));
        assert!(peak_rss_mib(pid).is_some_and(|m| m > 1.0));
    }

    #[test]
    fn the_table_shows_the_engine_over_the_pass_through() {
        let q = |p50: f64, p99: f64| Quantiles { samples: 10, p50_ms: p50, p99_ms: p99, p999_ms: p99, max_ms: p99 };
        let run = |worker, e2e| RunResult {
            worker,
            target_rate: 1000,
            sent: 10,
            produce_failures: 0,
            send_rate: 1000.0,
            achieved_rate: 999.0,
            decisions: 10,
            dead_letters: 0,
            lost: 0,
            duplicates: 0,
            end_to_end: e2e,
            one_hop: q(1.0, 2.0),
            producer_lag: q(0.0, 0.0),
            cpu_percent: 10.0,
            peak_rss_mib: 50.0,
            saturated: false,
        };
        let t = render(&[run(Worker::PassThrough, q(8.0, 10.0)), run(Worker::Engine, q(8.5, 10.25))]);
        assert!(t.contains("| 1000 | +0.50 | +0.25 | +0.25 |"), "{t}");
    }
}
