//! Serving parity: what a [`Scorecard`] computes on one event (LightGBM's
//! single-row fast path, the points scaling and the reason codes) must equal
//! what LightGBM itself computes on the same rows in batch, for the shipped
//! A card on rows built from the recorded events, and for a model trained
//! here on generated data with missing values.
//!
//! Reason codes come from the native TreeSHAP ([`riskd_scorecard::treeshap`]):
//! every contribution and the bias must equal LightGBM's `predict_contrib`
//! within 1e-9, with both of its methods (tables and the recursive
//! algorithm), on the A card over rows with missing, zero and out-of-range
//! values, on models with categorical splits and missing values, and on a
//! model of 31-leaf trees.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use compact_str::CompactString;
use lightgbm3::{Booster, Dataset};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use riskd_core::event::{Entities, Event, EventKind, LoanApplication, Payload, Purpose, RepaymentMethod};
use riskd_core::{Decoder, KeyRing, Limits, ReasonSource};
use riskd_features::{FeatureEngine, FeatureSet, FeatureVector};
use riskd_scorecard::trees::Forest;
use riskd_scorecard::treeshap::{Explainer, DEFAULT_TABLE_LIMIT};
use riskd_scorecard::{ModelError, ModelHeader, ModelSpec, Scaling, Scorecard};

