//! The live driver and its operations surface.
//!
//! [`serve::run`] consumes the input topics as a member of a consumer group,
//! runs every message through the shared [`riskd_pipeline::Pipeline`],
//! produces one decision (or dead letter) per message, and stores a
//! message's offset for commit only after the broker has acknowledged its
//! output. Offsets are stored in input order per partition, so a commit
//! never moves past an input whose output is not yet acknowledged: a crash
//! can repeat decisions (with the same decision id) but never lose one.
//!
//! [`admin`] creates topics explicitly (the local broker does not
//! auto-create) and [`ops`] serves `/metrics`, `/healthz` and `/readyz`, and
//! the token-guarded admin endpoints `/status` and `POST /admin/reload`.
//! [`loadtest`] measures the engine end to end through a broker against a
//! pass-through on the same broker.

pub mod admin;
pub mod client;
pub mod demo;
pub mod loadtest;
pub mod local_broker;
pub mod ops;
pub mod reload;
pub mod serve;
