//! The one pass: every input goes through the baseline's and the
//! candidate's pipeline halves, and comes out as one [`Row`] holding both
//! outcomes, in input order.
//!
//! Threads, as in `riskd replay`: one thread reads and decodes the input and
//! runs the feature state (one [`Intake`] when both configurations use the
//! same feature set and limits, otherwise one per configuration; an intake
//! must see every input in order); two workers, each with a baseline and a
//! candidate [`Decider`], take batches alternately; the caller's sink runs
//! on its own thread and takes the batches back alternately, which restores
//! input order.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use riskd_core::{Action, DeadLetter, Decision, Event, EventKind, KeyRing, ReasonSource, RejectReason, SourcePosition};
use riskd_features::FeatureVector;
use riskd_pipeline::config::EngineConfig;
use riskd_pipeline::pipeline::{Decider, Intake};
use riskd_pipeline::replay::open_input;
use riskd_pipeline::{Deployment, Pipeline};
use riskd_rules::RuleInfo;

/// The two configurations, in the order every pair in this crate uses.
pub const SIDES: [&str; 2] = ["baseline", "candidate"];

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("the {which} configuration does not load ({count} problem(s)):\n{message}")]
    Load { which: &'static str, count: usize, message: String },
    #[error("the {which} configuration's models cannot be prepared: {message}")]
    Model { which: &'static str, message: String },
    /// The labels file cannot be read or has a bad line (the message names it, and the line).
    #[error("labels: {0}")]
    Labels(String),
    #[error("{path}: {source}")]
    Output { path: String, source: io::Error },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One configuration's outcome for one input.
#[derive(Clone, Debug, PartialEq)]
pub enum SideOutcome {
    Decided(Decided),
    DeadLetter(RejectReason),
}

impl SideOutcome {
    /// The action's name, or `dead_letter`.
    pub fn action_name(&self) -> &'static str {
        match self {
            SideOutcome::Decided(d) => d.action.as_str(),
            SideOutcome::DeadLetter(_) => "dead_letter",
        }
    }

    pub fn decided(&self) -> Option<&Decided> {
        match self {
            SideOutcome::Decided(d) => Some(d),
            SideOutcome::DeadLetter(_) => None,
        }
    }
}

/// What the report needs of a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    pub action: Action,
    pub score: Option<f64>,
    /// (model name, probability of bad) of the deciding model, then of the
    /// shadow model when there is one.
    pub models: Vec<(String, f64)>,
    /// Rule hits (active and shadow), as indexes into the configuration's
    /// rule catalog ([`Backtest::catalog`]).
    pub hits: Vec<u32>,
}

/// One input with both configurations' outcomes.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// 1-based line number in the input.
    pub line: u64,
    pub event_id: Option<String>,
    pub event_type: Option<EventKind>,
    /// The event time as decisions write it (RFC 3339, UTC); `None` for dead letters.
    pub event_time: Option<String>,
    /// `Some(true)` bad, `Some(false)` good, `None` unlabelled.
    pub label: Option<bool>,
    pub sides: [SideOutcome; 2],
    /// The decision records as JSON lines, when asked for.
    pub records: [Option<Vec<u8>>; 2],
}

/// Inputs per batch handed between threads.
const BATCH: usize = 512;
const QUEUE_BATCHES: usize = 8;

/// The two configurations, loaded and prepared.
pub struct Backtest {
    pipelines: [Pipeline; 2],
    shared_intake: bool,
    catalogs: [Arc<Vec<RuleInfo>>; 2],
}

impl Backtest {
    /// Loads both deployments (every problem of either is reported, naming
    /// the configuration) and prepares a pipeline for each. `keys` is used
    /// by both, so both hash entity keys alike.
    pub fn new(configs: [&EngineConfig; 2], keys: &KeyRing) -> Result<Backtest, BacktestError> {
        let load = |i: usize| {
            Deployment::load(configs[i]).map(Arc::new).map_err(|e| BacktestError::Load {
                which: SIDES[i],
                count: e.count(),
                message: e.to_string(),
            })
        };
        let deployments = [load(0)?, load(1)?];
        let pipeline = |i: usize| {
            Pipeline::new(deployments[i].clone(), keys.clone(), configs[i])
                .map_err(|e| BacktestError::Model { which: SIDES[i], message: e.to_string() })
        };
        let pipelines = [pipeline(0)?, pipeline(1)?];
        let shared_intake = deployments[0].features.version == deployments[1].features.version
            && configs[0].max_event_bytes == configs[1].max_event_bytes;
        let catalogs = [0, 1].map(|i| Arc::new(deployments[i].rules().rules.rules().to_vec()));
        Ok(Backtest { pipelines, shared_intake, catalogs })
    }

    /// Whether one intake (decode and feature state) feeds both configurations.
    pub fn shares_intake(&self) -> bool {
        self.shared_intake
    }

    /// Every rule of a configuration (0 baseline, 1 candidate), disabled ones included.
    pub fn catalog(&self, side: usize) -> &[RuleInfo] {
        &self.catalogs[side]
    }

