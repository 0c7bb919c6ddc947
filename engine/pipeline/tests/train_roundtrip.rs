//! Train -> serve round trip: a model trained by `riskd train` on the
//! recorded stream, then loaded and served by the pipeline, gives every
//! labelled application exactly the probability training computed for the
//! same row. Training is deterministic and its report is consistent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lightgbm3::Booster;
use riskd_core::{EventKind, KeyRing, SourcePosition};
use riskd_features::FeatureSet;
use riskd_pipeline::config::EngineConfig;
use riskd_pipeline::replay::{open_input, Recorded};
use riskd_pipeline::train::{auc, build_matrix, ks, read_labels, train, Matrix, TrainError, TrainOptions, TrainReport};
use riskd_pipeline::{Deployment, Outcome, Pipeline};
use riskd_scorecard::{check_manifest, read_manifest, ModelSpec, Scorecard};

const TOL: f64 = 1e-9;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn events() -> PathBuf {
    repo().join("replay-data/events.jsonl")
}

fn labels() -> PathBuf {
    repo().join("replay-data/labels.csv")
}

fn keys() -> KeyRing {
    let text = format!(
        "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
        "33".repeat(32),
        "44".repeat(32)
    );
    KeyRing::from_toml(&text, "test-keys").unwrap()
}

fn features() -> Arc<FeatureSet> {
    Arc::new(FeatureSet::load(&repo().join("features")).unwrap())
}

/// A model dir holding a copy of the shipped A card manifest.
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("models/a_card/manifest.toml"), dir.path().join("manifest.toml")).unwrap();
    dir
}

fn train_in(dir: &Path, keys: KeyRing) -> TrainReport {
    train_with(dir, keys, serde_json::json!({}))
}

fn train_with(dir: &Path, keys: KeyRing, params: serde_json::Value) -> TrainReport {
    let opts = TrainOptions { events: events(), labels: labels(), model_dir: dir.to_path_buf(), holdout: 0.2, params };
    train(&opts, features(), keys).unwrap()
}

/// The training matrix, rebuilt the way `train` builds it.
fn matrix(dir: &Path, features: &Arc<FeatureSet>) -> Matrix {
    let mpath = dir.join("manifest.toml");
    let (manifest, _) = read_manifest(&mpath).unwrap();
    let checked = check_manifest(&manifest, features, &mpath.display().to_string()).unwrap();
    let labels = read_labels(&labels()).unwrap();
    build_matrix(&events(), &labels, features, &checked.mapper, |k| k == EventKind::LoanApplication, keys()).unwrap()
}

