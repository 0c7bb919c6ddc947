//! Benchmarks live in `benches/`; run them with `cargo bench -p riskd-benches`,
//! or the whole suite (benches, replay throughput, broker load test) with
//! `scripts/bench.sh`, which also rewrites the tables in `BENCHMARKS.md`.
//!
//! - `rules`: 100 synthetic rules over one application (criterion).
//! - `stages`: decode+validate, feature update, scorecard with and without
//!   reason codes, and the whole in-process decision, with the shipped
//!   `features/`, `rules/` and `models/` over a generated workload (criterion).
//! - `latency`: the same stages timed one call at a time into histograms,
//!   for the tail (p99, p99.9, max) that criterion's means and medians hide.
//!
//! This library holds what they share: the shipped deployment, a fixed key
//! ring and the generated workload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riskd_core::{Event, KeyRing, Limits};
use riskd_gen::{GenConfig, Generator};
use riskd_pipeline::config::EngineConfig;
use riskd_pipeline::{Deployment, Pipeline};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default engine config with the shipped `features/`, `rules/` and
/// `models/a_card`, by absolute path.
pub fn engine_config() -> EngineConfig {
    let root = repo();
    EngineConfig {
        features_dir: root.join("features"),
        rules_dir: root.join("rules"),
        models: vec![root.join("models/a_card")],
        ..EngineConfig::default()
    }
}

pub fn deployment() -> Arc<Deployment> {
    Arc::new(Deployment::load(&engine_config()).unwrap_or_else(|e| panic!("the shipped deployment loads: {e}")))
}

/// A fixed key ring, so every run hashes identifiers the same way.
pub fn keys() -> KeyRing {
    let text = format!(
        "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
        "5a".repeat(32),
        "a5".repeat(32)
    );
    KeyRing::from_toml(&text, "bench-keys").expect("bench key ring")
}

pub fn pipeline(deployment: &Arc<Deployment>) -> Pipeline {
    Pipeline::new(deployment.clone(), keys(), &engine_config()).expect("pipeline")
}

pub fn decoder() -> riskd_core::Decoder {
    riskd_core::Decoder::new(Limits { max_event_bytes: engine_config().max_event_bytes, ..Limits::default() }, keys())
}

/// A generated workload: `events` lines over `users` borrowers and 30 days
/// (seed 7), in event-time order, as the producer would send them.
pub fn workload(users: u32, events: u64) -> Vec<Vec<u8>> {
    let cfg = GenConfig { seed: 7, users, days: 30, events, ..GenConfig::default() };
    let mut gen = Generator::new(&cfg).expect("generator");
    let mut out = Vec::with_capacity(events as usize);
    let mut line = String::new();
    while gen.next_into(&mut line).is_some() {
        out.push(line.as_bytes().to_vec());
        line.clear();
    }
    out
}

/// The workload decoded (every generated line is a valid event).
pub fn decoded(lines: &[Vec<u8>]) -> Vec<Event> {
    let d = decoder();
    lines.iter().map(|l| d.decode(l).expect("generated events are valid")).collect()
}

/// Times `iters` steps over a stream of `n` items that must be taken in
/// order from a fresh state: `step(state, i)` for i = 0, 1, ..., wrapping to a
/// new `fresh()` state after item n-1. Only the steps are timed.
pub fn timed_in_order<S>(
    iters: u64,
    n: usize,
    fresh: &mut impl FnMut() -> S,
    state: &mut (S, usize),
    mut step: impl FnMut(&mut S, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        if state.1 >= n {
            *state = (fresh(), 0);
        }
        let run = left.min((n - state.1) as u64);
        let t = Instant::now();
        for _ in 0..run {
            step(&mut state.0, state.1);
            state.1 += 1;
        }
        total += t.elapsed();
        left -= run;
    }
    total
}