    pub fn deployment(&self, side: usize) -> &Arc<Deployment> {
        self.pipelines[side].deployment()
    }

    /// Streams `input` (JSONL, optionally gzip) once, in file order, through
    /// both configurations, and hands every input's [`Row`] to `sink` in
    /// input order. `labels` maps event ids to bad (1) or good (0).
    /// `records`: also encode each decision record as a JSON line.
    /// `progress` is called about every second with (inputs, elapsed).
    pub fn run(
        &mut self,
        input: &Path,
        labels: &HashMap<String, f32>,
        records: bool,
        mut sink: impl FnMut(Row) -> io::Result<()> + Send,
        mut progress: impl FnMut(u64, Duration) + Send,
    ) -> Result<u64, BacktestError> {
        let reader = open_input(input)?;
        let shown = input.display().to_string();
        let shared = self.shared_intake;
        let catalogs = self.catalogs.clone();
        let [p0, p1] = &mut self.pipelines;
        let (i0, d0) = p0.halves();
        let (i1, d1) = p1.halves();
        let model_err =
            |i: usize, e: &dyn std::fmt::Display| BacktestError::Model { which: SIDES[i], message: e.to_string() };
        let mut second = [d0.another().map_err(|e| model_err(0, &e))?, d1.another().map_err(|e| model_err(1, &e))?];
        let widths = [i0.feature_engine().feature_set().len(), i1.feature_engine().feature_set().len()];
        let started = Instant::now();
        let n = std::thread::scope(|scope| -> Result<u64, BacktestError> {
            let (a_tx, a_rx) = mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
            let (b_tx, b_rx) = mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
            let (a_out_tx, a_out_rx) = mpsc::sync_channel::<Vec<Row>>(QUEUE_BATCHES);
            let (b_out_tx, b_out_rx) = mpsc::sync_channel::<Vec<Row>>(QUEUE_BATCHES);
            let shown = shown.as_str();
            let spawn = |name: &str| std::thread::Builder::new().name(format!("backtest-{name}"));
            let intakes = if shared { Intakes::Shared(i0) } else { Intakes::Two(i0, i1) };
            let reading = spawn("intake")
                .spawn_scoped(scope, move || intake_loop(intakes, reader, shown, widths, [a_tx, b_tx]))?;
            let cat_b = catalogs.clone();
            let deciding = spawn("decide").spawn_scoped(scope, move || {
                let [s0, s1] = &mut second;
                decide_loop([s0, s1], &cat_b, widths, labels, records, b_rx, b_out_tx)
            })?;
            let writing = spawn("output").spawn_scoped(scope, move || -> io::Result<u64> {
                let mut n = 0u64;
                let mut last = Instant::now();
                let rx = [a_out_rx, b_out_rx];
                for k in 0.. {
                    let Ok(rows) = rx[k % 2].recv() else { break };
                    for row in rows {
                        sink(row)?;
                        n += 1;
                    }
                    if last.elapsed() >= Duration::from_secs(1) {
                        last = Instant::now();
                        progress(n, started.elapsed());
                    }
                }
                Ok(n)
            })?;
            decide_loop([d0, d1], &catalogs, widths, labels, records, a_rx, a_out_tx);
            let panicked = |what: &str| io::Error::other(format!("the backtest {what} thread panicked"));
            deciding.join().map_err(|_| panicked("decide"))?;
            let written = writing.join().unwrap_or_else(|_| Err(panicked("output")));
            let read = reading.join().unwrap_or_else(|_| Err(panicked("intake")));
            read?;
            Ok(written?)
        })?;
        Ok(n)
    }
}

enum Intakes<'a> {
    Shared(&'a mut Intake),
    Two(&'a mut Intake, &'a mut Intake),
}

/// One input after the intake(s). Events are the common case and stay unboxed.
#[allow(clippy::large_enum_variant)]
enum Admit {
    Event(Event),
    Dead {
        reason: RejectReason,
        event_id: Option<String>,
        event_type: Option<EventKind>,
    },
    /// The candidate shares the baseline's intake: same event, same feature values.
    Same,
}

impl Admit {
    fn from(r: Result<Event, DeadLetter>) -> Admit {
        match r {
            Ok(ev) => Admit::Event(ev),
            Err(dl) => Admit::Dead { reason: dl.reason, event_id: dl.event_id, event_type: dl.event_type },
        }
    }
}

struct Batch {
    items: Vec<(u64, [Admit; 2])>,
    /// Feature values of each side's admitted events, `width` per event, in order.
    values: [Vec<f64>; 2],
}

impl Batch {
    fn new(widths: [usize; 2]) -> Batch {
        Batch {
            items: Vec::with_capacity(BATCH),
            values: [Vec::with_capacity(BATCH * widths[0]), Vec::with_capacity(BATCH * widths[1])],
        }
    }
}

