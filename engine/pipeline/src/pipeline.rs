//! One worker's pipeline: feature state, prepared scorecards, reused buffers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use metrics::{Counter, Histogram};
use riskd_core::event::{Event, EventKind, RejectReason};
use riskd_core::fields::{FieldId, Value};
use riskd_core::metric::{self, stage};
use riskd_core::{
    Action, DeadLetter, Decision, Decoder, KeyRing, Limits, ModelRole, ModelUsed, Reason, ReasonSource, ShadowModel,
    SourcePosition,
};
use riskd_features::{FeatureEngine, FeatureVector};
use riskd_rules::{Slot, Source, Verdict};
use riskd_scorecard::{ModelError, ModelSet, Role, Scorecard};

use crate::checkpoint::{CheckpointError, CheckpointMeta, CheckpointStore};
use crate::config::EngineConfig;
use crate::deployment::{Deployment, RuleState, FEATURE_BASE, MODEL_BASE, MODEL_PROBABILITY, MODEL_SCORE};

/// What became of one input.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Decision(Decision),
    DeadLetter(DeadLetter),
}

/// Metric handles registered once, so the hot path does no name lookups.
struct IntakeMetrics {
    events: Vec<Counter>,
    dead_letters: Vec<Counter>,
    decode: Histogram,
    features: Histogram,
    late: Counter,
    state: StateMetrics,
}

/// Feature-state gauges and counters, published every few thousand events.
struct StateMetrics {
    /// Per entity kind: its entities and its table's slots.
    entities: Vec<(String, metrics::Gauge, metrics::Gauge)>,
    expired: Counter,
    evicted: Counter,
    dropped: Counter,
    published: riskd_features::StateStats,
}

impl StateMetrics {
    fn new() -> Self {
        StateMetrics {
            entities: Vec::new(),
            expired: metrics::counter!(metric::FEATURE_ENTITIES_REMOVED_TOTAL, "reason" => "expired"),
            evicted: metrics::counter!(metric::FEATURE_ENTITIES_REMOVED_TOTAL, "reason" => "cap"),
            dropped: metrics::counter!(metric::FEATURE_POINTS_DROPPED_TOTAL),
            published: Default::default(),
        }
    }

    fn publish(&mut self, engine: &FeatureEngine) {
        for ((kind, n), (_, slots)) in engine.entities_by_kind().into_iter().zip(engine.slots_by_kind()) {
            let name = kind.to_string();
            let i = match self.entities.iter().position(|(k, _, _)| *k == name) {
                Some(i) => i,
                None => {
                    let g = metrics::gauge!(metric::FEATURE_ENTITIES, "entity" => name.clone());
                    let s = metrics::gauge!(metric::FEATURE_TABLE_SLOTS, "entity" => name.clone());
                    self.entities.push((name, g, s));
                    self.entities.len() - 1
                }
            };
            self.entities[i].1.set(n as f64);
            self.entities[i].2.set(slots as f64);
        }
        let now = engine.stats();
        self.expired.increment(now.expired_entities.saturating_sub(self.published.expired_entities));
        self.evicted.increment(now.evicted_entities.saturating_sub(self.published.evicted_entities));
        self.dropped.increment(now.dropped_points.saturating_sub(self.published.dropped_points));
        self.published = now;
    }
}

struct DeciderMetrics {
    decisions: Vec<Counter>,
    scorecard: Histogram,
    rules: Histogram,
    decision: Histogram,
}

fn stage_histogram(s: &'static str) -> Histogram {
    metrics::histogram!(metric::STAGE_LATENCY_SECONDS, "stage" => s)
}

impl IntakeMetrics {
    fn new() -> Self {
        IntakeMetrics {
            events: EventKind::ALL
                .iter()
                .map(|k| metrics::counter!(metric::EVENTS_TOTAL, "event_type" => k.as_str()))
                .collect(),
            dead_letters: RejectReason::ALL
                .iter()
                .map(|r| metrics::counter!(metric::DEAD_LETTERS_TOTAL, "reason" => r.as_str()))
                .collect(),
            decode: stage_histogram(stage::DECODE),
            features: stage_histogram(stage::FEATURES),
            late: metrics::counter!(metric::LATE_EVENTS_TOTAL),
            state: StateMetrics::new(),
        }
    }
}

