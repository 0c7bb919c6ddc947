//! `riskd features explain`: every feature of one recorded event, with the
//! events that produced each value.
//!
//! The input is read twice. The first pass finds the event; the second feeds
//! every input before it through the serving feature engine, and keeps, for
//! the reference recomputation, only the events that share an entity with
//! it, so memory stays small on large files.

use std::sync::Arc;

use riskd_core::decision::Decision;
use riskd_core::event::Event;
use riskd_core::Decoder;
use riskd_features::reference::Reference;
use riskd_features::{Aggregation, FeatureEngine, FeatureSet, FeatureVector};
use serde::Serialize;

/// One event that a feature counted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contributor {
    pub event_id: String,
    pub event_type: &'static str,
    pub event_time: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct FeatureExplanation {
    pub name: String,
    pub description: String,
    pub entity: String,
    pub window: String,
    /// The value the serving engine computed (None: missing).
    pub value: Option<f64>,
    /// The value recomputed by rescanning the entity's history.
    pub recomputed: Option<f64>,
    /// Counted events inside the window, oldest first (empty for per-event ratios).
    pub contributors: Vec<Contributor>,
}

impl FeatureExplanation {
    pub fn agrees(&self) -> bool {
        match (self.value, self.recomputed) {
            (Some(a), Some(b)) => a.to_bits() == b.to_bits(),
            (None, None) => true,
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub event_id: String,
    pub event_type: &'static str,
    pub event_time: String,
    /// 1-based line of the event in the input.
    pub line: u64,
    /// Events decided before it (in replay order).
    pub events_before: u64,
    /// The event was older than the allowed lateness when it arrived.
    pub late: bool,
    pub features: Vec<FeatureExplanation>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no event with id `{0}` in the input (dead-lettered lines have no event id to match)")]
    NotFound(String),
}

fn num(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

fn window_text(d: &riskd_features::FeatureDef) -> String {
    match (&d.agg, d.window) {
        (Aggregation::Ratio(..), _) => "per event".into(),
        (_, riskd_features::Window::Lifetime) => "lifetime".into(),
        (_, riskd_features::Window::Sliding { ms }) => riskd_core::timefmt::format_duration_ms(ms),
    }
}

/// Explains the event `event_id`. `inputs` must yield the same (line,
/// bytes) sequence twice, in replay order.
pub fn explain<'a, I>(
    set: Arc<FeatureSet>,
    decoder: &Decoder,
    state_key: [u8; 16],
    inputs: impl Fn() -> I,
    event_id: &str,
) -> Result<Explanation, ExplainError>
where
    I: Iterator<Item = (u64, &'a [u8])>,
{
    // Pass 1: the event.
    let mut found = None;
    for (line, bytes) in inputs() {
        if let Ok(ev) = decoder.decode(bytes) {
            if ev.id == event_id {
                found = Some((line, ev));
                break;
            }
        }
    }
    let Some((target_line, target)) = found else {
        return Err(ExplainError::NotFound(event_id.to_string()));
    };
    // Pass 2: state up to and including it.
    let mut engine = FeatureEngine::new(set.clone(), state_key);
    let mut reference = Reference::new(set.clone());
    let mut fv = FeatureVector::default();
    let mut before = 0u64;
    let mut late = false;
    for (line, bytes) in inputs() {
        let Ok(ev) = decoder.decode(bytes) else { continue };
        let is_target = line == target_line;
        late = engine.update(&ev, &mut fv);
        if is_target || reference.related(&ev, &target) {
            reference.push(ev);
        }
        if is_target {
            break;
        }
        before += 1;
    }
    let at = reference.events().len() - 1;
    let recomputed = reference.values(at);
    let features = set
        .defs
        .iter()
        .map(|d| {
            let contributors = if matches!(d.agg, Aggregation::Ratio(..)) {
                Vec::new()
            } else {
                reference.explain(d, at).contributors.into_iter().map(contributor).collect()
            };
            FeatureExplanation {
                name: d.name.clone(),
                description: d.description.clone(),
                entity: d.entity.to_string(),
                window: window_text(d),
                value: num(fv.get(d.slot)),
                recomputed: num(recomputed[d.slot]),
                contributors,
            }
        })
        .collect();
    Ok(Explanation {
        event_id: target.id.to_string(),
        event_type: target.kind.as_str(),
        event_time: Decision::event_time_text(target.time_ms),
        line: target_line,
        events_before: before,
        late,
        features,
    })
}

fn contributor(e: &Event) -> Contributor {
    Contributor {
        event_id: e.id.to_string(),
        event_type: e.kind.as_str(),
        event_time: Decision::event_time_text(e.time_ms),
    }
}