const TOL: f64 = 1e-9;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn keys() -> KeyRing {
    let text = format!(
        "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
        "11".repeat(32),
        "22".repeat(32)
    );
    KeyRing::from_toml(&text, "test-keys").unwrap()
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Points computed independently of [`Scaling::points`]: base score at base
/// odds, `pdo` more points for every doubling of the good:bad odds.
fn points_by_hand(s: &Scaling, p_bad: f64) -> f64 {
    s.base_score + s.pdo * (((1.0 - p_bad) / p_bad) / s.base_odds).log2()
}

/// Scores every (event, features) case through the scorecard and checks it
/// against LightGBM's batch prediction and contributions from `reference`
/// (a booster loaded independently from the model file). Returns how many
/// cases had at least one reason code.
fn check_cases(card: &mut Scorecard, reference: &Booster, cases: &[(Event, FeatureVector)]) -> usize {
    let spec = card.spec();
    let w = spec.manifest.inputs.len();
    let scaling = spec.manifest.scaling;
    let inputs = spec.manifest.inputs.clone();
    let mut rows = Vec::with_capacity(cases.len() * w);
    let mut row = Vec::new();
    for (ev, fv) in cases {
        spec.fill_row(ev, fv, &mut row);
        assert_eq!(row.len(), w);
        rows.extend_from_slice(&row);
    }
    let batch = reference.predict_with_params(&rows, w as i32, true, "num_threads=1").unwrap();
    let contrib = reference.predict_contrib(&rows, w as i32, true).unwrap();
    assert_eq!(batch.len(), cases.len());
    assert_eq!(contrib.len(), cases.len() * (w + 1));

    check_contributions(card.spec().model_text(), reference, &rows, w);
    let mut native = vec![0.0; w + 1];
    let mut with_reasons = 0;
    for (k, (ev, fv)) in cases.iter().enumerate() {
        let r = &rows[k * w..(k + 1) * w];
        let p = batch[k];
        let fast = card.predict_row(r).unwrap();
        assert!((fast - p).abs() <= TOL, "case {k} ({}): fast path {fast} vs batch {p}", ev.id);

        let score = card.score(ev, fv, 3).unwrap();
        assert!((score.probability - p).abs() <= TOL, "case {k}: score {} vs batch {p}", score.probability);
        assert_eq!(score.points, scaling.points(score.probability), "case {k}: points are not Scaling::points");
        let by_hand = points_by_hand(&scaling, p);
        assert!((score.points - by_hand).abs() <= 1e-6, "case {k}: points {} vs by hand {by_hand}", score.points);

        // Contributions: per input, then the bias; they add up to the log-odds.
        let c = &contrib[k * (w + 1)..(k + 1) * (w + 1)];
        card.contributions_row(r, &mut native).unwrap();
        for (i, (a, b)) in native.iter().zip(c).enumerate() {
            assert!((a - b).abs() <= TOL, "case {k} value {i}: native {a} vs LightGBM {b}");
        }
        let logit = (p / (1.0 - p)).ln();
        let sum: f64 = c.iter().sum();
        assert!((sum - logit).abs() <= 1e-7, "case {k}: contributions sum to {sum}, log-odds {logit}");

        let mut adverse: Vec<(usize, f64)> = c[..w].iter().copied().enumerate().filter(|&(_, v)| v > 0.0).collect();
        adverse.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        adverse.truncate(3);
        assert_eq!(score.reasons.len(), adverse.len(), "case {k}: reasons {:?} vs contributions {c:?}", score.reasons);
        for (j, (reason, &(i, v))) in score.reasons.iter().zip(&adverse).enumerate() {
            // A near-tie may be ordered differently by the two code paths.
            let got = inputs.iter().position(|inp| inp.name == reason.id).expect("reason names an input");
            assert!(
                got == i || (c[got] - v).abs() <= 1e-12,
                "case {k} reason {j}: {} ({}) but LightGBM's top contribution is {} ({v})",
                reason.code,
                c[got],
                inputs[i].reason_code
            );
            let inp = &inputs[got];
            assert_eq!(reason.code, inp.reason_code);
            assert_eq!(reason.label.as_deref(), Some(inp.label.as_str()));
            assert_eq!(reason.source, ReasonSource::Model);
            assert_eq!((reason.stage.as_ref(), reason.action, reason.shadow), (None, None, false));
            assert_eq!(reason.contribution, Some(round6(c[got])), "case {k}: {}", reason.code);
        }
        let contributions: Vec<f64> = score.reasons.iter().filter_map(|r| r.contribution).collect();
        assert!(contributions.windows(2).all(|x| x[0] >= x[1]), "case {k}: not descending: {contributions:?}");
        if !score.reasons.is_empty() {
            with_reasons += 1;
        }
        // No reasons asked for, none given; the score is the same.
        let bare = card.score(ev, fv, 0).unwrap();
        assert!(bare.reasons.is_empty());
        assert_eq!((bare.probability, bare.points), (score.probability, score.points));
    }
    with_reasons
}

/// The native contributions of every row (row-major, `w` inputs), with each
/// method (tables over node decisions, leaf tables, the recursive
/// algorithm) where the model allows it, against LightGBM's
/// batch `predict_contrib`: every value and the bias within [`TOL`], and
/// contributions plus bias equal to LightGBM's raw score. The native tree
/// walk gives LightGBM's raw score too. Returns the largest difference.
fn check_contributions(model_text: &str, reference: &Booster, rows: &[f64], w: usize) -> f64 {
    let forest = Forest::parse(model_text).unwrap();
    assert_eq!(forest.width, w);
    let want = reference.predict_contrib(rows, w as i32, true).unwrap();
    let raw = reference.raw_scores(rows, w as i32, true).unwrap();
    let n = rows.len() / w;
    assert_eq!((want.len(), raw.len()), (n * (w + 1), n));
    let mut worst = 0.0f64;
    let methods = [
        Explainer::new(&forest),
        Explainer::with_limits(&forest, DEFAULT_TABLE_LIMIT, 0),
        Explainer::with_limits(&forest, 0, 0),
    ];
    for explainer in methods {
        let mut scratch = explainer.scratch();
        let mut out = vec![0.0; w + 1];
        for k in 0..n {
            let row = &rows[k * w..(k + 1) * w];
            explainer.contributions(row, &mut scratch, &mut out);
            let c = &want[k * (w + 1)..(k + 1) * (w + 1)];
            for (i, (a, b)) in out.iter().zip(c).enumerate() {
                assert!((a - b).abs() <= TOL, "row {k} {row:?} value {i}: native {a} vs LightGBM {b} ({explainer:?})");
                worst = worst.max((a - b).abs());
            }
            let sum: f64 = out.iter().sum();
            assert!((sum - raw[k]).abs() <= TOL, "row {k}: contributions sum to {sum}, raw score {}", raw[k]);
            let walked = forest.raw_score(row);
            assert!((walked - raw[k]).abs() <= 1e-12, "row {k}: tree walk {walked} vs LightGBM raw {}", raw[k]);
        }
    }
    worst
}

/// Rows that probe every split of a model: per input, NaN, zeros (and values
/// within LightGBM's zero threshold), each threshold and its neighbours,
/// values past the training range and infinities, mixed at random.
fn probe_rows(forest: &Forest, n: usize, seed: u64) -> Vec<f64> {
    let w = forest.width;
    let mut values: Vec<Vec<f64>> =
        vec![vec![f64::NAN, 0.0, -0.0, 1e-36, -1e-36, 1e-300, 1e300, -1e300, f64::INFINITY, f64::NEG_INFINITY]; w];
    for tree in &forest.trees {
        for (node, &f) in tree.split_feature.iter().enumerate() {
            let t = tree.threshold[node];
            // The neighbouring doubles (the crate supports Rust before `next_up`).
            let step = |t: f64, up: bool| {
                let b = t.to_bits();
                match (t == 0.0, (t > 0.0) == up) {
                    (true, _) => f64::from_bits(1) * if up { 1.0 } else { -1.0 },
                    (false, true) => f64::from_bits(b + 1),
                    (false, false) => f64::from_bits(b - 1),
                }
            };
            values[f as usize].extend([t, step(t, true), step(t, false), t + 1.0, t - 1.0, t * 10.0, -t]);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * w).map(|i| *values[i % w].get(rng.gen_range(0..values[i % w].len())).unwrap()).collect()
}

/// Every recorded application with the feature vector the engine computes
/// for it, replaying the recording in file order (it is sorted by event time;
/// its malformed lines carry the time of the line before).
fn recorded_cases(spec: &ModelSpec, features: &Arc<FeatureSet>) -> Vec<(Event, FeatureVector)> {
    let keys = keys();
    let decoder = Decoder::new(Limits::default(), keys.clone());
    let mut engine = FeatureEngine::new(features.clone(), keys.protect("feature-state-key", "").0);
    let mut fv = FeatureVector::default();
    let text = std::fs::read_to_string(repo().join("replay-data/events.jsonl")).unwrap();
    let mut cases = Vec::new();
    for line in text.lines() {
        let Ok(ev) = decoder.decode(line.as_bytes()) else { continue };
        engine.update(&ev, &mut fv);
        if spec.scores(ev.kind) {
            cases.push((ev, fv.clone()));
        }
    }
    cases
}

fn load_a_card() -> (Arc<FeatureSet>, Arc<ModelSpec>, Booster) {
    let root = repo();
    let features = Arc::new(FeatureSet::load(&root.join("features")).unwrap());
    let spec = Arc::new(ModelSpec::load(&root.join("models/a_card"), &features).unwrap());
    let reference = Booster::from_file(&root.join("models/a_card/model.txt").display().to_string()).unwrap();
    (features, spec, reference)
}

#[test]
fn shipped_a_card_matches_lightgbm_batch_on_recorded_applications() {
    let (features, spec, reference) = load_a_card();
    assert!(spec.scores(EventKind::LoanApplication) && !spec.scores(EventKind::Login));
    assert_eq!(reference.num_features() as usize, spec.manifest.inputs.len());
    let cases = recorded_cases(&spec, &features);
    assert_eq!(cases.len(), 270, "every recorded application is scored");
    let mut card = Scorecard::new(spec.clone()).unwrap();
    let with_reasons = check_cases(&mut card, &reference, &cases);
    assert!(with_reasons > 200, "only {with_reasons} of 270 applications had adverse reasons");
    eprintln!("a_card: 270 applications, {with_reasons} with adverse reasons");
}

#[test]
fn shipped_a_card_contributions_match_lightgbm_on_probe_rows() {
    let (_, spec, reference) = load_a_card();
    let forest = Forest::parse(spec.model_text()).unwrap();
    assert_eq!(forest.trees.len(), 200);
    let rows = probe_rows(&forest, 3000, 5);
    let worst = check_contributions(spec.model_text(), &reference, &rows, forest.width);
    // Every tree is tabulated over its node decisions, and the tables are small.
    let explainer = spec.explainer();
    assert_eq!(explainer.methods(), (200, 0, 0), "{explainer:?}");
    assert!(explainer.table_values() < 200_000, "{explainer:?}");
    // The scorecard's own row path, and LightGBM's single-row fast path, agree.
    let mut card = Scorecard::new(spec.clone()).unwrap();
    let w = forest.width;
    let (mut a, mut b) = (vec![0.0; w + 1], vec![0.0; w + 1]);
    for row in rows.chunks(w).take(500) {
        card.contributions_row(row, &mut a).unwrap();
        card.lightgbm_contributions_row(row, &mut b).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= TOL), "{row:?}: {a:?} vs {b:?}");
    }
    eprintln!("a_card: 3000 probe rows, worst |native - LightGBM| = {worst:e}; {explainer:?}");
}