impl DeciderMetrics {
    fn new() -> Self {
        DeciderMetrics {
            decisions: Action::ALL
                .iter()
                .map(|a| metrics::counter!(metric::DECISIONS_TOTAL, "action" => a.as_str()))
                .collect(),
            scorecard: stage_histogram(stage::SCORECARD),
            rules: stage_histogram(stage::RULES),
            decision: metrics::histogram!(metric::DECISION_LATENCY_SECONDS),
        }
    }
}

/// One worker's pipeline: an [`Intake`] (decode, validate, feature state)
/// followed by a [`Decider`] (scorecard, rules, decision record).
///
/// The live driver runs both halves back to back on one task. The replay
/// driver runs them on two threads ([`Pipeline::halves`]); the code per
/// event is the same, so the decisions are too.
pub struct Pipeline {
    intake: Intake,
    decider: Decider,
    fv: FeatureVector,
}

/// The stateful first half: decode and validate, then update the feature
/// state and read this event's feature values. Must see the inputs in order.
pub struct Intake {
    decoder: Decoder,
    features: FeatureEngine,
    metrics: IntakeMetrics,
    updated: u64,
}

/// The second half: scorecard, rules and the decision record, from an event
/// and its feature values. Keeps no state between events.
pub struct Decider {
    deployment: Arc<Deployment>,
    /// One prepared scorecard per model of `models`, in the same order.
    scorecards: Vec<Option<Scorecard>>,
    /// The model set the scorecards were prepared for; a swap is noticed by
    /// pointer and the scorecards are prepared again before the next event.
    models: Arc<ModelSet>,
    verdict: Verdict,
    reason_codes: usize,
    include_features: bool,
    metrics: DeciderMetrics,
    hit_counters: (Option<Arc<RuleState>>, HashMap<usize, Counter>),
}

/// What rules read for one event, by slot.
struct RuleInput<'a> {
    ev: &'a Event,
    fv: &'a FeatureVector,
    score: Option<(f64, f64)>,
}

impl Source for RuleInput<'_> {
    fn kind(&self) -> EventKind {
        self.ev.kind
    }

    #[inline]
    fn get(&self, slot: Slot) -> Value<'_> {
        let s = slot.0;
        if s < FEATURE_BASE {
            FieldId(s as u16).get(self.ev)
        } else if s < MODEL_BASE {
            let v = self.fv.get((s - FEATURE_BASE) as usize);
            if v.is_nan() {
                Value::Missing
            } else {
                Value::Num(v)
            }
        } else {
            match (slot, self.score) {
                (MODEL_SCORE, Some((points, _))) => Value::Num(points),
                (MODEL_PROBABILITY, Some((_, p))) => Value::Num(p),
                _ => Value::Missing,
            }
        }
    }
}

/// The key that hashes entity values into feature-state keys, derived from
/// the key ring. Serving and training must use the same one.
pub fn state_key(keys: &KeyRing) -> [u8; 16] {
    keys.protect("feature-state-key", "").0
}

impl Pipeline {
    pub fn new(deployment: Arc<Deployment>, keys: KeyRing, cfg: &EngineConfig) -> Result<Pipeline, ModelError> {
        let models = deployment.models();
        let scorecards = prepare(&models)?;
        let features = FeatureEngine::new(deployment.features.clone(), state_key(&keys));
        Ok(Pipeline {
            intake: Intake {
                decoder: Decoder::new(Limits { max_event_bytes: cfg.max_event_bytes, ..Limits::default() }, keys),
                features,
                metrics: IntakeMetrics::new(),
                updated: 0,
            },
            decider: Decider::new(deployment, scorecards, models, cfg.reason_codes, cfg.include_features),
            fv: FeatureVector::default(),
        })
    }

    pub fn deployment(&self) -> &Arc<Deployment> {
        &self.decider.deployment
    }