#[test]
fn trained_model_serves_exactly_the_training_predictions() {
    let dir = model_dir();
    let report = train_in(dir.path(), keys());
    let features = features();
    let m = matrix(dir.path(), &features);
    let (n, w) = (m.labels.len(), m.width);
    assert_eq!((n, w), (270, 15), "every labelled application, every manifest input");
    assert_eq!(m.rows.len(), n * w);

    // Training-time predictions: LightGBM batch prediction on the matrix.
    let model_file = dir.path().join("model.txt");
    assert_eq!(report.model_file, model_file.display().to_string());
    let booster = Booster::from_file(&report.model_file).unwrap();
    let batch = booster.predict_with_params(&m.rows, w as i32, true, "num_threads=1").unwrap();
    // They are the predictions `train` evaluated: the report's metrics come
    // out identical from them.
    let n_train = report.rows_train;
    assert_eq!(auc(&batch[..n_train], &m.labels[..n_train]), report.auc_train);
    assert_eq!(auc(&batch[n_train..], &m.labels[n_train..]), report.auc_holdout);
    assert_eq!(ks(&batch[n_train..], &m.labels[n_train..]), report.ks_holdout);
    let by_id: HashMap<&str, (usize, f64)> =
        m.event_ids.iter().enumerate().map(|(i, id)| (id.as_str(), (i, batch[i]))).collect();
    assert_eq!(by_id.len(), n, "event ids are unique");

    // Served through the model loader and the scorecard's single-row path.
    let spec = Arc::new(ModelSpec::load(dir.path(), &features).unwrap());
    let mut card = Scorecard::new(spec.clone()).unwrap();
    assert_eq!((m.rows.len(), batch.len()), (n * w, n), "one prediction per row");
    for (i, (row, want)) in m.rows.chunks_exact(w).zip(&batch).enumerate() {
        let p = card.predict_row(row).unwrap();
        assert!((p - want).abs() <= TOL, "{}: fast path {p} vs training {want}", m.event_ids[i]);
    }

    // Served end to end: a deployment with the trained model, the repository's
    // features and rules, replaying the recording in event-time order.
    let cfg = EngineConfig {
        features_dir: repo().join("features"),
        rules_dir: repo().join("rules"),
        models: vec![dir.path().to_path_buf()],
        ..EngineConfig::default()
    };
    let deployment = Arc::new(Deployment::load(&cfg).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(deployment.models().models.len(), 1);
    assert_eq!(deployment.models().models[0].version, spec.version);
    let mut pipeline = Pipeline::new(deployment, keys(), &cfg).unwrap();
    let recorded = Recorded::read(open_input(&events()).unwrap()).unwrap();
    let (mut served, mut worst) = (0, 0.0f64);
    for (line, bytes) in recorded.iter() {
        let outcome = pipeline.process(bytes, || SourcePosition::File { path: "events.jsonl".into(), line });
        let Outcome::Decision(d) = outcome else { continue };
        let Some(&(i, p_train)) = by_id.get(d.event_id.as_str()) else {
            assert!(d.probability.is_none() || d.event_type == EventKind::LoanApplication);
            continue;
        };
        let p = d.probability.unwrap_or_else(|| panic!("{}: no probability in the decision", d.event_id));
        assert!((p - p_train).abs() <= TOL, "{} (row {i}): served {p} vs training {p_train}", d.event_id);
        // The decision's score is these points plus any rule adjustment.
        assert!(d.score.is_some_and(|s| s.is_finite()), "{}: score {:?}", d.event_id, d.score);
        worst = worst.max((p - p_train).abs());
        served += 1;
    }
    assert_eq!(served, n, "every labelled application was decided");
    eprintln!(
        "trained on {} rows, held out {}: AUC {:.4}/{:.4}, KS {:.4}, Gini {:.4}; worst served-vs-training {worst:e}",
        report.rows_train,
        report.rows_holdout,
        report.auc_train,
        report.auc_holdout,
        report.ks_holdout,
        report.gini_holdout
    );
}

/// AUC as the share of (bad, good) pairs ranked correctly (ties half), and
/// KS as the largest gap between the two score distributions, the slow way.
fn naive_auc_ks(scores: &[f64], labels: &[f32]) -> (f64, f64) {
    let bad: Vec<f64> = scores.iter().zip(labels).filter(|(_, &l)| l > 0.5).map(|(&s, _)| s).collect();
    let good: Vec<f64> = scores.iter().zip(labels).filter(|(_, &l)| l <= 0.5).map(|(&s, _)| s).collect();
    let mut wins = 0.0;
    for b in &bad {
        for g in &good {
            wins += if b > g {
                1.0
            } else if b == g {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / (bad.len() * good.len()) as f64;
    let mut ks = 0.0f64;
    for &t in scores {
        let fb = bad.iter().filter(|&&s| s <= t).count() as f64 / bad.len() as f64;
        let fg = good.iter().filter(|&&s| s <= t).count() as f64 / good.len() as f64;
        ks = ks.max((fb - fg).abs());
    }
    (auc, ks)
}

#[test]
fn training_is_deterministic_and_its_report_is_consistent() {
    // Different key rings: keyed hashes of entities differ, features do not.
    let (a, b) = (model_dir(), model_dir());
    let ra = train_in(a.path(), keys());
    let other_keys = KeyRing::from_toml(&KeyRing::generate_file("k9"), "generated").unwrap();
    let rb = train_in(b.path(), other_keys);
    let ta = std::fs::read_to_string(a.path().join("model.txt")).unwrap();
    let tb = std::fs::read_to_string(b.path().join("model.txt")).unwrap();
    assert!(ta == tb, "two trainings on the same data produced different models");
    let ja = serde_json::to_value(&ra).unwrap();
    let mut jb = serde_json::to_value(&rb).unwrap();
    jb["model_file"] = ja["model_file"].clone();
    assert_eq!(ja, jb, "two trainings reported differently");

    // The split: 20% of the 270 applications, the latest, are held out.
    assert_eq!((ra.rows_train, ra.rows_holdout), (216, 54));
    let m = matrix(a.path(), &features());
    let rate = |l: &[f32]| l.iter().map(|&x| f64::from(x)).sum::<f64>() / l.len() as f64;
    assert_eq!(ra.bad_rate_train, rate(&m.labels[..216]));
    assert_eq!(ra.bad_rate_holdout, rate(&m.labels[216..]));
    assert_eq!(m.labels.iter().filter(|&&l| l > 0.5).count(), 29, "29 bads (replay-data/README.md)");

    // Metrics: in range, Gini = 2 AUC - 1, and equal to a naive computation.
    for (name, v) in [("auc_train", ra.auc_train), ("auc_holdout", ra.auc_holdout), ("ks_holdout", ra.ks_holdout)] {
        assert!((0.0..=1.0).contains(&v), "{name} = {v}");
    }
    assert!((-1.0..=1.0).contains(&ra.gini_holdout));
    assert_eq!(ra.gini_holdout, 2.0 * ra.auc_holdout - 1.0);
    let booster = Booster::from_file(&ra.model_file).unwrap();
    let p = booster.predict_with_params(&m.rows, m.width as i32, true, "num_threads=1").unwrap();
    let (auc_h, ks_h) = naive_auc_ks(&p[216..], &m.labels[216..]);
    assert!((auc_h - ra.auc_holdout).abs() < 1e-12, "naive AUC {auc_h} vs {}", ra.auc_holdout);
    assert!((ks_h - ra.ks_holdout).abs() < 1e-12, "naive KS {ks_h} vs {}", ra.ks_holdout);
    let (auc_t, _) = naive_auc_ks(&p[..216], &m.labels[..216]);
    assert!((auc_t - ra.auc_train).abs() < 1e-12, "naive train AUC {auc_t} vs {}", ra.auc_train);
    // The model learnt something: better than chance on the data it saw.
    assert!(ra.auc_train > 0.8, "train AUC {}", ra.auc_train);
    // The report records the parameters actually used: the defaults with
    // the manifest's `[training]` table over them.
    let mut want = riskd_pipeline::train::default_params();
    let (manifest, _) = read_manifest(&a.path().join("manifest.toml")).unwrap();
    assert!(!manifest.training.is_empty());
    for (k, v) in &manifest.training {
        want[k] = v.clone();
    }
    assert_eq!(ra.params, want);
    let text = std::fs::read_to_string(a.path().join("model.txt")).unwrap();
    for (k, v) in &manifest.training {
        assert!(text.contains(&format!("[{k}: {v}]")), "the model file records {k} = {v}");
    }
}

/// The shipped A card says it was trained with `riskd train` on the recorded
/// stream; retraining must reproduce it byte for byte, or the model file is
/// stale against the features, the data or the training code.
#[test]
fn shipped_a_card_is_reproducible_from_the_recorded_stream() {
    let dir = model_dir();
    train_in(dir.path(), keys());
    let trained = std::fs::read_to_string(dir.path().join("model.txt")).unwrap();
    let shipped = std::fs::read_to_string(repo().join("models/a_card/model.txt")).unwrap();
    assert!(trained == shipped, "models/a_card/model.txt differs from a fresh training on replay-data");
}

/// `train` checks the manifest as the serving loader does: a typo in
/// `events` is named, not reported as "too few labelled events".
#[test]
fn train_refuses_an_unknown_event_type_by_name() {
    let dir = model_dir();
    let p = dir.path().join("manifest.toml");
    let text = std::fs::read_to_string(&p).unwrap().replace("[\"loan_application\"]", "[\"loan_aplication\"]");
    std::fs::write(&p, text).unwrap();
    let opts = TrainOptions {
        events: events(),
        labels: labels(),
        model_dir: dir.path().to_path_buf(),
        holdout: 0.2,
        params: serde_json::json!({}),
    };
    let e = train(&opts, features(), keys()).unwrap_err();
    assert!(matches!(e, TrainError::Model(_)), "{e}");
    assert!(e.to_string().contains("unknown event type `loan_aplication` in `events`"), "{e}");
}

/// The trees of a model file (everything before its parameter section).
fn trees(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("model.txt")).unwrap();
    text.split("end of trees").next().unwrap().to_string()
}

/// Dataset parameters given in `--params` (`max_bin`, `min_data_in_bin`,
/// `feature_pre_filter`, `categorical_feature`) reach LightGBM's dataset
/// construction, not only the booster: they change the trees, and the report
/// and the model file record them.
#[test]
fn dataset_parameters_take_effect() {
    let (a, b) = (model_dir(), model_dir());
    train_in(a.path(), keys());
    let rb = train_with(b.path(), keys(), serde_json::json!({"max_bin": 3}));
    assert_eq!(rb.params["max_bin"], 3, "the report records max_bin = 3");
    let text = std::fs::read_to_string(b.path().join("model.txt")).unwrap();
    assert!(text.contains("[max_bin: 3]"), "the model file records max_bin = 3");
    assert!(trees(a.path()) != trees(b.path()), "max_bin = 3 trained exactly the trees of max_bin = 255");
}