/// A model of 200 trees of 31 leaves, with missing values and a categorical
/// input whose codes need two bitset words (the term in months, up to 36).
#[test]
fn deep_trees_with_categories_and_missing_values_match_lightgbm() {
    let data = generate(3000, 31);
    let rows: Vec<f64> = data.iter().flat_map(|g| g.row).collect();
    let labels: Vec<f32> = data.iter().map(|g| g.label).collect();
    let names: Vec<String> =
        ["amount", "term", "income", "rate", "fees", "max_fees", "apps_7d", "device_users"].map(String::from).into();
    let mut params = test_params().as_object().unwrap().clone();
    params.insert("num_iterations".into(), 200.into());
    params.insert("num_leaves".into(), 31.into());
    params.insert("min_data_in_leaf".into(), 5.into());
    params.insert("categorical_feature".into(), "1".into());
    params.insert("min_data_per_group".into(), 5.into());
    params.insert("cat_smooth".into(), 1.into());
    let text = riskd_scorecard::lgbm::train(&rows, &labels, &names, &params).unwrap();
    let forest = Forest::parse(&text).unwrap();
    let full = forest.trees.iter().filter(|t| t.num_leaves() == 31).count();
    assert!(full > 150, "only {full} trees of 31 leaves");
    assert!(text.contains("num_cat=1"), "no categorical split");
    let reference = Booster::from_string(&text).unwrap();

    let mut probes = probe_rows(&forest, 2000, 8);
    probes.extend_from_slice(&rows[..1000 * W]);
    let worst = check_contributions(&text, &reference, &probes, W);
    let explainer = Explainer::new(&forest);
    eprintln!("31 leaves: {} rows, worst |native - LightGBM| = {worst:e}; {explainer:?}", probes.len() / W);
}

fn load_error(manifest: &str, model: &str) -> ModelError {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    std::fs::write(dir.path().join("model.txt"), model).unwrap();
    let features = Arc::new(FeatureSet::from_sources(&[("test.toml".into(), TEST_FEATURES.into())]).unwrap());
    ModelSpec::load(dir.path(), &features).unwrap_err()
}

