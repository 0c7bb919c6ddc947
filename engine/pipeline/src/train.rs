//! Training a scorecard from replayed events, through the same decode and
//! feature code as serving (`riskd train`). The manifest names the model's
//! inputs; training replays the labelled stream in event-time order, builds
//! one row per labelled application with the serving [`InputMapper`],
//! trains LightGBM on the earliest part and reports AUC, KS and Gini on the
//! latest part (a time-based hold-out).

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use riskd_core::{Decoder, KeyRing, Limits};
use riskd_features::{FeatureEngine, FeatureSet, FeatureVector};
use riskd_scorecard::lgbm::{self, LgbmError};
use riskd_scorecard::{check_manifest, read_manifest, InputKind, InputMapper, Manifest, ModelError};
use serde::Serialize;

use crate::replay::{open_input, Recorded};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}:{line}: {message}")]
    Labels { path: String, line: usize, message: String },
    #[error("LightGBM: {0}")]
    Lightgbm(String),
    #[error("{0}")]
    Data(String),
}

pub struct TrainOptions {
    pub events: PathBuf,
    pub labels: PathBuf,
    /// Directory with `manifest.toml`; the model file is written there.
    pub model_dir: PathBuf,
    /// Share of the latest labelled applications held out for evaluation.
    pub holdout: f64,
    /// LightGBM parameters (JSON object), merged over the defaults.
    pub params: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub rows_train: usize,
    pub rows_holdout: usize,
    pub bad_rate_train: f64,
    pub bad_rate_holdout: f64,
    pub auc_train: f64,
    pub auc_holdout: f64,
    pub ks_holdout: f64,
    pub gini_holdout: f64,
    pub model_file: String,
    pub params: serde_json::Value,
}

/// Training defaults. Fraud signals are sparse (a shared device, an
/// emulator: a few rows in hundreds), so the dataset keeps every input
/// (`feature_pre_filter = false`), bins hold single rows and leaves need
/// only 5 rows; with LightGBM's defaults such inputs are dropped before
/// training and their reason codes can never appear.
pub fn default_params() -> serde_json::Value {
    serde_json::json!({
        "objective": "binary",
        "num_iterations": 200,
        "num_leaves": 31,
        "learning_rate": 0.05,
        "min_data_in_leaf": 5,
        "min_data_in_bin": 1,
        "feature_pre_filter": false,
        "feature_fraction": 0.9,
        "bagging_fraction": 1.0,
        "seed": 7,
        "deterministic": true,
        "force_row_wise": true,
        "num_threads": 1,
        "verbosity": -1
    })
}

/// Reads `event_id,bad` labels.
pub fn read_labels(path: &Path) -> Result<HashMap<String, f32>, TrainError> {
    let shown = path.display().to_string();
    let mut out = HashMap::new();
    for (i, line) in open_input(path)?.lines().enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("event_id")) {
            continue;
        }
        let bad = |m: &str| TrainError::Labels { path: shown.clone(), line: i + 1, message: m.to_string() };
        let (id, label) = line.split_once(',').ok_or_else(|| bad("expected `event_id,bad`"))?;
        let label = match label.trim() {
            "0" => 0.0,
            "1" => 1.0,
            _ => return Err(bad("label must be 0 or 1")),
        };
        out.insert(id.trim().to_string(), label);
    }
    Ok(out)
}

/// Rows of model inputs for labelled events, in event-time order.
pub struct Matrix {
    pub rows: Vec<f64>,
    pub labels: Vec<f32>,
    pub event_ids: Vec<String>,
    pub width: usize,
}

