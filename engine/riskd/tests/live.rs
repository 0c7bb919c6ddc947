//! End-to-end tests of `riskd serve` against a real tansu broker.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::message::Message;
use riskd_core::{DeadLetter, Decision, RejectReason};
use riskd_pipeline::CheckpointStore;
use riskd_testkit::{collect, create_topics, produce, produce_one_by_one, start_broker, text, unique_topic};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    brokers: String,
    input: String,
    decisions: String,
    dead: String,
    group: String,
}

impl Setup {
    fn new(brokers: String) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keys.toml"), riskd_core::KeyRing::generate_file("k1")).unwrap();
        Setup {
            dir,
            brokers,
            input: unique_topic("in"),
            decisions: unique_topic("dec"),
            dead: unique_topic("dlq"),
            group: unique_topic("grp"),
        }
    }

    fn riskd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_riskd"));
        c.current_dir(repo())
            .env("RISKD_PII_KEY_FILE", self.dir.path().join("keys.toml"))
            .env("RISKD_KAFKA_BROKERS", &self.brokers)
            .env("RISKD_KAFKA_INPUT_TOPICS", &self.input)
            .env("RISKD_KAFKA_DECISION_TOPIC", &self.decisions)
            .env("RISKD_KAFKA_DEAD_LETTER_TOPIC", &self.dead)
            .env("RISKD_KAFKA_GROUP_ID", &self.group)
            .env("RISKD_ENGINE_STATE_DIR", self.dir.path().join("state"))
            .env("RISKD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RISKD_LOG", "warn");
        c
    }

    /// `riskd serve` with its operations port on `http`, not yet started
    /// (a test adds its own settings, then [`Engine::start`]).
    fn serve_command(&self, http: &str) -> Command {
        let mut c = self.riskd();
        c.arg("serve").env("RISKD_HTTP_LISTEN", http).stdout(Stdio::null());
        c
    }

    fn serve(&self, http: &str) -> Engine {
        Engine::start(&mut self.serve_command(http))
    }

    /// `riskd serve` checkpointing every 100 ms into the state directory,
    /// its decisions carrying their feature values.
    fn serve_checkpointing(&self, http: &str) -> Command {
        let mut c = self.serve_command(http);
        c.env("RISKD_ENGINE_CHECKPOINT_INTERVAL_MS", "100").env("RISKD_ENGINE_INCLUDE_FEATURES", "true");
        c
    }
}

/// A free local address for an engine's operations port.
fn free_addr() -> String {
    format!("127.0.0.1:{}", riskd_kafka::local_broker::free_port().unwrap())
}

/// What the checkpoint tests restart over: 3,000 inputs of the sample
/// stream and the bad ones, produced one by one to a one-partition input
/// (so an uninterrupted run is a file replay in the same order), with the
/// ids of the events and users among them by the engine's own decoder.
struct Stream {
    lines: Vec<Vec<u8>>,
    event_ids: HashSet<String>,
    users: HashSet<String>,
    bad_inputs: usize,
}

impl Stream {
    async fn produce(s: &Setup) -> Stream {
        create_topics(&s.brokers, &[(&s.input, 1), (&s.decisions, 3), (&s.dead, 1)]).await;
        let (lines, _) = inputs(3000);
        produce_one_by_one(&s.brokers, &s.input, &lines, user_key).await;
        let decoder = riskd_core::Decoder::new(
            riskd_core::Limits::default(),
            riskd_core::KeyRing::load(&s.dir.path().join("keys.toml")).unwrap(),
        );
        let events: Vec<riskd_core::Event> = lines.iter().filter_map(|l| decoder.decode(l).ok()).collect();
        let event_ids: HashSet<String> = events.iter().map(|e| e.id.to_string()).collect();
        let users: HashSet<String> = events.iter().map(|e| e.entities.user_id.to_string()).collect();
        let bad_inputs = lines.len() - event_ids.len();
        assert!(bad_inputs >= 4, "the stream includes bad inputs");
        Stream { lines, event_ids, users, bad_inputs }
    }
}

/// A running `riskd serve`, killed if a failing test leaves it behind.
struct Engine(Child);