/// The test manifest with `term` and `apps` as categorical inputs.
fn categorical_manifest() -> String {
    TEST_MANIFEST.split("\n[[input]]").next().unwrap().to_string()
        + "
[[input]]
name = \"term\"
source = \"event.term_months\"
label = \"Term\"
reason_code = \"C01\"
kind = \"categorical\"

[[input]]
name = \"amount\"
source = \"event.amount\"
label = \"Amount\"
reason_code = \"C02\"

[[input]]
name = \"apps\"
source = \"user.applications_7d\"
label = \"Applications\"
reason_code = \"C03\"
kind = \"categorical\"
"
}

/// A model LightGBM loads but whose trees the native reader cannot explain
/// is refused at load, naming the model file and what is wrong.
#[test]
fn model_text_the_tree_reader_cannot_read_is_refused_at_load() {
    // Linear trees (LightGBM has no contributions for them either).
    let data = generate(1000, 3);
    let rows: Vec<f64> = data.iter().flat_map(|g| g.row.map(|v| if v.is_nan() { 0.0 } else { v })).collect();
    let labels: Vec<f32> = data.iter().map(|g| g.label).collect();
    let names: Vec<String> =
        ["amount", "term", "income", "rate", "fees", "max_fees", "apps_7d", "device_users"].map(String::from).into();
    let mut params = test_params().as_object().unwrap().clone();
    params.insert("linear_tree".into(), true.into());
    params.insert("num_iterations".into(), 5.into());
    let linear = riskd_scorecard::lgbm::train(&rows, &labels, &names, &params).unwrap();
    assert!(linear.contains("is_linear=1"));
    Booster::from_string(&linear).unwrap();

    let categorical_manifest = categorical_manifest();
    let cases = [
        (TEST_MANIFEST.to_string(), linear, "Tree=0: linear trees (is_linear=1) are not supported"),
        (
            categorical_manifest.clone(),
            CATEGORICAL_MODEL.replace("internal_count=30 20", "internal_count=30 -20"),
            "Tree=0: `internal_count` has `-20`, which is not a valid number",
        ),
        (categorical_manifest.clone(), CATEGORICAL_MODEL.replace("leaf_count=12 18\n", ""), "Tree=1: no `leaf_count`"),
        (
            categorical_manifest.clone(),
            CATEGORICAL_MODEL.replace("leaf_count=10 10 10", "leaf_count=10 0 10"),
            "Tree=0: `leaf_count` has a count of 0",
        ),
        (
            categorical_manifest,
            CATEGORICAL_MODEL.replace("decision_type=9 10", "decision_type=9 14"),
            "Tree=0: node 1 has an unknown missing-value type",
        ),
    ];
    for (manifest, model, want) in cases {
        // LightGBM itself loads each of these.
        Booster::from_string(&model).unwrap();
        let err = load_error(&manifest, &model);
        let shown = err.to_string();
        assert!(matches!(err, ModelError::Trees { .. }), "{shown}");
        assert!(shown.contains("model.txt: cannot read the trees for reason codes: "), "{shown}");
        assert!(shown.contains(want), "{shown}\n  should say: {want}");
    }
}

/// The shipped A card uses every input that carries information in its
/// training rows. LightGBM's dataset pre-filter (on by default) drops inputs
/// whose most common value covers all but a handful of rows, which is what
/// fraud signals look like (shared device, shared network, emulator,
/// rooted); `riskd train` builds the dataset with its parameters and keeps
/// them. An input that never varies in training (the model file's
/// `feature_infos` says `none` or `[v:v]`) cannot be split on by any model.
#[test]
fn shipped_a_card_uses_every_input_that_varies_in_training() {
    let (_, spec, reference) = load_a_card();
    let splits = reference.feature_importance(lightgbm3::ImportanceType::Split).unwrap();
    let header = ModelHeader::parse(spec.model_text());
    assert_eq!(header.feature_infos.len(), spec.manifest.inputs.len());
    let varies = |info: &str| match info.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(range) => range.split_once(':').is_some_and(|(lo, hi)| lo != hi),
        None => info != "none",
    };
    let mut unused = Vec::new();
    let mut constant = Vec::new();
    for ((inp, &s), info) in spec.manifest.inputs.iter().zip(&splits).zip(&header.feature_infos) {
        if !varies(info) {
            constant.push(inp.reason_code.as_str());
        } else if s == 0.0 {
            unused.push(inp.reason_code.as_str());
        }
    }
    assert!(unused.is_empty(), "the model never splits on {unused:?}, which vary in its training rows");
    // The sparse fraud signals are among the inputs used.
    for code in ["A05_SHARED_DEVICE", "A07_SHARED_NETWORK", "A11_EMULATOR", "A12_ROOTED"] {
        let i = spec.manifest.inputs.iter().position(|inp| inp.reason_code == code).unwrap();
        assert!(splits[i] > 0.0, "{code} unused");
    }
    eprintln!("a_card: constant in training (unusable): {constant:?}");
}

