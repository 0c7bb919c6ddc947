//! `riskd demo`: the engine end to end on one machine. Starts a local tansu
//! broker (unless `kafka.brokers` is set), creates the topics, serves,
//! streams a recorded file into the input topic, prints decisions as they
//! arrive on the decision topic, then prints a summary and checks that the
//! live decisions equal a replay of the same file.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use riskd_core::{DeadLetter, Decision, KeyRing};
use riskd_pipeline::replay::{open_input, Recorded};
use riskd_pipeline::{Config, Deployment, Outcome, Pipeline};
use serde::Deserialize;

use crate::admin::ensure_topics;
use crate::local_broker::LocalBroker;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Recorded events to stream into the input topic.
    #[arg(long, default_value = "replay-data/events.jsonl")]
    pub data: PathBuf,
    /// Events produced per second (0: as fast as possible).
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Print only decisions that are not approve/pass (and dead letters).
    #[arg(long)]
    pub flagged_only: bool,
    /// Also write the live decisions, as consumed from the decision topic, to this JSONL file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Deserialize)]
struct KeyOnly<'a> {
    #[serde(borrow, default)]
    entities: Option<UserOnly<'a>>,
}

#[derive(Deserialize)]
struct UserOnly<'a> {
    #[serde(borrow, default)]
    user_id: Option<std::borrow::Cow<'a, str>>,
}

fn user_key(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<KeyOnly<'_>>(bytes).ok()?.entities?.user_id.map(|u| u.into_owned())
}

/// Loads the key file, creating a development one under `.riskd/` when the
/// configured file does not exist.
fn demo_keys(cfg: &Config) -> Result<KeyRing> {
    let path = &cfg.pii.key_file;
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, KeyRing::generate_file("k1"))?;
        eprintln!("demo: created a development key file at {} (never use it in production)", path.display());
    }
    Ok(KeyRing::load(path)?)
}

