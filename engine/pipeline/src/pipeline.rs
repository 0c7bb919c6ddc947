//! One worker's pipeline: feature state, prepared scorecards, reused buffers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use metrics::{Counter, Histogram};
use riskd_core::event::{Event, EventKind, RejectReason};
use riskd_core::fields::{FieldId, Value};
use riskd_core::metric::{self, stage};
use riskd_core::{Action, DeadLetter, Decision, Decoder, KeyRing, Limits, Reason, ReasonSource, SourcePosition};
use riskd_features::{FeatureEngine, FeatureVector};
use riskd_rules::{Slot, Source, Verdict};
use riskd_scorecard::{ModelError, Scorecard};

use crate::config::EngineConfig;
use crate::deployment::{Deployment, RuleState, FEATURE_BASE, MODEL_BASE, MODEL_PROBABILITY, MODEL_SCORE};

/// What became of one input.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Decision(Decision),
    DeadLetter(DeadLetter),
}

/// Metric handles registered once, so the hot path does no name lookups.
struct Metrics {
    events: Vec<Counter>,
    decisions: Vec<Counter>,
    dead_letters: Vec<Counter>,
    decode: Histogram,
    features: Histogram,
    scorecard: Histogram,
    rules: Histogram,
    decision: Histogram,
    late: Counter,
}

impl Metrics {
    fn new() -> Self {
        let h = |s: &'static str| metrics::histogram!(metric::STAGE_LATENCY_SECONDS, "stage" => s);
        Metrics {
            events: EventKind::ALL
                .iter()
                .map(|k| metrics::counter!(metric::EVENTS_TOTAL, "event_type" => k.as_str()))
                .collect(),
            decisions: Action::ALL
                .iter()
                .map(|a| metrics::counter!(metric::DECISIONS_TOTAL, "action" => a.as_str()))
                .collect(),
            dead_letters: RejectReason::ALL
                .iter()
                .map(|r| metrics::counter!(metric::DEAD_LETTERS_TOTAL, "reason" => r.as_str()))
                .collect(),
            decode: h(stage::DECODE),
            features: h(stage::FEATURES),
            scorecard: h(stage::SCORECARD),
            rules: h(stage::RULES),
            decision: metrics::histogram!(metric::DECISION_LATENCY_SECONDS),
            late: metrics::counter!(metric::LATE_EVENTS_TOTAL),
        }
    }
}

pub struct Pipeline {
    decoder: Decoder,
    deployment: Arc<Deployment>,
    features: FeatureEngine,
    scorecards: Vec<Scorecard>,
    fv: FeatureVector,
    verdict: Verdict,
    reason_codes: usize,
    include_features: bool,
    metrics: Metrics,
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
        let scorecards = deployment.models.iter().map(|m| Scorecard::new(m.clone())).collect::<Result<Vec<_>, _>>()?;
        let features = FeatureEngine::new(deployment.features.clone(), state_key(&keys));
        Ok(Pipeline {
            decoder: Decoder::new(Limits { max_event_bytes: cfg.max_event_bytes, ..Limits::default() }, keys),
            deployment,
            features,
            scorecards,
            fv: FeatureVector::default(),
            verdict: Verdict::default(),
            reason_codes: cfg.reason_codes,
            include_features: cfg.include_features,
            metrics: Metrics::new(),
            hit_counters: (None, HashMap::new()),
        })
    }

    pub fn deployment(&self) -> &Arc<Deployment> {
        &self.deployment
    }

    pub fn feature_engine(&self) -> &FeatureEngine {
        &self.features
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Decodes and decides one input. `source` is only evaluated for dead letters.
    pub fn process(&mut self, bytes: &[u8], source: impl FnOnce() -> SourcePosition) -> Outcome {
        let start = Instant::now();
        match self.decoder.decode(bytes) {
            Ok(ev) => {
                self.metrics.decode.record(start.elapsed().as_secs_f64());
                Outcome::Decision(self.decide(&ev, start))
            }
            Err(err) => {
                self.metrics.dead_letters[err.reason as usize].increment(1);
                tracing::debug!(reason = %err.reason, field = err.field.as_deref().unwrap_or(""), "input dead-lettered");
                Outcome::DeadLetter(DeadLetter::new(&err, source(), bytes, self.decoder.keys()))
            }
        }
    }

    /// Runs features, scorecard and rules for a decoded event.
    pub fn decide(&mut self, ev: &Event, start: Instant) -> Decision {
        self.metrics.events[ev.kind as usize].increment(1);
        let t = Instant::now();
        if self.features.update(ev, &mut self.fv) {
            self.metrics.late.increment(1);
        }
        self.metrics.features.record(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut score = None;
        let mut model_reasons = Vec::new();
        if let Some(card) = self.scorecards.iter_mut().find(|c| c.spec().scores(ev.kind)) {
            match card.score(ev, &self.fv, self.reason_codes) {
                Ok(s) => {
                    score = Some((s.points, s.probability));
                    model_reasons = s.reasons;
                }
                Err(e) => {
                    tracing::error!(model = %card.spec().manifest.name, error = %e, "model failed to score an event; deciding without a score")
                }
            }
        }
        self.metrics.scorecard.record(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let input = RuleInput { ev, fv: &self.fv, score };
        // Loaded once per event: a reload takes effect between events.
        let rule_state = self.deployment.rules();
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
                    let v = self.fv.get(d.slot);
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
            versions,
            features,
            latency_us: latency.as_micros() as u64,
        }
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}