    pub fn feature_engine(&self) -> &FeatureEngine {
        &self.intake.features
    }

    pub fn decoder(&self) -> &Decoder {
        &self.intake.decoder
    }

    /// Replaces the feature state with the checkpoint's, if there is one.
    pub fn restore_checkpoint(&mut self, store: &CheckpointStore) -> Result<Option<CheckpointMeta>, CheckpointError> {
        let key = state_key(self.intake.decoder.keys());
        match store.load(self.decider.deployment.features.clone(), key)? {
            Some((meta, engine)) => {
                self.intake.features = engine;
                self.intake.metrics.state.publish(&self.intake.features);
                Ok(Some(meta))
            }
            None => Ok(None),
        }
    }

    /// Drops all feature state (e.g. when a checkpoint turned out not to
    /// belong to the input being read).
    pub fn reset_features(&mut self) {
        let key = state_key(self.intake.decoder.keys());
        self.intake.features = FeatureEngine::new(self.decider.deployment.features.clone(), key);
        self.intake.metrics.state.publish(&self.intake.features);
    }

    /// Starts a checkpoint of the feature state as it stands now, encoded
    /// by [`Pipeline::checkpoint_step`] while inputs keep being decided (see
    /// `riskd_features::FeatureEngine::begin_snapshot`). False when one is
    /// already in progress.
    pub fn begin_checkpoint(&mut self) -> bool {
        self.intake.metrics.state.publish(&self.intake.features);
        self.intake.features.begin_snapshot()
    }

    /// Encodes up to `budget` more entities of the checkpoint in progress;
    /// the state once complete, for [`CheckpointStore::write_state`].
    pub fn checkpoint_step(&mut self, budget: usize) -> Option<riskd_features::EncodedState> {
        self.intake.features.snapshot_step(budget)
    }

    /// The feature state encoded at once, for a checkpoint nothing waits on
    /// (shutdown); drops a checkpoint in progress.
    pub fn encode_state(&mut self) -> riskd_features::EncodedState {
        self.intake.encode_state()
    }

    /// Whether a checkpoint begun with [`Pipeline::begin_checkpoint`] is
    /// still being encoded (false again after [`Pipeline::reset_features`]).
    pub fn checkpoint_in_progress(&self) -> bool {
        self.intake.features.snapshot_in_progress()
    }

    /// The two halves, to run on two threads (the intake ahead of the
    /// decider, handing over each event with its feature values in order).
    pub fn halves(&mut self) -> (&mut Intake, &mut Decider) {
        (&mut self.intake, &mut self.decider)
    }

    /// Decodes and decides one input. `source` is only evaluated for dead letters.
    pub fn process(&mut self, bytes: &[u8], source: impl FnOnce() -> SourcePosition) -> Outcome {
        let start = Instant::now();
        match self.intake.decode(bytes, source) {
            Ok(ev) => Outcome::Decision(self.decide(&ev, start)),
            Err(dl) => Outcome::DeadLetter(dl),
        }
    }

    /// Runs features, scorecard and rules for a decoded event.
    pub fn decide(&mut self, ev: &Event, start: Instant) -> Decision {
        self.intake.update_features(ev, &mut self.fv);
        self.decider.decide(ev, &self.fv, start)
    }
}

impl Intake {
    /// Decodes and validates one input, or makes its dead letter. `source`
    /// is only evaluated for dead letters.
    // A dead letter is the ordinary result for bad input, kept unboxed like `Outcome`.
    #[allow(clippy::result_large_err)]
    pub fn decode(&self, bytes: &[u8], source: impl FnOnce() -> SourcePosition) -> Result<Event, DeadLetter> {
        let start = Instant::now();
        match self.decoder.decode(bytes) {
            Ok(ev) => {
                self.metrics.decode.record(start.elapsed().as_secs_f64());
                Ok(ev)
            }
            Err(err) => {
                self.metrics.dead_letters[err.reason as usize].increment(1);
                tracing::debug!(reason = %err.reason, field = err.field.as_deref().unwrap_or(""), "input dead-lettered");
                Err(DeadLetter::new(&err, source(), bytes, self.decoder.keys()))
            }
        }
    }

