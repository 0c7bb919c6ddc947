//! Every metric name the engine emits, in one place. Labels are bounded sets
//! (event type, action, reason, stage, rule id); never an entity id.

pub const EVENTS_TOTAL: &str = "risk_events_total"; // labels: event_type
pub const DECISIONS_TOTAL: &str = "risk_decisions_total"; // labels: action
pub const DEAD_LETTERS_TOTAL: &str = "risk_dead_letters_total"; // labels: reason
pub const STAGE_LATENCY_SECONDS: &str = "risk_stage_latency_seconds"; // labels: stage
pub const DECISION_LATENCY_SECONDS: &str = "risk_decision_latency_seconds";
pub const RULE_HITS_TOTAL: &str = "risk_rule_hits_total"; // labels: rule, stage, mode
pub const LATE_EVENTS_TOTAL: &str = "risk_late_events_total"; // labels: feature_entity
pub const FEATURE_ENTITIES: &str = "risk_feature_entities"; // gauge, labels: entity
pub const FEATURE_TABLE_SLOTS: &str = "risk_feature_table_slots"; // gauge, labels: entity
pub const FEATURE_ENTITIES_REMOVED_TOTAL: &str = "risk_feature_entities_removed_total"; // labels: reason (expired, cap)
pub const FEATURE_POINTS_DROPPED_TOTAL: &str = "risk_feature_points_dropped_total";
pub const CHECKPOINTS_TOTAL: &str = "risk_checkpoints_total"; // labels: outcome
pub const CHECKPOINT_SECONDS: &str = "risk_checkpoint_seconds"; // labels: phase (encode, write)
pub const CHECKPOINT_BYTES: &str = "risk_checkpoint_bytes"; // gauge
pub const OUTPUT_ERRORS_TOTAL: &str = "risk_output_errors_total"; // labels: sink
pub const CONSUMER_LAG_MESSAGES: &str = "risk_consumer_in_flight_messages"; // gauge
pub const RELOADS_TOTAL: &str = "risk_reloads_total"; // labels: what, outcome

/// Pipeline stage names used as the `stage` label.
pub mod stage {
    pub const DECODE: &str = "decode";
    pub const FEATURES: &str = "features";
    pub const SCORECARD: &str = "scorecard";
    pub const RULES: &str = "rules";
    pub const ENCODE: &str = "encode";
}
