//! The decision pipeline shared by every driver.
//!
//! ```text
//!            +--------+   +----------+   +-----------+   +-------+   +----------+
//! bytes ---> | decode | > | features | > | scorecard | > | rules | > | decision |
//!            +--------+   +----------+   +-----------+   +-------+   +----------+
//!                 \--> dead letter (reason, encrypted original, source position)
//! ```
//!
//! A [`Deployment`] holds what is loaded once and shared (feature set, rule
//! set, model specs, versions); a [`Pipeline`] is one worker's instance with
//! its own feature state, prepared models and reused buffers. The live driver
//! (`riskd-kafka`) and the file driver ([`replay`]) both feed bytes to
//! [`Pipeline::process`] and differ only in where outcomes go, which is what
//! makes replayed decisions equal live ones.
//!
//! The scorecard runs before the rules so that policy rules can read
//! `model.score`; see `docs/architecture.md`.

pub mod checkpoint;
pub mod config;
pub mod deployment;
pub mod explain;
pub mod pipeline;
pub mod replay;
pub mod train;

pub use checkpoint::{CheckpointError, CheckpointMeta, CheckpointStore};
pub use config::Config;
pub use deployment::{Deployment, LoadError};
pub use pipeline::{Outcome, Pipeline};