const TEST_FEATURES: &str = r#"
[[feature]]
name = "user.applications_7d"
entity = "user"
events = ["loan_application"]
agg = "count"
window = "7d"

[[feature]]
name = "device.distinct_users_24h"
entity = "device"
agg = "distinct_count"
of = "entity.user_id"
window = "24h"

[[feature]]
name = "user.max_fees_30d"
entity = "user"
events = ["loan_application"]
agg = "max"
of = "event.fees"
window = "30d"
"#;

/// Inputs in model column order: five event fields, then the three features
/// in an order different from their slots. `fees` passes a missing value as 0.
const TEST_MANIFEST: &str = r#"
name = "t_card"
version = "test.1"
card = "application"
events = ["loan_application"]
model_file = "model.txt"

[scaling]
base_score = 500
base_odds = 10
pdo = 30

[[input]]
name = "amount"
source = "event.amount"
label = "Amount"
reason_code = "T01"

[[input]]
name = "term"
source = "event.term_months"
label = "Term"
reason_code = "T02"

[[input]]
name = "income"
source = "event.stated_monthly_income"
label = "Income"
reason_code = "T03"

[[input]]
name = "rate"
source = "event.annual_rate"
label = "Rate"
reason_code = "T04"

[[input]]
name = "fees"
source = "event.fees"
label = "Fees"
reason_code = "T05"
missing = "zero"

[[input]]
name = "max_fees"
source = "user.max_fees_30d"
label = "Highest fees"
reason_code = "T06"

[[input]]
name = "apps_7d"
source = "user.applications_7d"
label = "Applications"
reason_code = "T07"

[[input]]
name = "device_users"
source = "device.distinct_users_24h"
label = "Device users"
reason_code = "T08"
"#;

const W: usize = 8;

/// One generated application: its model row (column order) and the event and
/// feature vector that produce it. NaN marks a missing value.
struct Generated {
    row: [f64; W],
    label: f32,
}

fn generate(n: usize, seed: u64) -> Vec<Generated> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    fn maybe(rng: &mut ChaCha8Rng, p_missing: f64, v: f64) -> f64 {
        if rng.gen_bool(p_missing) {
            f64::NAN
        } else {
            v
        }
    }
    (0..n)
        .map(|_| {
            let amount = (rng.gen_range(10..600) * 100) as f64;
            let term = [3.0, 6.0, 12.0, 24.0, 36.0][rng.gen_range(0..5)];
            let income = if rng.gen_bool(0.05) { 0.0 } else { (rng.gen_range(5..300) * 50) as f64 };
            let v = rng.gen_range(0.05..0.6);
            let rate = maybe(&mut rng, 0.25, v);
            let v = rng.gen_range(0..50_000) as f64 / 100.0;
            let fees = maybe(&mut rng, 0.25, v);
            let v = rng.gen_range(0..80_000) as f64 / 100.0;
            let max_fees = maybe(&mut rng, 0.3, v);
            let v = rng.gen_range(1..8) as f64;
            let apps = maybe(&mut rng, 0.2, v);
            let v = rng.gen_range(1..6) as f64;
            let users = maybe(&mut rng, 0.1, v);
            // Risk rises with amount against income, with applications and
            // shared devices, and when the rate is unknown.
            let ratio = if income > 0.0 { amount / income } else { 8.0 };
            let z = -3.0
                + 0.35 * ratio.min(8.0)
                + if rate.is_nan() { 0.8 } else { 2.0 * rate }
                + if apps.is_nan() { -0.3 } else { 0.4 * apps }
                + if users.is_nan() { 0.5 } else { 0.6 * (users - 1.0) }
                + 0.02 * term / 3.0;
            let p = 1.0 / (1.0 + (-z).exp());
            let label = if rng.gen_bool(p.clamp(0.0, 1.0)) { 1.0 } else { 0.0 };
            Generated { row: [amount, term, income, rate, fees, max_fees, apps, users], label }
        })
        .collect()
}

fn test_params() -> serde_json::Value {
    serde_json::json!({
        "objective": "binary",
        "num_iterations": 60,
        "num_leaves": 15,
        "learning_rate": 0.1,
        "min_data_in_leaf": 20,
        "seed": 11,
        "deterministic": true,
        "force_row_wise": true,
        "num_threads": 1,
        "verbosity": -1
    })
}

