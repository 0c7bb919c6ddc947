//! Tail latency of the in-process stages: every call timed on its own into
//! an HDR histogram (ns, 3 significant digits), on one thread, over the same
//! generated workload as the `stages` bench. Criterion gives means and
//! medians; this gives p50/p99/p99.9/max, which is what the latency budget
//! is about.
//!
//! `cargo bench -p riskd-benches --bench latency`
//!
//! Prints a table and writes `benches/out/latency.json` (read by
//! `scripts/bench.sh`). Each timing includes one `Instant::now()` pair,
//! whose own cost is measured and reported as `timer`.

// The allocator `riskd` uses.
use riskd_alloc as _;
use std::hint::black_box;
use std::time::Instant;

use hdrhistogram::Histogram;
use riskd_benches::{decoded, decoder, deployment, keys, pipeline, repo, workload};
use riskd_core::{EventKind, SourcePosition};
use riskd_features::{FeatureEngine, FeatureVector};
use riskd_pipeline::pipeline::state_key;
use riskd_pipeline::Outcome;
use riskd_scorecard::Scorecard;

const USERS: u32 = 20_000;
const EVENTS: u64 = 200_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn time<T>(h: &mut Histogram<u64>, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    h.saturating_record(t.elapsed().as_nanos() as u64);
    r
}

struct Row {
    name: &'static str,
    what: &'static str,
    h: Histogram<u64>,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument runs nothing else here.
    if std::env::args().skip(1).any(|a| a == "--list") {
        return;
    }
    let dep = deployment();
    let lines = workload(USERS, EVENTS);
    let events = decoded(&lines);
    let mut rows = Vec::new();

    let mut timer = histogram();
    for _ in 0..200_000 {
        time(&mut timer, || ());
    }
    rows.push(Row { name: "timer", what: "an empty timed call (the overhead in every row)", h: timer });

    let dec = decoder();
    let mut h = histogram();
    for _ in 0..2 {
        for l in &lines {
            black_box(time(&mut h, || dec.decode(black_box(l))).is_ok());
        }
    }
    rows.push(Row { name: "decode_validate", what: "bytes to a validated event", h });

    let key = state_key(&keys());
    let mut engine = FeatureEngine::new(dep.features.clone(), key);
    let mut fv = FeatureVector::default();
    let mut h = histogram();
    let mut apps = Vec::new();
    for ev in &events {
        time(&mut h, || engine.update(ev, &mut fv));
        if ev.kind == EventKind::LoanApplication {
            apps.push((ev, fv.clone()));
        }
    }
    rows.push(Row { name: "features_update", what: "update and read every feature, stream order", h });

    let mut card = Scorecard::new(dep.models().models[0].clone()).expect("A card");
    for (name, what, reasons) in [
        ("scorecard_no_reasons", "A card, loan applications, no reason codes", 0),
        ("scorecard_3_reasons", "A card, loan applications, 3 reason codes", 3),
    ] {
        let mut h = histogram();
        for _ in 0..5 {
            for (ev, fv) in &apps {
                black_box(time(&mut h, || card.score(ev, fv, reasons)).is_ok());
            }
        }
        rows.push(Row { name, what, h });
    }

    // Whole decision: warm up on a throwaway pipeline, then one pass in
    // stream order from an empty state.
    let mut out = Vec::with_capacity(4096);
    let decide = |p: &mut riskd_pipeline::Pipeline, i: usize, out: &mut Vec<u8>| {
        out.clear();
        match p.process(&lines[i], || SourcePosition::File { path: String::new(), line: i as u64 }) {
            Outcome::Decision(d) => serde_json::to_writer(&mut *out, &d),
            Outcome::DeadLetter(dl) => serde_json::to_writer(&mut *out, &dl),
        }
        .expect("encodes");
    };
    let mut warm = pipeline(&dep);
    for i in 0..lines.len().min(20_000) {
        decide(&mut warm, i, &mut out);
    }
    let mut p = pipeline(&dep);
    let (mut all, mut apps_h, mut other) = (histogram(), histogram(), histogram());
    for (i, ev) in events.iter().enumerate() {
        let t = Instant::now();
        decide(&mut p, i, &mut out);
        let ns = t.elapsed().as_nanos() as u64;
        all.saturating_record(ns);
        if ev.kind == EventKind::LoanApplication { &mut apps_h } else { &mut other }.saturating_record(ns);
    }
    rows.push(Row { name: "decision", what: "decode, features, scorecard, rules, encode; all events", h: all });
    rows.push(Row { name: "decision_applications", what: "the same, loan applications only", h: apps_h });
    rows.push(Row { name: "decision_other", what: "the same, every other event type", h: other });

    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "workload: {} events, {} loan applications; {} features, {} rules",
        events.len(),
        apps.len(),
        dep.features.len(),
        dep.rules().rules.rule_count()
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "stage", "samples", "p50 us", "p99 us", "p99.9 us", "max us", "mean us"
    );
    let mut json = Vec::new();
    for r in &rows {
        println!(
            "{:<24} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            r.name,
            r.h.len(),
            us(&r.h, 0.5),
            us(&r.h, 0.99),
            us(&r.h, 0.999),
            r.h.max() as f64 / 1000.0,
            r.h.mean() / 1000.0
        );
        json.push(serde_json::json!({
            "stage": r.name,
            "what": r.what,
            "samples": r.h.len(),
            "p50_us": us(&r.h, 0.5),
            "p99_us": us(&r.h, 0.99),
            "p999_us": us(&r.h, 0.999),
            "max_us": r.h.max() as f64 / 1000.0,
            "mean_us": r.h.mean() / 1000.0,
        }));
    }
    let dir = repo().join("benches/out");
    std::fs::create_dir_all(&dir).expect("benches/out");
    let report = serde_json::json!({ "events": events.len(), "applications": apps.len(), "rows": json });
    std::fs::write(dir.join("latency.json"), serde_json::to_string_pretty(&report).expect("json")).expect("write");
    eprintln!("wrote {}", dir.join("latency.json").display());
}