impl Engine {
    fn start(serve: &mut Command) -> Engine {
        Engine(serve.spawn().expect("start riskd serve"))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The sample stream in event-time order plus hostile inputs.
fn inputs(n: usize) -> (Vec<Vec<u8>>, usize) {
    let text = std::fs::read_to_string(repo().join("replay-data/events.jsonl")).unwrap();
    let mut lines: Vec<(i64, Vec<u8>)> = text
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let t = riskd_core::timefmt::parse_rfc3339_ms(v.get("event_time")?.as_str()?)?;
            Some((t, l.as_bytes().to_vec()))
        })
        .collect();
    lines.sort_by_key(|(t, _)| *t);
    let mut out: Vec<Vec<u8>> = lines.into_iter().take(n).map(|(_, l)| l).collect();
    let hostile = vec![
        b"{not json".to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],
        format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)).into_bytes(),
        br#"{"schema_version":1,"event_id":"bad-1","event_type":"loan_offer","event_time":"2026-10-01T00:00:00Z","entities":{"user_id":"u"},"payload":{}}"#.to_vec(),
    ];
    let extra = hostile.len();
    out.extend(hostile);
    (out, extra)
}

fn user_key(line: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["entities"]["user_id"].as_str().map(String::from))
        .unwrap_or_default()
}

/// The admin token the engines under test are given (RISKD_ADMIN_TOKEN).
const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123456789abcdef";

/// GET with the admin token (open endpoints ignore it).
fn http_get(addr: &str, path: &str) -> String {
    http_request(addr, &format!("GET {path}"), Some(ADMIN_TOKEN))
}

/// `request` is the method and path, e.g. `POST /admin/reload`.
fn http_request(addr: &str, request: &str, token: Option<&str>) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect ops port");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{request} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn wait_for_port(addr: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("ops port {addr} never opened");
}