/// The event and feature vector from which the manifest's inputs rebuild `row`.
fn case_for(i: usize, row: &[f64; W], features: &FeatureSet) -> (Event, FeatureVector) {
    let opt = |v: f64| if v.is_nan() { None } else { Some(v) };
    let ev = Event {
        id: CompactString::from(format!("gen-{i}")),
        kind: EventKind::LoanApplication,
        time_ms: 1_790_000_000_000 + i as i64 * 1000,
        entities: Entities {
            user_id: CompactString::from(format!("u{i}")),
            device_id: Some(CompactString::from(format!("d{i}"))),
            ip: None,
            phone: None,
            id_number: None,
            bank_card: None,
        },
        payload: Payload::LoanApplication(LoanApplication {
            application_id: CompactString::from(format!("app-{i}")),
            amount: row[0],
            term_months: row[1] as u32,
            repayment_method: RepaymentMethod::EqualInstallment,
            purpose: Purpose::Consumption,
            stated_monthly_income: row[2],
            stated_region: None,
            annual_rate: opt(row[3]),
            fees: opt(row[4]),
        }),
    };
    let mut fv = vec![f64::NAN; features.len()];
    fv[features.slot("user.max_fees_30d").unwrap()] = row[5];
    fv[features.slot("user.applications_7d").unwrap()] = row[6];
    fv[features.slot("device.distinct_users_24h").unwrap()] = row[7];
    (ev, FeatureVector(fv))
}

/// A hand-written model with categorical splits on inputs that arrive as
/// numbers: the term (categories 12 and 24) and a feature count
/// (categories 2 to 5), declared `kind = "categorical"` in the manifest: a
/// model trained elsewhere on numeric category codes is served like
/// LightGBM scores it.
const CATEGORICAL_MODEL: &str = "tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=2
objective=binary sigmoid:1
feature_names=term amount apps
feature_infos=3:6:12:24:36 [1000:60000] 1:2:3:4:5

Tree=0
num_leaves=3
num_cat=1
split_feature=0 1
split_gain=5 3
threshold=0 30000.000000000004
decision_type=9 10
left_child=1 -2
right_child=-1 -3
leaf_value=-2 -2.5 -1.2
leaf_weight=10 10 10
leaf_count=10 10 10
internal_value=-1.9 -1.85
internal_weight=30 20
internal_count=30 20
cat_boundaries=0 1
cat_threshold=16781312
is_linear=0
shrinkage=1


Tree=1
num_leaves=2
num_cat=1
split_feature=2
split_gain=4
threshold=0
decision_type=9
left_child=-1
right_child=-2
leaf_value=0.6 -0.1
leaf_weight=12 18
leaf_count=12 18
internal_value=0.18
internal_weight=30
internal_count=30
cat_boundaries=0 1
cat_threshold=60
is_linear=0
shrinkage=1


end of trees

pandas_categorical:null
";

#[test]
fn model_with_categorical_splits_matches_lightgbm_batch() {
    let manifest = categorical_manifest();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    std::fs::write(dir.path().join("model.txt"), CATEGORICAL_MODEL).unwrap();
    let features = Arc::new(FeatureSet::from_sources(&[("test.toml".into(), TEST_FEATURES.into())]).unwrap());
    let spec = Arc::new(ModelSpec::load(dir.path(), &features).unwrap());
    let reference = Booster::from_string(CATEGORICAL_MODEL).unwrap();
    let mut card = Scorecard::new(spec.clone()).unwrap();

    // Raw rows, including what a category code should not be.
    let odd = [f64::NAN, -1.0, 0.0, 12.0, 12.7, 24.0, 31.0, 32.0, 33.0, 1e10, f64::INFINITY];
    let mut probes = Vec::new();
    for &t in &[3.0, 6.0, 12.0, 24.0, 36.0] {
        for &a in &[1000.0, 30000.0, 30000.000000000004, 30001.0, f64::NAN] {
            for &k in &odd {
                probes.extend([t, a, k]);
                probes.extend([k, a, t]);
            }
        }
    }
    let batch = reference.predict_with_params(&probes, 3, true, "num_threads=1").unwrap();
    for (k, r) in probes.chunks(3).enumerate() {
        let fast = card.predict_row(r).unwrap();
        assert!((fast - batch[k]).abs() <= TOL, "{r:?}: fast {fast} vs batch {}", batch[k]);
    }
    // The categorical splits really decide: term 12 and 24 go left.
    let p = |card: &mut Scorecard, r: [f64; 3]| card.predict_row(&r).unwrap();
    assert_ne!(p(&mut card, [12.0, 1000.0, 1.0]), p(&mut card, [36.0, 1000.0, 1.0]));
    assert_eq!(p(&mut card, [12.0, 1000.0, 1.0]), p(&mut card, [24.0, 1000.0, 1.0]));
    assert_ne!(p(&mut card, [3.0, 1000.0, 2.0]), p(&mut card, [3.0, 1000.0, 1.0]));

    // Whole events, with points and reason codes.
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let cases: Vec<(Event, FeatureVector)> = (0..300)
        .map(|i| {
            let mut row = [0.0; W];
            row[0] = (rng.gen_range(10..600) * 100) as f64;
            row[1] = [3.0, 6.0, 12.0, 24.0, 36.0][rng.gen_range(0..5)];
            row[2] = 3000.0;
            row[3] = f64::NAN;
            row[4] = f64::NAN;
            row[5] = f64::NAN;
            row[6] = if rng.gen_bool(0.2) { f64::NAN } else { rng.gen_range(1..7) as f64 };
            row[7] = f64::NAN;
            case_for(i, &row, &features)
        })
        .collect();
    let with_reasons = check_cases(&mut card, &reference, &cases);
    assert!(with_reasons > 50, "only {with_reasons} of 300 had adverse reasons");
}

