//! Single-event scoring: a 200-tree, 31-leaf LightGBM model over 50 inputs,
//! trained here on synthetic data, scored through the engine's scorecard
//! (manifest mapping from feature slots, LightGBM's single-row fast path,
//! points) with and without 3 reason codes (SHAP contributions from the
//! native TreeSHAP and the top-3 selection). Events rotate over 1,024
//! different feature vectors. The contributions alone are also timed: native
//! (as served: per-leaf tables, recursive where they would be large), all
//! recursive, and through LightGBM's `predict_contrib`.
//!
//! `cargo bench -p riskd-benches --bench scorecard`
//!
//! Also the shipped A card with and without 3 reason codes on the recorded
//! applications. After criterion's figures, a plain timing loop prints
//! p50/p99/p99.9.

// The allocator `riskd` uses.
use riskd_alloc as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use riskd_core::{Decoder, Event, KeyRing, Limits};
use riskd_features::{FeatureEngine, FeatureSet, FeatureVector};
use riskd_scorecard::trees::Forest;
use riskd_scorecard::treeshap::Explainer;
use riskd_scorecard::{lgbm, ModelHeader, ModelSpec, Scorecard};

const INPUTS: usize = 50;
const ROWS: usize = 20_000;

/// A small deterministic generator (the bench needs no statistical quality).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 50 count features over the user, one per window length.
fn feature_set() -> FeatureSet {
    let text: String = (0..INPUTS)
        .map(|i| {
            format!(
                "[[feature]]\nname = \"user.events_{}h\"\nentity = \"user\"\nagg = \"count\"\nwindow = \"{}h\"\n\n",
                i + 1,
                i + 1
            )
        })
        .collect();
    FeatureSet::from_sources(&[("bench.toml".into(), text)]).unwrap_or_else(|e| panic!("{e:?}"))
}

fn manifest() -> String {
    let mut text = String::from(
        "name = \"bench_card\"\nversion = \"1\"\ncard = \"application\"\nevents = [\"loan_application\"]\nmodel_file = \"model.txt\"\n\n[scaling]\nbase_score = 600\nbase_odds = 20\npdo = 40\n",
    );
    for i in 0..INPUTS {
        text += &format!(
            "\n[[input]]\nname = \"x{i:02}\"\nsource = \"user.events_{}h\"\nlabel = \"input {i}\"\nreason_code = \"B{i:02}\"\n",
            i + 1
        );
    }
    text
}

/// Synthetic rows: counts with some missing values; the log-odds depend on
/// a dozen inputs, with interactions, so trees use their 31 leaves.
fn data(rng: &mut Lcg, n: usize) -> (Vec<f64>, Vec<f32>) {
    let mut rows = Vec::with_capacity(n * INPUTS);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let start = rows.len();
        for i in 0..INPUTS {
            let v = if rng.next() < 0.1 { f64::NAN } else { (rng.next() * (5.0 + i as f64)).floor() };
            rows.push(v);
        }
        let r = &rows[start..];
        let g = |i: usize| if r[i].is_nan() { 0.5 } else { r[i] / (5.0 + i as f64) };
        let z = -1.0 + 2.0 * g(0) - 1.5 * g(3) + 1.2 * g(7) * g(11) + (g(13) - 0.5).abs() * 2.0 - g(21) + 0.8 * g(30)
            - 0.7 * g(42)
            + if g(5) > 0.7 { 0.9 } else { 0.0 };
        labels.push(f32::from(u8::from(rng.next() < 1.0 / (1.0 + (-z).exp()))));
    }
    (rows, labels)
}

fn percentiles(mut ns: Vec<u128>) -> (f64, f64, f64) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
    (at(0.5), at(0.99), at(0.999))
}

