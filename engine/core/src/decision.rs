//! The decision record published for every event, and the dead-letter record
//! for every input that could not become an event. Both are documented for
//! their consumers in `docs/decisions.md` and `schemas/*.schema.json`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{DecodeError, Event, EventKind, RejectReason};
use crate::pii::{KeyRing, Sealed};
use crate::timefmt;

pub const DECISION_SCHEMA_VERSION: u32 = 1;
pub const DEAD_LETTER_SCHEMA_VERSION: u32 = 1;

/// What downstream services should do. Applications get approve / review /
/// reject; every other event gets pass / alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Approve,
    Review,
    Reject,
    Pass,
    Alert,
}

impl Action {
    pub const ALL: [Action; 5] = [Action::Approve, Action::Review, Action::Reject, Action::Pass, Action::Alert];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Review => "review",
            Action::Reject => "reject",
            Action::Pass => "pass",
            Action::Alert => "alert",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// Higher is more severe; the most severe action across stages wins.
    pub fn severity(self) -> u8 {
        match self {
            Action::Approve | Action::Pass => 0,
            Action::Review | Action::Alert => 1,
            Action::Reject => 2,
        }
    }

    /// The default when nothing fires.
    pub fn default_for(kind: EventKind) -> Action {
        if kind.is_application() {
            Action::Approve
        } else {
            Action::Pass
        }
    }

    /// The action as it applies to an event kind: non-application events only
    /// pass or alert, so review/reject become alert and approve becomes pass.
    pub fn for_kind(self, kind: EventKind) -> Action {
        match (kind.is_application(), self) {
            (true, Action::Pass) => Action::Approve,
            (true, Action::Alert) => Action::Review,
            (true, a) => a,
            (false, Action::Approve | Action::Pass) => Action::Pass,
            (false, _) => Action::Alert,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonSource {
    Rule,
    Model,
}

/// One reason behind a decision: a rule hit or a model reason code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub source: ReasonSource,
    pub code: String,
    /// Rule id (rules) or model input name (model reason codes).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Shadow rules are recorded but never change the action.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Model reason codes: the input's contribution to the log-odds of "bad".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contribution: Option<f64>,
}

/// Content hashes of everything that made the decision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Versions {
    pub feature_set: String,
    pub rule_set: String,
    pub lists: String,
    pub model: String,
}

/// The role of a model in a champion/challenger pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelRole {
    Champion,
    Challenger,
}

/// The model whose score, probability and reason codes a decision carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelUsed {
    /// The manifest's `name`.
    pub name: String,
    /// Content hash of the model's manifest and model file.
    pub version: String,
    pub role: ModelRole,
}

/// A model that scored the event beside the deciding one, recorded only:
/// the challenger on champion traffic, the champion on the share of users
/// routed to the challenger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowModel {
    pub name: String,
    pub version: String,
    pub role: ModelRole,
    /// Its points (no rule adjustment applied).
    pub score: f64,
    /// Its probability of "bad".
    pub probability: f64,
}

/// The decision record, one per input event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub schema_version: u32,
    pub decision_id: String,
    pub event_id: String,
    pub event_type: EventKind,
    pub user_id: String,
    pub event_time: String,
    pub action: Action,
    /// Model score in points (higher is safer); null when no model scores this event type.
    pub score: Option<f64>,
    /// Model probability of "bad"; null when no model scores this event type.
    pub probability: Option<f64>,
    pub reasons: Vec<Reason>,
    /// The model that produced `score`, `probability` and the model reason
    /// codes; absent when no model scores this event type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelUsed>,
    /// The other model of a champion/challenger pair, scored on the same
    /// event and recorded but not used for the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_model: Option<ShadowModel>,
    pub versions: Versions,
    /// Feature values used, when the engine is configured to include them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<serde_json::Map<String, serde_json::Value>>,
    /// Processing time inside the engine, microseconds. A timing field: it
    /// differs between runs and is excluded from replay comparisons.
    pub latency_us: u64,
}

impl Decision {
    /// The id depends only on the event and the versions that decided it, so a
    /// re-delivered event decided by the same versions gets the same id.
    pub fn id_for(event: &Event, versions: &Versions) -> String {
        let mut h = Sha256::new();
        for part in [
            event.id.as_str(),
            event.kind.as_str(),
            event.entities.user_id.as_str(),
            &versions.feature_set,
            &versions.rule_set,
            &versions.lists,
            &versions.model,
        ] {
            h.update((part.len() as u32).to_le_bytes());
            h.update(part.as_bytes());
        }
        format!("d-{}", hex::encode(&h.finalize()[..16]))
    }

    pub fn event_time_text(ms: i64) -> String {
        timefmt::format_ms(ms)
    }

    /// A copy without timing fields, for comparing runs.
    pub fn without_timing(&self) -> Decision {
        Decision { latency_us: 0, ..self.clone() }
    }
}

/// Where an input came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourcePosition {
    Kafka { topic: String, partition: i32, offset: i64 },
    File { path: String, line: u64 },
}

/// The record written for every input that could not become an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    pub schema_version: u32,
    pub dead_letter_id: String,
    pub reason: RejectReason,
    pub field: Option<String>,
    pub detail: String,
    pub source: SourcePosition,
    pub event_id: Option<String>,
    pub event_type: Option<EventKind>,
    pub size_bytes: usize,
    /// The original bytes, encrypted: they may hold personal data.
    pub original: Sealed,
}

impl DeadLetter {
    pub fn new(err: &DecodeError, source: SourcePosition, bytes: &[u8], keys: &KeyRing) -> Self {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&source).unwrap_or_default());
        h.update(bytes);
        DeadLetter {
            schema_version: DEAD_LETTER_SCHEMA_VERSION,
            dead_letter_id: format!("dl-{}", hex::encode(&h.finalize()[..16])),
            reason: err.reason,
            field: err.field.clone(),
            detail: err.detail.clone(),
            source,
            event_id: err.event_id.clone(),
            event_type: err.event_type,
            size_bytes: bytes.len(),
            original: keys.seal(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_for_kind_maps_into_the_kind_vocabulary() {
        use Action::*;
        assert_eq!(Reject.for_kind(EventKind::Login), Alert);
        assert_eq!(Approve.for_kind(EventKind::Login), Pass);
        assert_eq!(Alert.for_kind(EventKind::LoanApplication), Review);
        assert_eq!(Reject.for_kind(EventKind::LoanApplication), Reject);
        assert!(Reject.severity() > Review.severity());
    }
}