#[test]
fn model_trained_here_matches_lightgbm_batch_including_missing_inputs() {
    let data = generate(2000, 20261101);
    let rows: Vec<f64> = data.iter().flat_map(|g| g.row).collect();
    let labels: Vec<f32> = data.iter().map(|g| g.label).collect();
    let bad = labels.iter().filter(|&&l| l > 0.5).count();
    assert!((200..1800).contains(&bad), "{bad} bads of 2000");

    let mut ds = Dataset::from_slice(&rows, &labels, W as i32, true).unwrap();
    let names: Vec<String> =
        ["amount", "term", "income", "rate", "fees", "max_fees", "apps_7d", "device_users"].map(String::from).into();
    ds.set_feature_names(&names).unwrap();
    let trained = Booster::train(ds, &test_params()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.toml"), TEST_MANIFEST).unwrap();
    trained.save_file(&dir.path().join("model.txt").display().to_string()).unwrap();
    let features = Arc::new(FeatureSet::from_sources(&[("test.toml".into(), TEST_FEATURES.into())]).unwrap());
    let spec = Arc::new(ModelSpec::load(dir.path(), &features).unwrap());
    let reference = Booster::from_file(&dir.path().join("model.txt").display().to_string()).unwrap();
    let mut card = Scorecard::new(spec.clone()).unwrap();

    // 1. The fast path on raw rows, missing values anywhere, against the
    //    batch prediction of the booster as trained and as reloaded.
    let mut probes = rows.clone();
    probes.extend([f64::NAN; W]);
    probes.extend([0.0; W]);
    probes.extend([-0.0; W]);
    probes.extend([1e300; W]);
    probes.extend([-1e300; W]);
    probes.extend([f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1.0, f64::NAN, -1.0, f64::INFINITY, 0.5]);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for d in &data[..500] {
        let mut r = d.row;
        for v in &mut r {
            if rng.gen_bool(0.4) {
                *v = f64::NAN;
            }
        }
        probes.extend(r);
    }
    let n = probes.len() / W;
    let batch_trained = trained.predict_with_params(&probes, W as i32, true, "num_threads=1").unwrap();
    let batch_loaded = reference.predict_with_params(&probes, W as i32, true, "num_threads=1").unwrap();
    let mut worst = 0.0f64;
    for k in 0..n {
        let fast = card.predict_row(&probes[k * W..(k + 1) * W]).unwrap();
        assert!((fast - batch_loaded[k]).abs() <= TOL, "row {k}: fast {fast} vs batch {}", batch_loaded[k]);
        assert!((fast - batch_trained[k]).abs() <= TOL, "row {k}: fast {fast} vs in-memory {}", batch_trained[k]);
        assert!(fast.is_finite() && (0.0..=1.0).contains(&fast));
        worst = worst.max((fast - batch_loaded[k]).abs());
    }
    eprintln!("generated: {n} probe rows, worst |fast - batch| = {worst:e}");

    // 2. Whole events: the manifest rebuilds the row from event fields and
    //    feature slots (missing fees become 0), then score, points, reasons.
    let cases: Vec<(Event, FeatureVector)> =
        data.iter().enumerate().map(|(i, g)| case_for(i, &g.row, &features)).collect();
    let mut row = Vec::new();
    for ((ev, fv), g) in cases.iter().zip(&data) {
        spec.fill_row(ev, fv, &mut row);
        let mut want = g.row;
        if want[4].is_nan() {
            want[4] = 0.0;
        }
        let same = row.iter().zip(&want).all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        assert!(same, "{}: row {row:?}, expected {want:?}", ev.id);
    }
    let with_reasons = check_cases(&mut card, &reference, &cases);
    assert!(with_reasons > 1000, "only {with_reasons} of 2000 had adverse reasons");
}

/// A manifest whose inputs include categorical ones: `purpose`, a string
/// field mapped to codes by the manifest's `categories` ("other" is left
/// out, so it is passed as missing), and `term`, a numeric field whose value
/// is the category code.
const CATEGORICAL_MANIFEST: &str = r#"
name = "cat_card"
version = "test.1"
card = "application"
events = ["loan_application"]
model_file = "model.txt"

[scaling]
base_score = 600
base_odds = 20
pdo = 40

[[input]]
name = "amount"
source = "event.amount"
label = "Amount"
reason_code = "K01"

[[input]]
name = "purpose"
source = "event.purpose"
label = "Loan purpose"
reason_code = "K02_PURPOSE"
kind = "categorical"
categories = ["consumption", "education", "medical", "business", "home", "travel"]

[[input]]
name = "term"
source = "event.term_months"
label = "Term"
reason_code = "K03_TERM"
kind = "categorical"

[[input]]
name = "apps_7d"
source = "user.applications_7d"
label = "Applications"
reason_code = "K04"
"#;

#[test]
fn model_trained_with_string_categories_matches_lightgbm_batch() {
    use riskd_scorecard::lgbm;
    const PURPOSES: [Purpose; 7] = [
        Purpose::Consumption,
        Purpose::Education,
        Purpose::Medical,
        Purpose::Business,
        Purpose::Home,
        Purpose::Travel,
        Purpose::Other,
    ];
    let features = Arc::new(FeatureSet::from_sources(&[("test.toml".into(), TEST_FEATURES.into())]).unwrap());
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    // Events and their features; risk depends on the purpose and the term as
    // categories (not monotonically in their codes).
    let cases: Vec<(Event, FeatureVector)> = (0..3000)
        .map(|i| {
            let row = [(rng.gen_range(10..600) * 100) as f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
            let (mut ev, _) = case_for(i, &row, &features);
            let purpose = PURPOSES[rng.gen_range(0..PURPOSES.len())];
            let term = [3u32, 6, 12, 24, 36][rng.gen_range(0..5)];
            if let Payload::LoanApplication(a) = &mut ev.payload {
                a.purpose = purpose;
                a.term_months = term;
            }
            let mut fv = vec![f64::NAN; features.len()];
            if rng.gen_bool(0.8) {
                fv[features.slot("user.applications_7d").unwrap()] = rng.gen_range(1..6) as f64;
            }
            (ev, FeatureVector(fv))
        })
        .collect();
    let label = |ev: &Event, rng: &mut ChaCha8Rng| -> f32 {
        let Payload::LoanApplication(a) = &ev.payload else { unreachable!() };
        let z =
            -2.5 + match a.purpose {
                Purpose::Business | Purpose::Travel => 1.8,
                Purpose::Medical => -0.8,
                Purpose::Other => 1.0,
                _ => 0.0,
            } + if a.term_months == 6 || a.term_months == 36 { 1.0 } else { 0.0 }
                + a.amount / 60_000.0;
        f32::from(u8::from(rng.gen_bool(1.0 / (1.0 + (-z).exp()))))
    };

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.toml"), CATEGORICAL_MANIFEST).unwrap();
    // The manifest's mapping builds the training rows, as `riskd train` does.
    let (manifest, _) = riskd_scorecard::read_manifest(&dir.path().join("manifest.toml")).unwrap();
    let checked = riskd_scorecard::check_manifest(&manifest, &features, "manifest.toml").unwrap();
    let (mut rows, mut labels, mut row) = (Vec::new(), Vec::new(), Vec::new());
    for (ev, fv) in &cases {
        checked.mapper.fill_row(ev, fv, &mut row);
        rows.extend_from_slice(&row);
        labels.push(label(ev, &mut rng));
    }
    let names: Vec<String> = manifest.inputs.iter().map(|i| i.name.clone()).collect();
    let mut params = test_params().as_object().unwrap().clone();
    params.insert("categorical_feature".into(), "1,2".into());
    params.insert("min_data_per_group".into(), 20.into());
    params.insert("cat_smooth".into(), 1.into());
    let text = lgbm::train(&rows, &labels, &names, &params).unwrap();
    std::fs::write(dir.path().join("model.txt"), &text).unwrap();

    let spec = Arc::new(ModelSpec::load(dir.path(), &features).unwrap());
    let header = ModelHeader::parse(spec.model_text());
    let codes = header.categories(1).expect("purpose is categorical in the model");
    // Codes 0 to 5, and -1 where the purpose was missing ("other").
    assert!(codes.iter().all(|&c| (-1..6).contains(&c)), "purpose codes {codes:?}");
    assert!(codes.contains(&-1) && codes.contains(&3), "purpose codes {codes:?}");
    assert!(header.categories(2).is_some(), "term is categorical in the model");
    assert!(header.categories(0).is_none() && header.categories(3).is_none());
    assert!(text.contains("num_cat=1") || text.contains("num_cat=2"), "no tree splits on a category");

    // The row: purpose by its position in `categories`, "other" missing,
    // the term's value as its code.
    for (ev, fv) in cases.iter().take(200) {
        spec.fill_row(ev, fv, &mut row);
        let Payload::LoanApplication(a) = &ev.payload else { unreachable!() };
        let want = PURPOSES.iter().position(|p| *p == a.purpose).filter(|&i| i < 6).map_or(f64::NAN, |i| i as f64);
        assert!(row[1] == want || (row[1].is_nan() && want.is_nan()), "{}: {} for {:?}", ev.id, row[1], a.purpose);
        assert_eq!(row[2], f64::from(a.term_months));
    }

    let reference = Booster::from_string(&text).unwrap();
    let mut card = Scorecard::new(spec.clone()).unwrap();
    let with_reasons = check_cases(&mut card, &reference, &cases);
    assert!(with_reasons > 1000, "only {with_reasons} of 3000 had adverse reasons");
    // The categorical inputs drive reason codes.
    let mut purpose_reasons = 0;
    for (ev, fv) in &cases {
        let s = card.score(ev, fv, 3).unwrap();
        purpose_reasons += s.reasons.iter().filter(|r| r.code == "K02_PURPOSE").count();
    }
    assert!(purpose_reasons > 300, "purpose was a top reason {purpose_reasons} times");
}
