//! Contracts shared by every stage of the risk engine and by both drivers.
//!
//! Data flows through the engine as follows:
//!
//! ```text
//! bytes --decode/validate--> Event --features--> FeatureVector --scorecard--> Score
//!       \                                          \--rules--> Verdict --> Decision
//!        \--> DeadLetter (reason, encrypted original bytes, source position)
//! ```
//!
//! This crate holds the pieces every stage agrees on: the versioned event
//! envelope and its strict decoder ([`event`]), the field table through which
//! rules and features read events by slot ([`fields`]), the decision and
//! dead-letter records ([`decision`]), keyed hashing and encryption of
//! personal data ([`pii`]), content hashing for versions ([`version`]) and the
//! metric names ([`metric`]). It has no heavy dependencies so that every other
//! crate can build on it quickly.

pub mod decision;
pub mod event;
pub mod fields;
pub mod metric;
pub mod pii;
pub mod text;
pub mod timefmt;
pub mod version;

pub use decision::{
    Action, DeadLetter, Decision, ModelRole, ModelUsed, Reason, ReasonSource, ShadowModel, SourcePosition, Versions,
};
pub use event::{DecodeError, Decoder, Event, EventKind, Limits, RejectReason};
pub use fields::{FieldId, FieldType, Value};
pub use pii::{KeyRing, Protected};
