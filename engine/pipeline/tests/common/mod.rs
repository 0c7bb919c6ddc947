//! Helpers shared by the pipeline's model tests: the repository's features,
//! rules and recorded stream, models trained by `riskd train` into temporary
//! directories, and LightGBM's own batch predictions as the reference.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lightgbm3::Booster;
use riskd_core::{Decision, KeyRing, SourcePosition};
use riskd_features::FeatureSet;
use riskd_pipeline::config::EngineConfig;
use riskd_pipeline::replay::{open_input, Recorded};
use riskd_pipeline::train::{build_matrix, read_labels, train, TrainOptions};
use riskd_pipeline::{Deployment, Outcome, Pipeline};
use riskd_scorecard::{check_manifest, read_manifest};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn events() -> PathBuf {
    repo().join("replay-data/events.jsonl")
}

pub fn labels() -> PathBuf {
    repo().join("replay-data/labels.csv")
}

pub fn keys() -> KeyRing {
    let text = format!(
        "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
        "55".repeat(32),
        "66".repeat(32)
    );
    KeyRing::from_toml(&text, "test-keys").unwrap()
}

pub fn features() -> Arc<FeatureSet> {
    Arc::new(FeatureSet::load(&repo().join("features")).unwrap())
}

/// The shipped A card manifest with another name and, optionally, a
/// `[challenger]` section.
pub fn a_card_manifest(name: &str, challenger: Option<(&str, f64)>) -> String {
    let text = std::fs::read_to_string(repo().join("models/a_card/manifest.toml")).unwrap();
    let mut text = text.replace("name = \"a_card\"", &format!("name = \"{name}\""));
    if let Some((champion, share)) = challenger {
        let at = text.find("\n[[input]]").unwrap();
        text.insert_str(at, &format!("\n[challenger]\nchampion = \"{champion}\"\ntraffic_share = {share}\n"));
    }
    text
}

/// Writes `manifest` into `dir` and trains its model there with `params`.
pub fn train_into(dir: &Path, manifest: &str, params: serde_json::Value) {
    std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
    let opts = TrainOptions { events: events(), labels: labels(), model_dir: dir.to_path_buf(), holdout: 0.2, params };
    train(&opts, features(), keys()).unwrap();
}

/// LightGBM's batch prediction (an independently loaded booster) for every
/// labelled application, by event id, for the model in `dir`.
pub fn reference(dir: &Path) -> HashMap<String, f64> {
    let features = features();
    let mpath = dir.join("manifest.toml");
    let (manifest, _) = read_manifest(&mpath).unwrap();
    let checked = check_manifest(&manifest, &features, &mpath.display().to_string()).unwrap();
    let labels = read_labels(&labels()).unwrap();
    let kinds = checked.kinds;
    let m = build_matrix(&events(), &labels, &features, &checked.mapper, |k| kinds & k.bit() != 0, keys()).unwrap();
    let booster = Booster::from_file(&dir.join(&manifest.model_file).display().to_string()).unwrap();
    let p = booster.predict_with_params(&m.rows, m.width as i32, true, "num_threads=1").unwrap();
    m.event_ids.into_iter().zip(p).collect()
}

pub fn config(models: Vec<PathBuf>) -> EngineConfig {
    EngineConfig {
        features_dir: repo().join("features"),
        rules_dir: repo().join("rules"),
        models,
        ..EngineConfig::default()
    }
}

pub fn deployment(models: Vec<PathBuf>) -> Arc<Deployment> {
    Arc::new(Deployment::load(&config(models)).unwrap_or_else(|e| panic!("{e}")))
}

/// The recorded stream's inputs, in event-time order.
pub fn recorded() -> Vec<(u64, Vec<u8>)> {
    let recorded = Recorded::read(open_input(&events()).unwrap()).unwrap();
    recorded.iter().map(|(line, bytes)| (line, bytes.to_vec())).collect()
}

/// Decides `inputs` with `pipeline`, keeping the decisions.
pub fn decide(pipeline: &mut Pipeline, inputs: &[(u64, Vec<u8>)]) -> Vec<Decision> {
    inputs
        .iter()
        .filter_map(|(line, bytes)| {
            match pipeline.process(bytes, || SourcePosition::File { path: "events.jsonl".into(), line: *line }) {
                Outcome::Decision(d) => Some(d),
                Outcome::DeadLetter(_) => None,
            }
        })
        .collect()
}

/// Replays the whole recording through a fresh pipeline on `deployment`.
pub fn replay(deployment: Arc<Deployment>) -> Vec<Decision> {
    let mut pipeline = Pipeline::new(deployment, keys(), &config(Vec::new())).unwrap();
    decide(&mut pipeline, &recorded())
}