/// Replays `events` through the decoder and feature engine and builds the
/// input row of every labelled event the manifest scores.
pub fn build_matrix(
    events: &Path,
    labels: &HashMap<String, f32>,
    features: &std::sync::Arc<FeatureSet>,
    mapper: &InputMapper,
    scores: impl Fn(riskd_core::EventKind) -> bool,
    keys: KeyRing,
) -> Result<Matrix, TrainError> {
    let decoder = Decoder::new(Limits::default(), keys.clone());
    let mut engine = FeatureEngine::new(features.clone(), crate::pipeline::state_key(&keys));
    let mut fv = FeatureVector::default();
    let mut row = Vec::new();
    let mut m = Matrix { rows: Vec::new(), labels: Vec::new(), event_ids: Vec::new(), width: mapper.len() };
    let recorded = Recorded::read(open_input(events)?)?;
    for (_, bytes) in recorded.iter() {
        let Ok(ev) = decoder.decode(bytes) else { continue };
        engine.update(&ev, &mut fv);
        if !scores(ev.kind) {
            continue;
        }
        if let Some(&label) = labels.get(ev.id.as_str()) {
            mapper.fill_row(&ev, &fv, &mut row);
            m.rows.extend_from_slice(&row);
            m.labels.push(label);
            m.event_ids.push(ev.id.to_string());
        }
    }
    Ok(m)
}

/// Area under the ROC curve (ties get half credit).
pub fn auc(scores: &[f64], labels: &[f32]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| labels[idx[k]] > 0.5).count() as f64 * avg_rank;
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&l| l > 0.5).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Kolmogorov-Smirnov statistic between the score distributions of bads and goods.
pub fn ks(scores: &[f64], labels: &[f32]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let pos = labels.iter().filter(|&&l| l > 0.5).count() as f64;
    let neg = labels.len() as f64 - pos;
    let (mut cp, mut cn, mut best) = (0.0, 0.0, 0.0f64);
    for (k, &i) in idx.iter().enumerate() {
        if labels[i] > 0.5 {
            cp += 1.0;
        } else {
            cn += 1.0;
        }
        let last_of_tie = k + 1 == idx.len() || scores[idx[k + 1]] != scores[i];
        if last_of_tie {
            best = best.max((cp / pos - cn / neg).abs());
        }
    }
    best
}

/// LightGBM's other names for the parameters that have defaults here. A
/// parameter given under another name replaces the default instead of
/// sitting beside it (where LightGBM would pick one of the two).
const ALIASES: &[(&str, &[&str])] = &[
    ("objective", &["objective_type", "app", "application", "loss"]),
    (
        "num_iterations",
        &[
            "num_iteration",
            "n_iter",
            "num_tree",
            "num_trees",
            "num_round",
            "num_rounds",
            "nrounds",
            "num_boost_round",
            "n_estimators",
            "max_iter",
        ],
    ),
    ("num_leaves", &["num_leaf", "max_leaves", "max_leaf", "max_leaf_nodes"]),
    ("learning_rate", &["shrinkage_rate", "eta"]),
    ("min_data_in_leaf", &["min_data_per_leaf", "min_data", "min_child_samples", "min_samples_leaf"]),
    ("feature_fraction", &["sub_feature", "colsample_bytree"]),
    ("bagging_fraction", &["sub_row", "subsample", "bagging"]),
    ("seed", &["random_seed", "random_state"]),
    ("num_threads", &["num_thread", "nthread", "nthreads", "n_jobs"]),
    ("verbosity", &["verbose"]),
    ("categorical_feature", &["cat_feature", "categorical_column", "cat_column", "categorical_features"]),
];

fn canonical(key: &str) -> &str {
    ALIASES.iter().find(|(_, other)| other.contains(&key)).map_or(key, |(name, _)| name)
}

