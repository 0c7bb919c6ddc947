//! The feature stage: declarative definitions from `features/*.toml`,
//! compiled to slots, and per-entity state over exact event-time windows.
//!
//! For every event the engine calls [`FeatureEngine::update`] once: the event
//! is first added to the state of every feature that counts it, then every
//! feature is read for this event's entities into a [`FeatureVector`] (one
//! `f64` per feature slot, NaN meaning missing). A sliding window of length
//! `w` read at event time `t` covers exactly the counted events with time in
//! `(t - w, t]`, so the value includes the current event when it counts.
//!
//! State is keyed by a keyed hash of the entity value (never the clear
//! value) and kept per entity kind, so one lookup serves every feature of that
//! entity. [`FeatureEngine::write_snapshot`] and [`FeatureEngine::restore`]
//! carry it across restarts; [`reference::Reference`] recomputes any feature
//! by rescanning history, for explanations and tests.

mod capture;
mod def;
mod deque;
pub mod reference;
mod snapshot;
mod state;
mod table;

pub use capture::EncodedState;
pub use def::{
    suggest, Aggregation, DefError, EntityKind, FeatureDef, FeatureSet, FilterValue, Operand, StateLimits, Window,
    AGGREGATIONS,
};
pub use snapshot::{SnapshotError, SNAPSHOT_FORMAT};
pub use state::{FeatureEngine, FeatureVector, StateStats};