fn intake_loop(
    mut intakes: Intakes<'_>,
    mut input: Box<dyn BufRead + Send>,
    shown: &str,
    widths: [usize; 2],
    tx: [mpsc::SyncSender<Batch>; 2],
) -> io::Result<()> {
    let mut fv = FeatureVector::default();
    let mut batch = Batch::new(widths);
    let mut buf = Vec::with_capacity(4096);
    let (mut line_no, mut sent) = (0u64, 0usize);
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let mut line = buf.as_slice();
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l;
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let source = || SourcePosition::File { path: shown.to_string(), line: line_no };
        let mut admit = |intake: &mut Intake, values: &mut Vec<f64>| {
            let r = intake.decode(line, source);
            if let Ok(ev) = &r {
                intake.update_features(ev, &mut fv);
                values.extend_from_slice(&fv.0);
            }
            Admit::from(r)
        };
        let [v0, v1] = &mut batch.values;
        let admits = match &mut intakes {
            Intakes::Shared(i0) => [admit(i0, v0), Admit::Same],
            Intakes::Two(i0, i1) => [admit(i0, v0), admit(i1, v1)],
        };
        batch.items.push((line_no, admits));
        if batch.items.len() == BATCH {
            if tx[sent % 2].send(std::mem::replace(&mut batch, Batch::new(widths))).is_err() {
                return Ok(());
            }
            sent += 1;
        }
    }
    if !batch.items.is_empty() {
        let _ = tx[sent % 2].send(batch);
    }
    Ok(())
}

fn decide_loop(
    deciders: [&mut Decider; 2],
    catalogs: &[Arc<Vec<RuleInfo>>; 2],
    widths: [usize; 2],
    labels: &HashMap<String, f32>,
    records: bool,
    rx: mpsc::Receiver<Batch>,
    tx: mpsc::SyncSender<Vec<Row>>,
) {
    let index: [HashMap<&str, u32>; 2] =
        [0, 1].map(|i| catalogs[i].iter().enumerate().map(|(k, r)| (r.id.as_str(), k as u32)).collect());
    let [d0, d1] = deciders;
    let mut fvs = [FeatureVector::default(), FeatureVector::default()];
    for batch in rx {
        let mut values =
            [batch.values[0].chunks_exact(widths[0].max(1)), batch.values[1].chunks_exact(widths[1].max(1))];
        let mut rows = Vec::with_capacity(batch.items.len());
        for (line, admits) in batch.items {
            let mut row = Row {
                line,
                event_id: None,
                event_type: None,
                event_time: None,
                label: None,
                sides: [SideOutcome::DeadLetter(RejectReason::BadJson), SideOutcome::DeadLetter(RejectReason::BadJson)],
                records: [None, None],
            };
            let [a0, a1] = &admits;
            for (side, admit) in [(0usize, a0), (1, a1)] {
                let (ev, fv_side) = match admit {
                    Admit::Event(ev) => (ev, side),
                    Admit::Same => match a0 {
                        Admit::Event(ev) => (ev, 0),
                        _ => {
                            row.sides[1] = row.sides[0].clone();
                            continue;
                        }
                    },
                    Admit::Dead { reason, event_id, event_type } => {
                        row.sides[side] = SideOutcome::DeadLetter(*reason);
                        if row.event_id.is_none() {
                            row.event_id.clone_from(event_id);
                            row.event_type = *event_type;
                        }
                        continue;
                    }
                };
                if side == fv_side {
                    let fv = &mut fvs[side];
                    fv.0.clear();
                    if widths[side] > 0 {
                        fv.0.extend_from_slice(values[side].next().unwrap_or_default());
                    }
                }
                let decider: &mut Decider = if side == 0 { &mut *d0 } else { &mut *d1 };
                let d = decider.decide(ev, &fvs[fv_side], Instant::now());
                if records {
                    let mut json = serde_json::to_vec(&d.without_timing()).unwrap_or_default();
                    json.push(b'\n');
                    row.records[side] = Some(json);
                }
                row.sides[side] = SideOutcome::Decided(decided(&d, &index[side]));
                if row.event_time.is_none() {
                    row.event_time = Some(d.event_time);
                }
                row.event_id = Some(d.event_id);
                row.event_type = Some(d.event_type);
            }
            row.label = row.event_id.as_deref().and_then(|id| labels.get(id)).map(|&l| l > 0.5);
            rows.push(row);
        }
        if tx.send(rows).is_err() {
            return;
        }
    }
}

fn decided(d: &Decision, index: &HashMap<&str, u32>) -> Decided {
    let mut models = Vec::new();
    if let (Some(m), Some(p)) = (&d.model, d.probability) {
        models.push((m.name.clone(), p));
    }
    if let Some(s) = &d.shadow_model {
        models.push((s.name.clone(), s.probability));
    }
    let hits = d
        .reasons
        .iter()
        .filter(|r| r.source == ReasonSource::Rule)
        .filter_map(|r| index.get(r.id.as_str()).copied())
        .collect();
    Decided { action: d.action, score: d.score, models, hits }
}