fn bench(c: &mut Criterion) {
    let features = Arc::new(feature_set());
    let mut rng = Lcg(20261125);
    let (rows, labels) = data(&mut rng, ROWS);
    let names: Vec<String> = (0..INPUTS).map(|i| format!("x{i:02}")).collect();
    let params = serde_json::json!({
        "objective": "binary", "num_iterations": 200, "num_leaves": 31, "learning_rate": 0.05,
        "min_data_in_leaf": 20, "seed": 7, "deterministic": true, "force_row_wise": true,
        "num_threads": 1, "verbosity": -1
    });
    let text = lgbm::train(&rows, &labels, &names, params.as_object().unwrap()).unwrap();
    let trees = text.matches("\nTree=").count();
    let full = text.matches("num_leaves=31\n").count();
    assert_eq!(trees, 200, "200 trees");
    assert!(full >= 190, "only {full} of 200 trees have 31 leaves");
    assert_eq!(ModelHeader::parse(&text).feature_infos.len(), INPUTS);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.toml"), manifest()).unwrap();
    std::fs::write(dir.path().join("model.txt"), &text).unwrap();
    let t = Instant::now();
    let spec = Arc::new(ModelSpec::load(dir.path(), &features).unwrap());
    let loaded = t.elapsed();
    let mut card = Scorecard::new(spec.clone()).unwrap();
    eprintln!(
        "bench model: {trees} trees, {full} with 31 leaves, {INPUTS} inputs; loaded in {loaded:.2?}; {:?}",
        spec.explainer()
    );

    // One real application event (the inputs read feature slots only).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let keys = KeyRing::from_toml(
        &format!(
            "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
            "12".repeat(32),
            "34".repeat(32)
        ),
        "bench-keys",
    )
    .unwrap();
    let decoder = Decoder::new(Limits::default(), keys.clone());
    let recorded = std::fs::read_to_string(repo.join("replay-data/events.jsonl")).unwrap();
    let ev: Event = recorded
        .lines()
        .filter_map(|l| decoder.decode(l.as_bytes()).ok())
        .find(|e| e.kind == riskd_core::EventKind::LoanApplication)
        .unwrap();
    // Feature vectors from fresh rows of the same distribution.
    let (probe, _) = data(&mut rng, 1024);
    let vectors: Vec<FeatureVector> = probe.chunks(INPUTS).map(|r| FeatureVector(r.to_vec())).collect();

    let mut group = c.benchmark_group("scorecard");
    group.sample_size(30);
    let mut k = 0usize;
    group.bench_function("200_trees_31_leaves_50_inputs", |b| {
        b.iter(|| {
            k = (k + 1) & 1023;
            std::hint::black_box(card.score_event(&ev, &vectors[k], 0).unwrap())
        })
    });
    group.bench_function("200_trees_31_leaves_50_inputs_3_reason_codes", |b| {
        b.iter(|| {
            k = (k + 1) & 1023;
            let s = card.score_event(&ev, &vectors[k], 3).unwrap();
            std::hint::black_box((s, card.adverse().len()))
        })
    });
    // The contributions alone, by method, on the rows the events produce.
    let forest = Forest::parse(&text).unwrap();
    let explainers = [("native", Explainer::new(&forest)), ("recursive", Explainer::with_limits(&forest, 0, 0))];
    let mut out = vec![0.0; INPUTS + 1];
    for (method, explainer) in &explainers {
        let mut scratch = explainer.scratch();
        group.bench_function(format!("200_trees_31_leaves_50_inputs_contributions_{method}"), |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                explainer.contributions(&vectors[k].0, &mut scratch, &mut out);
                std::hint::black_box(out[0])
            })
        });
    }
    group.bench_function("200_trees_31_leaves_50_inputs_contributions_lightgbm", |b| {
        b.iter(|| {
            k = (k + 1) & 1023;
            card.lightgbm_contributions_row(&vectors[k].0, &mut out).unwrap();
            std::hint::black_box(out[0])
        })
    });
    group.finish();

    // The shipped A card (200 trees, mostly small) on the recorded
    // applications, with the features the engine computes for them.
    let shipped = Arc::new(FeatureSet::load(&repo.join("features")).unwrap());
    let a_card = Arc::new(ModelSpec::load(&repo.join("models/a_card"), &shipped).unwrap());
    let mut engine = FeatureEngine::new(shipped.clone(), keys.protect("feature-state-key", "").0);
    let mut fv = FeatureVector::default();
    let mut apps = Vec::new();
    for line in recorded.lines() {
        let Ok(e) = decoder.decode(line.as_bytes()) else { continue };
        engine.update(&e, &mut fv);
        if a_card.scores(e.kind) {
            apps.push((e, fv.clone()));
        }
    }
    eprintln!("a_card: {:?}", a_card.explainer());
    let mut a_card = Scorecard::new(a_card).unwrap();
    let mut group = c.benchmark_group("scorecard");
    group.sample_size(30);
    let mut k = 0usize;
    group.bench_function("a_card", |b| {
        b.iter(|| {
            k = (k + 1) % apps.len();
            let (e, fv) = &apps[k];
            std::hint::black_box(a_card.score_event(e, fv, 0).unwrap())
        })
    });
    group.bench_function("a_card_3_reason_codes", |b| {
        b.iter(|| {
            k = (k + 1) % apps.len();
            let (e, fv) = &apps[k];
            std::hint::black_box(a_card.score_event(e, fv, 3).unwrap())
        })
    });
    group.finish();

    for (name, reasons) in [("without reason codes", 0), ("with 3 reason codes", 3)] {
        let n = if reasons == 0 { 100_000 } else { 5_000 };
        let mut ns = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            std::hint::black_box(card.score_event(&ev, &vectors[i & 1023], reasons).unwrap());
            ns.push(t.elapsed().as_nanos());
        }
        let (p50, p99, p999) = percentiles(ns);
        eprintln!("scorecard {name}: p50 {p50:.2} us, p99 {p99:.2} us, p99.9 {p999:.2} us ({n} events)");
    }
    for (name, reasons) in [("without reason codes", 0), ("with 3 reason codes", 3)] {
        let n = 100_000;
        let mut ns = Vec::with_capacity(n);
        for i in 0..n {
            let (e, fv) = &apps[i % apps.len()];
            let t = Instant::now();
            std::hint::black_box(a_card.score_event(e, fv, reasons).unwrap());
            ns.push(t.elapsed().as_nanos());
        }
        let (p50, p99, p999) = percentiles(ns);
        eprintln!("a_card {name}: p50 {p50:.2} us, p99 {p99:.2} us, p99.9 {p999:.2} us ({n} events)");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
