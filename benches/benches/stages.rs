//! Per-stage criterion benches with the shipped `features/`, `rules/` and
//! `models/a_card`, over a generated workload (seed 7, 20,000 users, 200,000
//! events, the generator's event-type mix):
//!
//! - `decode_validate`: bytes to a validated event (identifiers hashed);
//! - `features_update`: add the event to the feature state and read every
//!   feature, in stream order from an empty state;
//! - `scorecard/*`: the 200-tree A card on loan applications, with no reason
//!   codes (single-row fast path) and with 3 (per-feature contributions);
//! - `decision`: [`Pipeline::process`] plus JSON encoding of the decision,
//!   in stream order from an empty state (the whole in-process decision).
//!
//! `cargo bench -p riskd-benches --bench stages`
//!
//! Criterion reports means and medians; the tails come from the `latency`
//! bench, which times the same work one call at a time.

// The allocator `riskd` uses.
use riskd_alloc as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use riskd_benches::{decoded, decoder, deployment, keys, pipeline, timed_in_order, workload};
use riskd_core::{EventKind, SourcePosition};
use riskd_features::{FeatureEngine, FeatureVector};
use riskd_pipeline::pipeline::state_key;
use riskd_pipeline::Outcome;
use riskd_scorecard::Scorecard;

const USERS: u32 = 20_000;
const EVENTS: u64 = 200_000;

fn bench(c: &mut Criterion) {
    let dep = deployment();
    let lines = workload(USERS, EVENTS);
    let events = decoded(&lines);
    let n = lines.len();
    eprintln!(
        "workload: {n} events, {} loan applications; {} features, {} rules, {} model(s)",
        events.iter().filter(|e| e.kind == EventKind::LoanApplication).count(),
        dep.features.len(),
        dep.rules().rules.rule_count(),
        dep.models().models.len()
    );

    let dec = decoder();
    c.bench_function("stages/decode_validate", |b| {
        let mut i = 0;
        b.iter(|| {
            let r = dec.decode(black_box(&lines[i % n]));
            i += 1;
            r
        })
    });

    let key = state_key(&keys());
    let mut fresh_features = || FeatureEngine::new(dep.features.clone(), key);
    let mut state = (fresh_features(), 0);
    let mut fv = FeatureVector::default();
    c.bench_function("stages/features_update", |b| {
        b.iter_custom(|iters| {
            timed_in_order(iters, n, &mut fresh_features, &mut state, |engine, i| {
                black_box(engine.update(&events[i], &mut fv));
            })
        })
    });

    // Applications with the feature values they were scored on.
    let mut engine = FeatureEngine::new(dep.features.clone(), key);
    let mut apps = Vec::new();
    for ev in &events {
        engine.update(ev, &mut fv);
        if ev.kind == EventKind::LoanApplication {
            apps.push((ev.clone(), fv.clone()));
        }
    }
    let mut card = Scorecard::new(dep.models().models[0].clone()).expect("A card");
    for (name, reasons) in [("stages/scorecard_no_reasons", 0), ("stages/scorecard_3_reasons", 3)] {
        c.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                let (ev, fv) = &apps[i % apps.len()];
                i += 1;
                card.score(black_box(ev), fv, reasons).expect("scores")
            })
        });
    }

    let mut fresh_pipeline = || pipeline(&dep);
    let mut state = (fresh_pipeline(), 0);
    let mut out = Vec::with_capacity(4096);
    c.bench_function("stages/decision", |b| {
        b.iter_custom(|iters| {
            timed_in_order(iters, n, &mut fresh_pipeline, &mut state, |p, i| {
                out.clear();
                let outcome = p.process(&lines[i], || SourcePosition::File { path: String::new(), line: i as u64 });
                match outcome {
                    Outcome::Decision(d) => serde_json::to_writer(&mut out, &d),
                    Outcome::DeadLetter(dl) => serde_json::to_writer(&mut out, &dl),
                }
                .expect("encodes");
                black_box(&out);
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(50);
    targets = bench
}
criterion_main!(benches);