/// The parameters a training run uses: the defaults, the manifest's
/// `[training]` table and `over` (`--params`) merged in that order, and
/// the manifest's categorical inputs added to `categorical_feature`. A
/// `categorical_feature` given by input name is turned into column numbers,
/// as LightGBM's C API wants them.
pub fn training_params(
    manifest: &Manifest,
    over: &serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, TrainError> {
    let serde_json::Value::Object(mut params) = default_params() else { unreachable!("an object literal") };
    params.extend(manifest.training.iter().map(|(k, v)| (canonical(k).to_string(), v.clone())));
    match over {
        serde_json::Value::Object(o) => params.extend(o.iter().map(|(k, v)| (canonical(k).to_string(), v.clone()))),
        serde_json::Value::Null => {}
        other => return Err(TrainError::Data(format!("--params must be a JSON object, not {other}"))),
    }
    let column = |name: &str| -> Result<usize, TrainError> {
        if let Ok(i) = name.parse::<usize>() {
            if i < manifest.inputs.len() {
                return Ok(i);
            }
        }
        manifest.inputs.iter().position(|inp| inp.name == name).ok_or_else(|| {
            TrainError::Data(format!("categorical_feature names `{name}`, which is not an input of the manifest"))
        })
    };
    let mut categorical = Vec::new();
    match params.get("categorical_feature") {
        None => {}
        Some(serde_json::Value::String(s)) => {
            for c in s.trim_start_matches("name:").split(',').map(str::trim).filter(|c| !c.is_empty()) {
                categorical.push(column(c)?);
            }
        }
        Some(serde_json::Value::Array(items)) => {
            for c in items {
                match c {
                    serde_json::Value::String(s) => categorical.push(column(s)?),
                    serde_json::Value::Number(n) => categorical.push(column(&n.to_string())?),
                    other => {
                        return Err(TrainError::Data(format!(
                            "categorical_feature entry {other} is not a name or a column number"
                        )))
                    }
                }
            }
        }
        Some(serde_json::Value::Number(n)) => categorical.push(column(&n.to_string())?),
        Some(other) => {
            return Err(TrainError::Data(format!("categorical_feature = {other} is not a list of input names")))
        }
    }
    for (i, inp) in manifest.inputs.iter().enumerate() {
        if inp.kind == InputKind::Categorical && !categorical.contains(&i) {
            categorical.push(i);
        }
    }
    for &i in &categorical {
        if manifest.inputs[i].kind != InputKind::Categorical {
            return Err(TrainError::Data(format!(
                "categorical_feature lists `{}`, which the manifest declares numeric; declare it kind = \"categorical\" with its `categories`",
                manifest.inputs[i].name
            )));
        }
    }
    if params.get("objective").and_then(|o| o.as_str()) != Some("binary") {
        return Err(TrainError::Data(format!(
            "objective = {}: a scorecard is a binary classifier (objective = \"binary\")",
            params.get("objective").map_or("none".to_string(), |o| o.to_string())
        )));
    }
    if !categorical.is_empty() {
        categorical.sort_unstable();
        let list = categorical.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        params.insert("categorical_feature".into(), serde_json::Value::String(list));
    }
    Ok(params)
}

pub fn train(
    opts: &TrainOptions,
    features: std::sync::Arc<FeatureSet>,
    keys: KeyRing,
) -> Result<TrainReport, TrainError> {
    let mpath = opts.model_dir.join("manifest.toml");
    let (manifest, _) = read_manifest(&mpath)?;
    let checked = check_manifest(&manifest, &features, &mpath.display().to_string())?;
    if !(0.0..0.9).contains(&opts.holdout) {
        return Err(TrainError::Data("holdout must be in [0, 0.9)".into()));
    }
    let params = training_params(&manifest, &opts.params)?;
    let labels = read_labels(&opts.labels)?;
    let kinds = checked.kinds;
    let m = build_matrix(&opts.events, &labels, &features, &checked.mapper, |k| kinds & k.bit() != 0, keys)?;
    let n = m.labels.len();
    if n < 50 {
        return Err(TrainError::Data(format!(
            "only {n} events of the manifest's types ({}) in {} have a label in {}; need at least 50",
            manifest.events.join(", "),
            opts.events.display(),
            opts.labels.display()
        )));
    }
    let n_hold = ((n as f64) * opts.holdout).round() as usize;
    let n_train = n - n_hold;
    let w = m.width;
    let lgbm = |e: LgbmError| TrainError::Lightgbm(e.0);
    let names: Vec<String> = manifest.inputs.iter().map(|i| i.name.clone()).collect();
    let text = lgbm::train(&m.rows[..n_train * w], &m.labels[..n_train], &names, &params).map_err(lgbm)?;
    // Evaluated with the model as it is written and served.
    let model = lgbm::Model::from_string(&text).map_err(lgbm)?;
    let p_train = model.predict_batch(&m.rows[..n_train * w], w).map_err(lgbm)?;
    let p_hold = model.predict_batch(&m.rows[n_train * w..], w).map_err(lgbm)?;
    let model_path = opts.model_dir.join(&manifest.model_file);
    std::fs::write(&model_path, &text)?;
    let rate =
        |l: &[f32]| if l.is_empty() { f64::NAN } else { l.iter().map(|&x| f64::from(x)).sum::<f64>() / l.len() as f64 };
    let auc_h = auc(&p_hold, &m.labels[n_train..]);
    Ok(TrainReport {
        rows_train: n_train,
        rows_holdout: n_hold,
        bad_rate_train: rate(&m.labels[..n_train]),
        bad_rate_holdout: rate(&m.labels[n_train..]),
        auc_train: auc(&p_train, &m.labels[..n_train]),
        auc_holdout: auc_h,
        ks_holdout: ks(&p_hold, &m.labels[n_train..]),
        gini_holdout: 2.0 * auc_h - 1.0,
        model_file: model_path.display().to_string(),
        params: serde_json::Value::Object(params),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_label_files_are_refused_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.csv");
        std::fs::write(&p, "event_id,bad\nev-1,0\nev-2,yes\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.ends_with("labels.csv:3: label must be 0 or 1"), "{e}");
        std::fs::write(&p, "event_id,bad\nev-1\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.ends_with("labels.csv:2: expected `event_id,bad`"), "{e}");
        std::fs::write(&p, "event_id,bad\nev-1,1\n\nev-2,0\n").unwrap();
        let labels = read_labels(&p).unwrap();
        assert_eq!((labels["ev-1"], labels["ev-2"]), (1.0, 0.0));
    }

    #[test]
    fn parameters_under_other_names_replace_the_defaults() {
        let manifest: Manifest = toml::from_str(
            "name = \"m\"\nversion = \"1\"\ncard = \"application\"\nevents = [\"loan_application\"]\nmodel_file = \"m.txt\"\n[training]\nnum_trees = 50\n[scaling]\nbase_score = 600\nbase_odds = 20\npdo = 40\n[[input]]\nname = \"amount\"\nsource = \"event.amount\"\nlabel = \"a\"\nreason_code = \"A\"\n",
        )
        .unwrap();
        let p = training_params(&manifest, &serde_json::json!({"min_child_samples": 9, "eta": 0.2})).unwrap();
        assert_eq!((p["num_iterations"].as_i64(), p["min_data_in_leaf"].as_i64()), (Some(50), Some(9)));
        assert_eq!(p["learning_rate"], 0.2);
        for alias in ["num_trees", "min_child_samples", "eta"] {
            assert!(!p.contains_key(alias), "{alias} kept beside its canonical name");
        }
        let e = training_params(&manifest, &serde_json::json!({"objective": "regression"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "objective = \"regression\": a scorecard is a binary classifier (objective = \"binary\")"
        );
        let e = training_params(&manifest, &serde_json::json!({"application": "multiclass"})).unwrap_err();
        assert!(e.to_string().starts_with("objective = \"multiclass\""), "{e}");
    }

    #[test]
    fn auc_and_ks_match_hand_computed_values() {
        // Perfect separation.
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &[0.0, 0.0, 1.0, 1.0]), 1.0);
        assert_eq!(ks(&[0.1, 0.2, 0.8, 0.9], &[0.0, 0.0, 1.0, 1.0]), 1.0);
        // One inversion out of four pairs.
        assert_eq!(auc(&[0.1, 0.6, 0.5, 0.9], &[0.0, 0.0, 1.0, 1.0]), 0.75);
        // All tied: chance.
        assert_eq!(auc(&[0.5; 4], &[0.0, 1.0, 0.0, 1.0]), 0.5);
        assert_eq!(ks(&[0.5; 4], &[0.0, 1.0, 0.0, 1.0]), 0.0);
    }
}