    /// Adds the event to the feature state and reads its feature values into `fv`.
    pub fn update_features(&mut self, ev: &Event, fv: &mut FeatureVector) {
        self.metrics.events[ev.kind as usize].increment(1);
        let t = Instant::now();
        if self.features.update(ev, fv) {
            self.metrics.late.increment(1);
        }
        self.metrics.features.record(t.elapsed().as_secs_f64());
        self.updated += 1;
        if self.updated.is_multiple_of(4096) {
            self.metrics.state.publish(&self.features);
        }
    }

    pub fn feature_engine(&self) -> &FeatureEngine {
        &self.features
    }

    /// The feature state encoded at once, for a checkpoint
    /// (`FeatureEngine::encode_state`).
    pub fn encode_state(&mut self) -> riskd_features::EncodedState {
        self.metrics.state.publish(&self.features);
        self.features.encode_state()
    }
}

fn prepare(models: &ModelSet) -> Result<Vec<Option<Scorecard>>, ModelError> {
    models.models.iter().map(|m| Scorecard::new(m.clone()).map(Some)).collect()
}

impl Decider {
    fn new(
        deployment: Arc<Deployment>,
        scorecards: Vec<Option<Scorecard>>,
        models: Arc<ModelSet>,
        reason_codes: usize,
        include_features: bool,
    ) -> Self {
        Decider {
            deployment,
            scorecards,
            models,
            verdict: Verdict::default(),
            reason_codes,
            include_features,
            metrics: DeciderMetrics::new(),
            hit_counters: (None, HashMap::new()),
        }
    }

    /// Another decider for the same deployment and settings, with its own
    /// prepared models. Deciders keep no state between events, so several
    /// can decide disjoint inputs in parallel and give the same decisions.
    pub fn another(&self) -> Result<Decider, ModelError> {
        let models = self.deployment.models();
        let scorecards = prepare(&models)?;
        Ok(Decider::new(self.deployment.clone(), scorecards, models, self.reason_codes, self.include_features))
    }