fn sigterm(engine: &mut Engine) -> std::process::ExitStatus {
    let pid = engine.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    engine.0.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_decides_every_input_once_and_matches_replay() {
    let broker = start_broker();
    let s = Setup::new(broker.bootstrap());
    create_topics(&s.brokers, &[(&s.input, 1), (&s.decisions, 1), (&s.dead, 1)]).await;
    let (lines, hostile) = inputs(1500);
    produce(&s.brokers, &s.input, &lines, user_key).await;

    let http = free_addr();
    let mut serve = s.serve(&http);
    let outputs = collect(&s.brokers, &[&s.decisions, &s.dead], 1, lines.len(), Duration::from_secs(180));
    wait_for_port(&http);
    let metrics = http_get(&http, "/metrics");
    let health = http_get(&http, "/healthz");
    let ready = http_get(&http, "/readyz");
    let admin = http_get(&http, "/status");
    let anonymous = http_request(&http, "GET /status", None);
    let status = sigterm(&mut serve);
    assert!(status.success(), "serve should exit 0 on SIGTERM, got {status}");

    // Exactly one output per input.
    assert_eq!(outputs.len(), lines.len(), "every input must end as one decision or one dead letter");
    let mut live: HashMap<String, Decision> = HashMap::new();
    let mut dead: Vec<DeadLetter> = Vec::new();
    for m in &outputs {
        if m.topic() == s.decisions {
            let d: Decision = serde_json::from_str(text(m)).unwrap();
            assert_eq!(m.key(), Some(d.user_id.as_bytes()), "decisions are keyed by user id");
            assert!(live.insert(d.event_id.clone(), d).is_none(), "duplicate decision");
        } else {
            dead.push(serde_json::from_str(text(m)).unwrap());
        }
    }
    assert!(dead.len() >= hostile, "hostile inputs are dead-lettered");
    let offsets: HashSet<i64> = dead
        .iter()
        .map(|d| match &d.source {
            riskd_core::SourcePosition::Kafka { offset, .. } => *offset,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(offsets.len(), dead.len(), "one dead letter per bad input");
    let reasons: HashSet<RejectReason> = dead.iter().map(|d| d.reason).collect();
    for r in [RejectReason::BadJson, RejectReason::BadEncoding, RejectReason::Oversize, RejectReason::UnknownEventType]
    {
        assert!(reasons.contains(&r), "missing dead letter with reason {r}");
    }
    // Dead letters keep the original only encrypted.
    for d in &dead {
        assert!(!serde_json::to_string(d).unwrap().contains("xxxxxxxx"), "original bytes must be encrypted");
    }

    // The same inputs through `riskd replay` give the same decisions.
    let file = s.dir.path().join("inputs.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    for l in &lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
    drop(f);
    let out = s.dir.path().join("decisions.jsonl");
    let st = s.riskd().args(["replay", "--input"]).arg(&file).arg("--out").arg(&out).status().unwrap();
    assert!(st.success());
    let replayed: Vec<Decision> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(replayed.len(), live.len());
    let replay_dead: Vec<DeadLetter> = std::fs::read_to_string(out.with_extension("dead-letters.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut live_reasons: Vec<_> = dead.iter().map(|d| (d.reason, d.field.clone(), d.event_id.clone())).collect();
    let mut replay_reasons: Vec<_> =
        replay_dead.iter().map(|d| (d.reason, d.field.clone(), d.event_id.clone())).collect();
    live_reasons.sort_by_key(|r| format!("{r:?}"));
    replay_reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(live_reasons, replay_reasons, "live and replay dead-letter the same inputs for the same reasons");
    for d in &replayed {
        let l = live.get(&d.event_id).unwrap_or_else(|| panic!("no live decision for {}", d.event_id));
        assert_eq!(l.without_timing(), d.without_timing());
    }

    // A backtest's baseline decides these inputs exactly as serve did.
    let report = s.dir.path().join("backtest");
    let st = s
        .riskd()
        .args(["backtest", "--decisions", "--labels", "replay-data/labels.csv", "--input"])
        .arg(&file)
        .arg("--out-dir")
        .arg(&report)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let baseline: Vec<Decision> = std::fs::read_to_string(report.join("baseline.decisions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(baseline.len(), live.len(), "the backtest decides every input serve decided");
    for d in &baseline {
        let l = live.get(&d.event_id).unwrap_or_else(|| panic!("no live decision for {}", d.event_id));
        assert_eq!(l.without_timing(), d.without_timing(), "backtest baseline against serve for {}", d.event_id);
    }

    // Operations surface.
    assert!(health.contains("200 OK") && health.ends_with("ok\n"), "{health}");
    assert!(ready.contains("200 OK"), "{ready}");
    assert!(admin.contains("200 OK") && admin.contains("\"rule_set\""), "{admin}");
    assert!(anonymous.contains("401 Unauthorized"), "/status needs the admin token: {anonymous}");
    assert!(metrics.contains("risk_events_total{event_type=\"loan_application\"}"), "{metrics}");
    assert!(metrics.contains("risk_dead_letters_total{reason=\"bad_json\"} 1"), "{metrics}");
    assert!(metrics.contains("risk_stage_latency_seconds_bucket{stage=\"features\""), "{metrics}");
    // Rule-hit counters agree with the rule reasons in the decisions.
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("risk_rule_hits_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let reasons = live.values().flat_map(|d| &d.reasons).filter(|r| r.source == riskd_core::ReasonSource::Rule).count();
    assert!(reasons > 0);
    assert_eq!(counted as usize, reasons, "risk_rule_hits_total sums to the rule hits in the decisions");
}

/// SIGKILL mid-stream, restart: the engine resumes from its checkpoint, so
/// every input still gets a decision, and every decision (feature values
/// included) equals an uninterrupted run's: state is neither lost nor
/// double-counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_resumes_from_its_checkpoint_as_if_uninterrupted() {
    let broker = start_broker();
    let s = Setup::new(broker.bootstrap());
    let Stream { lines, event_ids, users, bad_inputs } = Stream::produce(&s).await;
    let state_dir = s.dir.path().join("state");
    // Slow the first run down so the kill lands mid-stream.
    let mut first = Engine::start(s.serve_checkpointing(&free_addr()).env("RISKD_KAFKA_MAX_IN_FLIGHT", "1"));
    let some = collect(&s.brokers, &[&s.decisions], 3, 600, Duration::from_secs(180));
    assert!(some.len() >= 600, "engine made progress before the kill");
    assert!(state_dir.join("state.ckpt").exists(), "a checkpoint was written while serving");
    first.0.kill().unwrap(); // SIGKILL: no drain, no final commit, no final checkpoint
    first.0.wait().unwrap();
    let before_restart = collect(&s.brokers, &[&s.decisions], 3, usize::MAX, Duration::from_secs(3)).len();
    assert!(before_restart < event_ids.len(), "the kill landed mid-stream ({before_restart} decisions)");

    let http2 = free_addr();
    // tansu 0.6 does not expire a SIGKILLed member: it keeps the dead
    // member's partitions in the group. So the restarted engine joins under a
    // new group id; the checkpoint's offsets, not the group's committed ones,
    // say where it resumes. (On Apache Kafka the dead member expires after
    // session.timeout.ms and the same group can be kept.)
    let mut second =
        Engine::start(s.serve_checkpointing(&http2).env("RISKD_KAFKA_GROUP_ID", format!("{}-restarted", s.group)));
    // Collect until every input has a decision (duplicates are allowed).
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut by_event: HashMap<String, Vec<Decision>> = HashMap::new();
    loop {
        let outputs = collect(&s.brokers, &[&s.decisions], 3, usize::MAX, Duration::from_secs(3));
        by_event.clear();
        for m in &outputs {
            let d: Decision = serde_json::from_str(text(m)).unwrap();
            by_event.entry(d.event_id.clone()).or_default().push(d);
        }
        if event_ids.iter().all(|e| by_event.contains_key(e)) || std::time::Instant::now() > deadline {
            break;
        }
    }
    // The feature-state gauges, as the latest checkpoint (every 100 ms)
    // published them: every entity kind has both, user entities are among
    // the users the inputs name, and no table is fuller than 15/16.
    std::thread::sleep(Duration::from_millis(500));
    let metrics = http_get(&http2, "/metrics");
    let gauge = |name: &str| -> HashMap<String, f64> {
        let prefix = format!("{name}{{entity=\"");
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (entity, value) = rest.split_once("\"} ")?;
                Some((entity.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    };
    let (entities, slots) = (gauge("risk_feature_entities"), gauge("risk_feature_table_slots"));
    let held = entities.get("user").copied().unwrap_or(0.0);
    assert!(held > 0.0 && held <= users.len() as f64, "{held} user entities for {} users:\n{metrics}", users.len());
    assert_eq!(entities.keys().collect::<HashSet<_>>(), slots.keys().collect::<HashSet<_>>(), "{metrics}");
    for (kind, n) in &entities {
        // A power of two, or three times one while the table resizes.
        let s = slots[kind] as usize;
        assert!(s.is_power_of_two() || (s.is_multiple_of(3) && (s / 3).is_power_of_two()), "{kind}: {s} slots");
        assert!(*n as usize * 16 <= s * 15, "{kind}: {n} entities in {s} slots");
    }
    assert!(sigterm(&mut second).success());
    let missing: Vec<&String> = event_ids.iter().filter(|e| !by_event.contains_key(*e)).collect();
    assert!(missing.is_empty(), "{} inputs have no decision, e.g. {:?}", missing.len(), missing.first());
    let dead = collect(&s.brokers, &[&s.dead], 1, usize::MAX, Duration::from_secs(3));
    let dead_inputs: HashSet<(i32, i64)> = dead
        .iter()
        .map(|m| match serde_json::from_str::<DeadLetter>(text(m)).unwrap().source {
            riskd_core::SourcePosition::Kafka { partition, offset, .. } => (partition, offset),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(dead_inputs.len(), bad_inputs, "every bad input has a dead letter");

    let mut compared = 0;
    for want in uninterrupted(&s, &lines) {
        for got in &by_event[&want.event_id] {
            assert_eq!(got.without_timing(), want.without_timing(), "event {} after the restart", want.event_id);
            compared += 1;
        }
    }
    assert!(compared >= event_ids.len());
}

/// The uninterrupted run: the same inputs in the same order through
/// `riskd replay`, each decision carrying its feature values.
fn uninterrupted(s: &Setup, lines: &[Vec<u8>]) -> Vec<Decision> {
    let file = s.dir.path().join("inputs.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    for l in lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
    drop(f);
    let out = s.dir.path().join("decisions.jsonl");
    let st = s
        .riskd()
        .env("RISKD_ENGINE_INCLUDE_FEATURES", "true")
        .args(["replay", "--input"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let decisions: Vec<Decision> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for d in &decisions {
        assert!(d.features.as_ref().is_some_and(|f| !f.is_empty()), "decisions carry their features");
    }
    decisions
}

/// Decisions and dead letters on the output topics so far.
fn outputs_so_far(s: &Setup) -> usize {
    collect(&s.brokers, &[&s.decisions], 3, usize::MAX, Duration::from_secs(3)).len()
        + collect(&s.brokers, &[&s.dead], 1, usize::MAX, Duration::from_secs(3)).len()
}

/// The input offset the checkpoint in `dir` reflects (its one input partition).
fn checkpoint_offset(dir: &Path) -> i64 {
    let meta = CheckpointStore::new(dir).meta().unwrap().expect("a checkpoint");
    let offsets = meta.partitions().expect("well-formed partition keys");
    assert_eq!(offsets.len(), 1, "one input partition: {offsets:?}");
    offsets[0].1
}

/// A graceful stop, then a start from an older checkpoint in the same
/// consumer group (as after a crash between two checkpoints, or when the
/// last checkpoint could not be written): the inputs between the checkpoint
/// and the group's committed offset were published before the stop, so
/// they rebuild the feature state without being published again. Every
/// input ends as exactly one output, and every decision (feature values
/// included) equals an uninterrupted run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_behind_the_committed_offset_rebuilds_state_without_publishing_twice() {
    let broker = start_broker();
    let s = Setup::new(broker.bootstrap());
    let Stream { lines, event_ids, bad_inputs, .. } = Stream::produce(&s).await;
    let state_dir = s.dir.path().join("state");
    // The first run goes slowly (one output in flight), so it can be
    // stopped mid-stream.
    let mut first = Engine::start(s.serve_checkpointing(&free_addr()).env("RISKD_KAFKA_MAX_IN_FLIGHT", "1"));
    let early = collect(&s.brokers, &[&s.decisions], 3, 600, Duration::from_secs(180));
    assert!(early.len() >= 600, "engine made progress");
    let older = s.dir.path().join("older");
    std::fs::create_dir(&older).unwrap();
    std::fs::copy(state_dir.join("state.ckpt"), older.join("state.ckpt"))
        .expect("a checkpoint was written while serving");
    let later = collect(&s.brokers, &[&s.decisions], 3, 1200, Duration::from_secs(180));
    assert!(later.len() >= 1200, "engine went on");
    // SIGTERM: outputs in flight are drained, the group's offset committed,
    // and a last checkpoint written where the engine stopped.
    assert!(sigterm(&mut first).success());
    let published = outputs_so_far(&s);
    assert!(published < lines.len(), "the stop landed mid-stream ({published} outputs)");
    // One partition, every output acknowledged before the commit: the
    // committed offset is the number of outputs.
    let behind = checkpoint_offset(&older);
    assert!(behind < published as i64, "the older checkpoint ({behind}) is behind the committed offset ({published})");
    assert!(checkpoint_offset(&state_dir) >= published as i64, "the stop checkpointed");
    std::fs::copy(older.join("state.ckpt"), state_dir.join("state.ckpt")).unwrap();

    let mut second = Engine::start(&mut s.serve_checkpointing(&free_addr()));
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut outputs = 0;
    while outputs < lines.len() && std::time::Instant::now() < deadline {
        outputs = outputs_so_far(&s);
    }
    // Time for any output published twice to arrive too.
    std::thread::sleep(Duration::from_secs(2));
    assert!(sigterm(&mut second).success());
    let decisions =
        decisions_of(&collect(&s.brokers, &[&s.decisions], 3, usize::MAX, Duration::from_secs(3)), &s.decisions);
    let dead = collect(&s.brokers, &[&s.dead], 1, usize::MAX, Duration::from_secs(3));
    let mut by_event: HashMap<String, Decision> = HashMap::new();
    for d in decisions {
        let id = d.event_id.clone();
        assert!(by_event.insert(id.clone(), d).is_none(), "event {id} was decided and published twice");
    }
    assert_eq!(by_event.len(), event_ids.len(), "every input has its decision");
    assert_eq!(dead.len(), bad_inputs, "one dead letter per bad input, none published twice");
    for want in uninterrupted(&s, &lines) {
        let got = &by_event[&want.event_id];
        assert_eq!(got.without_timing(), want.without_timing(), "event {} after the restart", want.event_id);
    }
}

fn decisions_of(outputs: &[rdkafka::message::OwnedMessage], topic: &str) -> Vec<Decision> {
    outputs.iter().filter(|m| m.topic() == topic).map(|m| serde_json::from_str(text(m)).unwrap()).collect()
}

fn wait_for_metric(http: &str, needles: &[&str]) {
    for _ in 0..300 {
        let m = http_get(http, "/metrics");
        if m.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("metric line with {needles:?} never appeared:\n{}", http_get(http, "/metrics"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_while_serving_without_losing_or_repeating_decisions() {
    let broker = start_broker();
    let s = Setup::new(broker.bootstrap());
    create_topics(&s.brokers, &[(&s.input, 1), (&s.decisions, 1), (&s.dead, 1)]).await;
    // A private copy of the rules, edited while the engine serves.
    let rules = s.dir.path().join("rules");
    for sub in ["", "lists", "tests"] {
        std::fs::create_dir_all(rules.join(sub)).unwrap();
        for e in std::fs::read_dir(repo().join("rules").join(sub)).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), rules.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    let (lines, hostile) = inputs(3000);
    let lines = &lines[..lines.len() - hostile];
    let (a, rest) = lines.split_at(1000);
    let (b, c) = rest.split_at(1000);

    let http = free_addr();
    let mut serve = Engine::start(
        s.serve_command(&http)
            .env("RISKD_ENGINE_RULES_DIR", &rules)
            .env("RISKD_ENGINE_RULES_RELOAD_INTERVAL_MS", "200"),
    );
    produce(&s.brokers, &s.input, a, user_key).await;
    let after_a = collect(&s.brokers, &[&s.decisions, &s.dead], 1, a.len(), Duration::from_secs(120));
    assert_eq!(after_a.len(), a.len());
    wait_for_port(&http);

    // A valid change: every login alerts. It compiles and the analyst tests still pass.
    let velocity = rules.join("velocity.toml");
    let original = std::fs::read_to_string(&velocity).unwrap();
    let added = "\n[[rule]]\nid = \"R990\"\ndescription = \"Reload check\"\nowner = \"test\"\nseverity = 10\nmode = \"active\"\nevents = [\"login\"]\nwhen = \"event.hour_of_day >= 0\"\naction = \"alert\"\nreason = \"RELOAD_CHECK\"\n";
    std::fs::write(&velocity, format!("{original}{added}")).unwrap();
    wait_for_metric(&http, &["risk_reloads_total", "outcome=\"applied\"", "} 1"]);
    produce(&s.brokers, &s.input, b, user_key).await;
    let after_b = collect(&s.brokers, &[&s.decisions, &s.dead], 1, a.len() + b.len(), Duration::from_secs(120));
    assert_eq!(after_b.len(), a.len() + b.len());

    // An invalid change is refused; the previous rules keep serving.
    std::fs::write(
        &velocity,
        format!("{original}{}", added.replace("event.hour_of_day >= 0", "event.hour_of_dya >= 0")),
    )
    .unwrap();
    wait_for_metric(&http, &["risk_reloads_total", "outcome=\"rejected\"", "} 1"]);
    let status = http_get(&http, "/status");
    let body: serde_json::Value = serde_json::from_str(status.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["reload"]["applied"], 1, "{body}");
    assert_eq!(body["reload"]["rejected"], 1, "{body}");
    assert_eq!(body["reload"]["last_outcome"], "rejected", "{body}");
    let why = body["reload"]["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("unknown name `event.hour_of_dya`") && why.contains("did you mean `event.hour_of_day`?"),
        "{why}"
    );
    produce(&s.brokers, &s.input, c, user_key).await;
    let all = collect(&s.brokers, &[&s.decisions, &s.dead], 1, lines.len(), Duration::from_secs(120));
    assert!(sigterm(&mut serve).success());

    assert_eq!(all.len(), lines.len(), "one output per input across both reloads");
    let decisions = decisions_of(&all, &s.decisions);
    let ids: HashSet<&str> = decisions.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids.len(), decisions.len(), "no input decided twice");
    let id_of =
        |l: &Vec<u8>| serde_json::from_slice::<serde_json::Value>(l).unwrap()["event_id"].as_str().unwrap().to_string();
    let batch = |ls: &[Vec<u8>]| -> Vec<&Decision> {
        let want: HashSet<String> = ls.iter().map(id_of).collect();
        decisions.iter().filter(|d| want.contains(&d.event_id)).collect()
    };
    let (da, db, dc) = (batch(a), batch(b), batch(c));
    let version = |ds: &[&Decision]| ds.iter().map(|d| d.versions.rule_set.clone()).collect::<HashSet<_>>();
    assert_eq!(version(&da).len(), 1);
    assert_eq!(version(&db).len(), 1);
    assert_ne!(version(&da), version(&db), "decisions after the reload carry the new rule-set version");
    assert_eq!(version(&db), version(&dc), "the refused change did not replace the rules in force");
    let r990 = |ds: &[&Decision]| ds.iter().filter(|d| d.reasons.iter().any(|r| r.id == "R990")).count();
    let logins = |ds: &[&Decision]| ds.iter().filter(|d| d.event_type == riskd_core::EventKind::Login).count();
    assert!(logins(&db) > 0 && logins(&dc) > 0);
    assert_eq!(r990(&da), 0, "the new rule did not act before it was loaded");
    assert_eq!(r990(&db), logins(&db), "the new rule acts on every login after the reload");
    assert_eq!(r990(&dc), logins(&dc), "the old rules keep serving after a refused change");
}

/// Probabilities `riskd replay` gives the labelled inputs with `model_dir`.
fn replay_probabilities(s: &Setup, lines: &[Vec<u8>], model_dir: &Path) -> HashMap<String, f64> {
    let input = s.dir.path().join(format!("replay-{}.jsonl", unique_topic("in")));
    let out = input.with_extension("out.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    for l in lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
    drop(f);
    let status = s
        .riskd()
        .args(["replay", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--dead-letters")
        .arg(input.with_extension("dl.jsonl"))
        .env("RISKD_ENGINE_MODELS", model_dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Decision>(l).unwrap())
        .filter_map(|d| d.probability.map(|p| (d.event_id, p)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_hot_swap_while_serving_without_losing_or_repeating_decisions() {
    let broker = start_broker();
    let s = Setup::new(broker.bootstrap());
    create_topics(&s.brokers, &[(&s.input, 1), (&s.decisions, 1), (&s.dead, 1)]).await;
    // The model directory the engine serves, and the next version trained aside.
    let live = s.dir.path().join("a_card");
    let next = s.dir.path().join("a_card_next");
    for dir in [&live, &next] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(repo().join("models/a_card/manifest.toml"), dir.join("manifest.toml")).unwrap();
    }
    std::fs::copy(repo().join("models/a_card/model.txt"), live.join("model.txt")).unwrap();
    let manifest = std::fs::read_to_string(next.join("manifest.toml")).unwrap();
    std::fs::write(next.join("manifest.toml"), manifest.replace("2026.11.0", "2026.12.0")).unwrap();
    let trained = s
        .riskd()
        .args(["train", "--events", "replay-data/events.jsonl", "--labels", "replay-data/labels.csv", "--model-dir"])
        .arg(&next)
        .args(["--params", r#"{"num_leaves": 4}"#])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(trained.success());

    let (lines, hostile) = inputs(3000);
    let lines = &lines[..lines.len() - hostile];
    let (a, rest) = lines.split_at(1000);
    let (b, c) = rest.split_at(1000);
    let http = free_addr();
    let mut serve = Engine::start(
        s.serve_command(&http).env("RISKD_ENGINE_MODELS", &live).env("RISKD_ENGINE_MODELS_RELOAD_INTERVAL_MS", "200"),
    );
    produce(&s.brokers, &s.input, a, user_key).await;
    let after_a = collect(&s.brokers, &[&s.decisions, &s.dead], 1, a.len(), Duration::from_secs(120));
    assert_eq!(after_a.len(), a.len());
    wait_for_port(&http);

    // A bad version (infinite points scale): refused, the old model serves on.
    std::fs::write(live.join("manifest.toml"), manifest.replace("pdo = 40", "pdo = inf")).unwrap();
    wait_for_metric(&http, &["risk_reloads_total", "what=\"models\"", "outcome=\"rejected\"", "} 1"]);
    let status = http_get(&http, "/status");
    let body: serde_json::Value = serde_json::from_str(status.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["model_reload"]["last_outcome"], "rejected", "{body}");
    let why = body["model_reload"]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("invalid manifest: scaling needs base_odds > 0 and pdo > 0"), "{why}");
    assert_eq!(body["models"][0]["manifest_version"], "2026.11.0", "{body}");
    produce(&s.brokers, &s.input, b, user_key).await;
    let after_b = collect(&s.brokers, &[&s.decisions, &s.dead], 1, a.len() + b.len(), Duration::from_secs(120));
    assert_eq!(after_b.len(), a.len() + b.len());

    // The new version, model file first: swapped in.
    std::fs::copy(next.join("model.txt"), live.join("model.txt")).unwrap();
    std::fs::copy(next.join("manifest.toml"), live.join("manifest.toml")).unwrap();
    wait_for_metric(&http, &["risk_reloads_total", "what=\"models\"", "outcome=\"applied\"", "} 1"]);
    let status = http_get(&http, "/status");
    let body: serde_json::Value = serde_json::from_str(status.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["models"][0]["manifest_version"], "2026.12.0", "{body}");
    assert!(body["model_reload"]["last_error"].is_null(), "{body}");
    produce(&s.brokers, &s.input, c, user_key).await;
    let all = collect(&s.brokers, &[&s.decisions, &s.dead], 1, lines.len(), Duration::from_secs(120));
    assert!(sigterm(&mut serve).success());

    assert_eq!(all.len(), lines.len(), "one output per input across both model reloads");
    let decisions = decisions_of(&all, &s.decisions);
    let ids: HashSet<&str> = decisions.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids.len(), decisions.len(), "no input decided twice");
    let id_of =
        |l: &Vec<u8>| serde_json::from_slice::<serde_json::Value>(l).unwrap()["event_id"].as_str().unwrap().to_string();
    let batch = |ls: &[Vec<u8>]| -> Vec<&Decision> {
        let want: HashSet<String> = ls.iter().map(id_of).collect();
        decisions.iter().filter(|d| want.contains(&d.event_id) && d.probability.is_some()).collect()
    };
    let (da, db, dc) = (batch(a), batch(b), batch(c));
    assert!(!da.is_empty() && !db.is_empty() && !dc.is_empty());
    let version = |ds: &[&Decision]| {
        ds.iter().map(|d| (d.versions.model.clone(), d.model.as_ref().unwrap().version.clone())).collect::<HashSet<_>>()
    };
    assert_eq!(version(&da).len(), 1);
    assert_eq!(version(&da), version(&db), "the refused version did not replace the model in force");
    assert_eq!(version(&dc).len(), 1);
    assert_ne!(version(&db), version(&dc), "decisions after the swap carry the new model version");
    // Each decision's probability is what a file replay gives with the model
    // version that made it.
    let old = replay_probabilities(&s, lines, &repo().join("models/a_card"));
    let new = replay_probabilities(&s, lines, &next);
    for d in da.iter().chain(&db) {
        assert_eq!(d.probability, old.get(&d.event_id).copied(), "{}", d.event_id);
    }
    for d in &dc {
        assert_eq!(d.probability, new.get(&d.event_id).copied(), "{}", d.event_id);
    }
}