fn line(d: &Decision) -> String {
    let reasons: Vec<&str> = d.reasons.iter().filter(|r| !r.shadow).map(|r| r.code.as_str()).take(3).collect();
    let score = d.score.map_or("   -".to_string(), |s| format!("{s:4.0}"));
    format!(
        "{}  {:<16} {:<10} {:<7} score {}  {:>5}us  {}",
        d.event_time,
        d.event_type.as_str(),
        d.user_id,
        d.action.as_str(),
        score,
        d.latency_us,
        reasons.join(",")
    )
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the demo; returns false when the live/replay check failed.
pub async fn run(mut cfg: Config, args: DemoArgs) -> Result<bool> {
    let keys = demo_keys(&cfg)?;
    let deployment =
        Arc::new(Deployment::load(&cfg.engine).map_err(|e| anyhow::anyhow!("{} problem(s) found:\n{e}", e.count()))?);
    let recorded =
        Recorded::read(open_input(&args.data)?).with_context(|| format!("reading {}", args.data.display()))?;
    let _broker = if cfg.kafka.brokers.is_empty() {
        let b = LocalBroker::start()?;
        cfg.kafka.brokers = b.bootstrap();
        eprintln!("demo: started a local tansu broker on {}", cfg.kafka.brokers);
        Some(b)
    } else {
        None
    };
    let k = cfg.kafka.clone();
    let mut topics: Vec<(&str, i32)> = k.input_topics.iter().map(|t| (t.as_str(), 1)).collect();
    topics.push((&k.decision_topic, 1));
    topics.push((&k.dead_letter_topic, 1));
    ensure_topics(&k.brokers, &topics).await?;
    eprintln!("demo: topics ready: {}", topics.iter().map(|t| t.0).collect::<Vec<_>>().join(", "));

    // Watch the output topics from the beginning.
    let watcher: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", format!("riskd-demo-watch-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    watcher.subscribe(&[&k.decision_topic, &k.dead_letter_topic])?;

    // The engine, in this process, exactly as `riskd serve` runs it.
    let pipeline = Pipeline::new(deployment.clone(), keys.clone(), &cfg.engine)?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve_cfg = k.clone();
    let engine = tokio::spawn(async move {
        crate::serve::run(&serve_cfg, pipeline, None, ready, async {
            let _ = stop_rx.await;
        })
        .await
    });

    // Produce the recording in event-time order, keyed by user, at the given rate.
    let producer: FutureProducer = crate::client::producer_config(&k).create()?;
    let input_topic = k.input_topics[0].clone();
    let lines: Vec<Vec<u8>> = recorded.iter().map(|(_, b)| b.to_vec()).collect();
    let total = lines.len();
    let rate = args.rate;
    let produce = tokio::spawn(async move {
        let start = Instant::now();
        let mut acks = Vec::with_capacity(lines.len());
        for (i, bytes) in lines.iter().enumerate() {
            if rate > 0 {
                let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
                tokio::time::sleep_until(due.into()).await;
            }
            let key = user_key(bytes).unwrap_or_default();
            acks.push(crate::serve::send(&producer, &input_topic, &key, bytes, None).await?);
        }
        for ack in acks {
            ack.await
                .map_err(|_| anyhow::anyhow!("producer dropped"))?
                .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
        }
        anyhow::Ok(start.elapsed())
    });

    eprintln!(
        "demo: streaming {total} events from {} at {} events/s\n",
        args.data.display(),
        if rate == 0 { "max".into() } else { rate.to_string() }
    );
    let mut live: HashMap<String, Decision> = HashMap::new();
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut latencies = Vec::with_capacity(total);
    let started = Instant::now();
    let deadline = Duration::from_secs(120 + total as u64 / 100);
    while live.len() + dead.len() < total {
        let msg = match tokio::time::timeout(Duration::from_secs(30), watcher.recv()).await {
            Ok(m) => m?,
            Err(_) => bail!("no output for 30 s with {} of {total} inputs answered", live.len() + dead.len()),
        };
        if started.elapsed() > deadline {
            bail!("demo timed out with {} of {total} inputs answered", live.len() + dead.len());
        }
        let body = msg.payload().unwrap_or_default();
        if msg.topic() == k.decision_topic {
            let d: Decision = serde_json::from_slice(body)?;
            latencies.push(d.latency_us);
            if !args.flagged_only || d.action.severity() > 0 {
                println!("{}", line(&d));
            }
            live.insert(d.event_id.clone(), d);
        } else {
            let dl: DeadLetter = serde_json::from_slice(body)?;
            println!(
                "dead letter: {:<26} at {} ({})",
                dl.reason.as_str(),
                dl.field.as_deref().unwrap_or("-"),
                dl.detail
            );
            dead.push(dl);
        }
    }
    let wall = started.elapsed();
    produce.await??;
    let _ = stop_tx.send(());
    let stats = engine.await??;

    if let Some(path) = &args.out {
        let mut w =
            std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("{}", path.display()))?);
        let mut all: Vec<&Decision> = live.values().collect();
        all.sort_by(|a, b| (&a.event_time, &a.event_id).cmp(&(&b.event_time, &b.event_id)));
        for d in all {
            serde_json::to_writer(&mut w, d)?;
            std::io::Write::write_all(&mut w, b"\n")?;
        }
    }

    // The same file through the replay driver must give the same decisions.
    let mut replay_pipeline = Pipeline::new(deployment, keys, &cfg.engine)?;
    let (mut same, mut differ) = (0, 0);
    for (line_no, bytes) in recorded.iter() {
        if let Outcome::Decision(d) =
            replay_pipeline.process(bytes, || riskd_core::SourcePosition::File { path: String::new(), line: line_no })
        {
            match live.get(&d.event_id) {
                Some(l) if l.without_timing() == d.without_timing() => same += 1,
                _ => differ += 1,
            }
        }
    }

    latencies.sort_unstable();
    let mut by_action: BTreeMap<&str, u64> = BTreeMap::new();
    for d in live.values() {
        *by_action.entry(d.action.as_str()).or_default() += 1;
    }
    let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &dead {
        *by_reason.entry(d.reason.as_str()).or_default() += 1;
    }
    let fmt = |m: &BTreeMap<&str, u64>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    println!("\n=== summary ===");
    println!(
        "inputs {total}: {} decisions on {}, {} dead letters on {}",
        live.len(),
        k.decision_topic,
        dead.len(),
        k.dead_letter_topic
    );
    println!("engine: consumed {}, decided {}, dead-lettered {}", stats.consumed, stats.decisions, stats.dead_letters);
    println!("actions: {}", fmt(&by_action));
    if !by_reason.is_empty() {
        println!("dead letters: {}", fmt(&by_reason));
    }
    println!(
        "in-engine latency: p50 {}us  p99 {}us  max {}us;  {:.0} events/s over {:.1}s",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
        total as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!("replay check: {same} decisions identical to a file replay, {differ} different");
    Ok(differ == 0 && live.len() + dead.len() == total)
}