    /// Scorecard, rules and the decision record for an event and its
    /// feature values; `start` is when work on the input began (for `latency_us`).
    pub fn decide(&mut self, ev: &Event, fv: &FeatureVector, start: Instant) -> Decision {
        // Loaded once per event: a reload takes effect between events, and
        // one event is decided wholly by one set of rules and models.
        let rule_state = self.deployment.rules();
        if !Arc::ptr_eq(&rule_state.models, &self.models) {
            self.prepare_models(&rule_state.models);
        }

        let t = Instant::now();
        let mut score = None;
        let mut model_reasons = Vec::new();
        let (mut model, mut shadow_model) = (None, None);
        if let Some(route) = self.models.route(ev.kind, &ev.entities.user_id) {
            let role = |i| match self.models.role(i) {
                Role::Champion => ModelRole::Champion,
                Role::Challenger => ModelRole::Challenger,
            };
            let (decides_role, shadow_role) = (role(route.decides), route.shadow.map(role));
            if let Some(card) = self.scorecards[route.decides].as_mut() {
                match card.score_event(ev, fv, self.reason_codes) {
                    Ok(s) => {
                        score = Some((s.points, s.probability));
                        let spec = card.spec();
                        model_reasons.extend(card.adverse().iter().map(|&(i, c)| spec.reason(i, c)));
                        model = Some(ModelUsed {
                            name: spec.manifest.name.clone(),
                            version: spec.version.clone(),
                            role: decides_role,
                        });
                    }
                    Err(e) => {
                        tracing::error!(model = %card.spec().manifest.name, error = %e, "model failed to score an event; deciding without a score")
                    }
                }
            }
            if let (Some(i), Some(role)) = (route.shadow, shadow_role) {
                if let Some(card) = self.scorecards[i].as_mut() {
                    match card.score_event(ev, fv, 0) {
                        Ok(s) => {
                            let spec = card.spec();
                            shadow_model = Some(ShadowModel {
                                name: spec.manifest.name.clone(),
                                version: spec.version.clone(),
                                role,
                                score: round6(s.points),
                                probability: s.probability,
                            });
                        }
                        Err(e) => {
                            tracing::error!(model = %card.spec().manifest.name, error = %e, "model failed to score an event beside the deciding one")
                        }
                    }
                }
            }
        }
        self.metrics.scorecard.record(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let input = RuleInput { ev, fv, score };
        rule_state.rules.evaluate(&input, &mut self.verdict);
        self.metrics.rules.record(t.elapsed().as_secs_f64());

        let action = self.verdict.action.map_or(Action::default_for(ev.kind), |a| a.for_kind(ev.kind));
        self.metrics.decisions[action as usize].increment(1);
        let mut reasons: Vec<Reason> = self
            .verdict
            .hits
            .iter()
            .map(|h| Reason {
                source: ReasonSource::Rule,
                code: h.reason().to_string(),
                id: h.rule_id().to_string(),
                stage: Some(h.stage().to_string()),
                action: h.action.map(|a| a.for_kind(ev.kind)),
                shadow: h.shadow,
                label: None,
                contribution: None,
            })
            .collect();
        reasons.extend(model_reasons);
        // Counter handles per rule, registered on a rule's first hit. The cache
        // holds the rule state it belongs to, so its keys (addresses of that
        // state's rule labels) stay valid; a reload starts a new cache.
        if !self.hit_counters.0.as_ref().is_some_and(|held| Arc::ptr_eq(held, &rule_state)) {
            self.hit_counters = (Some(Arc::clone(&rule_state)), HashMap::new());
        }
        for h in &self.verdict.hits {
            let counter = self.hit_counters.1.entry(Arc::as_ptr(&h.labels) as usize).or_insert_with(|| {
                let mode = if h.shadow { "shadow" } else { "active" };
                metrics::counter!(metric::RULE_HITS_TOTAL, "rule" => h.rule_id().to_string(), "stage" => h.stage().to_string(), "mode" => mode)
            });
            counter.increment(1);
        }
        let versions = rule_state.versions.clone();
        let features = self.include_features.then(|| {
            self.deployment
                .features
                .defs
                .iter()
                .map(|d| {
                    let v = fv.get(d.slot);
                    let json =
                        serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number);
                    (d.name.clone(), json)
                })
                .collect()
        });
        let adjusted = score.map(|(points, _)| round6(points + self.verdict.score_adjustment));
        let latency = start.elapsed();
        self.metrics.decision.record(latency.as_secs_f64());
        Decision {
            schema_version: riskd_core::decision::DECISION_SCHEMA_VERSION,
            decision_id: Decision::id_for(ev, &versions),
            event_id: ev.id.to_string(),
            event_type: ev.kind,
            user_id: ev.entities.user_id.to_string(),
            event_time: Decision::event_time_text(ev.time_ms),
            action,
            score: adjusted,
            probability: score.map(|(_, p)| p),
            reasons,
            model,
            shadow_model,
            versions,
            features,
            latency_us: latency.as_micros() as u64,
        }
    }
}

impl Decider {
    /// Prepares scorecards for a newly swapped-in model set. Models whose
    /// spec is unchanged keep their prepared scorecard.
    fn prepare_models(&mut self, models: &Arc<ModelSet>) {
        let mut old: Vec<Option<Scorecard>> = std::mem::take(&mut self.scorecards);
        self.scorecards = models
            .models
            .iter()
            .map(|spec| {
                let kept = old.iter_mut().find(|c| c.as_ref().is_some_and(|c| Arc::ptr_eq(c.spec_arc(), spec)));
                if let Some(card) = kept.and_then(Option::take) {
                    return Some(card);
                }
                match Scorecard::new(spec.clone()) {
                    Ok(card) => Some(card),
                    Err(e) => {
                        // Validated at reload, so not expected; the events it
                        // scores are decided without a score meanwhile.
                        tracing::error!(model = %spec.manifest.name, error = %e, "a worker could not prepare a model");
                        None
                    }
                }
            })
            .collect();
        self.models = models.clone();
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}
