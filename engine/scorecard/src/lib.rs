//! The scorecard stage: LightGBM models described by a manifest, scored on
//! one event at a time, converted to points, with adverse reason codes.
//!
//! A model directory holds `manifest.toml` and the LightGBM text model it
//! names. At load the manifest's inputs are resolved against the event field
//! table and the feature set, and checked against the model itself (input
//! count and names); any mismatch refuses the model with a precise message.
//! At run time each worker owns its own prepared [`Scorecard`]: the input row
//! is filled by slot into a reused buffer and scored through LightGBM's
//! single-row fast path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lightgbm3::Booster;
use riskd_core::event::{Event, EventKind, KindMask};
use riskd_core::fields::FieldId;
use riskd_core::version::ContentHasher;
use riskd_core::{Reason, ReasonSource};
use riskd_features::{FeatureSet, FeatureVector};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: invalid manifest: {message}")]
    Manifest { path: String, message: String },
    #[error("{path}: LightGBM refused the model: {message}")]
    Lightgbm { path: String, message: String },
    #[error("{path}: {message}")]
    Mismatch { path: String, message: String },
}

/// `manifest.toml` of a model directory.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// application | behaviour | collection
    pub card: String,
    /// Event types this model scores.
    pub events: Vec<String>,
    /// LightGBM text model file, relative to the manifest.
    pub model_file: String,
    pub scaling: Scaling,
    #[serde(rename = "input")]
    pub inputs: Vec<InputSpec>,
}

/// Points scaling: `base_score` points at `base_odds` good:bad odds, and
/// every `pdo` points the odds double. Higher points are safer.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    pub base_score: f64,
    pub base_odds: f64,
    pub pdo: f64,
}

impl Scaling {
    pub fn points(&self, p_bad: f64) -> f64 {
        let p = p_bad.clamp(1e-12, 1.0 - 1e-12);
        let odds_good = (1.0 - p) / p;
        self.base_score + self.pdo / std::f64::consts::LN_2 * (odds_good / self.base_odds).ln()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The model's feature name (the order of inputs is the model's column order).
    pub name: String,
    /// An event field (`event.amount`) or a feature (`device.distinct_users_24h`).
    pub source: String,
    /// Human-readable label for reason codes.
    pub label: String,
    /// Reason code reported when this input pushes the score towards "bad".
    pub reason_code: String,
    /// How a missing value is passed to the model: "nan" (LightGBM's missing) or "zero".
    #[serde(default = "default_missing")]
    pub missing: String,
}

fn default_missing() -> String {
    "nan".into()
}

#[derive(Clone, Copy, Debug)]
enum InputSource {
    Field(FieldId),
    Feature(usize),
}

#[derive(Clone, Debug)]
struct Input {
    source: InputSource,
    zero_if_missing: bool,
}

/// Model inputs resolved to event fields and feature slots, in column order.
/// Used by serving and by training, so both build rows the same way.
#[derive(Clone, Debug)]
pub struct InputMapper {
    inputs: Vec<Input>,
}

impl InputMapper {
    pub fn new(specs: &[InputSpec], features: &FeatureSet, path: &str) -> Result<InputMapper, ModelError> {
        let mut inputs = Vec::new();
        for (i, inp) in specs.iter().enumerate() {
            let source = if let Some(slot) = features.slot(&inp.source) {
                InputSource::Feature(slot)
            } else if let Some(f) = FieldId::lookup(&inp.source) {
                InputSource::Field(f)
            } else {
                let hint = riskd_features::suggest(
                    &inp.source,
                    features
                        .defs
                        .iter()
                        .map(|d| d.name.as_str())
                        .chain(riskd_core::fields::FIELDS.iter().map(|f| f.name)),
                )
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
                return Err(ModelError::Mismatch {
                    path: path.into(),
                    message: format!(
                        "input {} (`{}`) reads `{}`, which is neither an event field nor a feature in the feature set{hint}",
                        i + 1,
                        inp.name,
                        inp.source
                    ),
                });
            };
            let zero_if_missing = match inp.missing.as_str() {
                "nan" => false,
                "zero" => true,
                other => {
                    return Err(ModelError::Manifest {
                        path: path.into(),
                        message: format!("input `{}`: missing = `{other}` must be \"nan\" or \"zero\"", inp.name),
                    })
                }
            };
            inputs.push(Input { source, zero_if_missing });
        }
        Ok(InputMapper { inputs })
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Fills the model's input row for an event.
    pub fn fill_row(&self, ev: &Event, features: &FeatureVector, row: &mut Vec<f64>) {
        row.clear();
        row.extend(self.inputs.iter().map(|inp| {
            let v = match inp.source {
                InputSource::Field(f) => f.get(ev).num_or_nan(),
                InputSource::Feature(slot) => features.get(slot),
            };
            if v.is_nan() && inp.zero_if_missing {
                0.0
            } else {
                v
            }
        }));
    }
}

/// Reads and parses a manifest, with the line of any error.
pub fn read_manifest(path: &Path) -> Result<(Manifest, String), ModelError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read { path: shown.clone(), source })?;
    let manifest: Manifest = toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|s| {
            let (line, col) = riskd_core::text::line_col(&text, s.start);
            format!("line {line} column {col}: ")
        });
        ModelError::Manifest { path: shown.clone(), message: format!("{}{}", at.unwrap_or_default(), e.message()) }
    })?;
    Ok((manifest, text))
}

/// A validated model: manifest, resolved inputs and the model text. Shared
/// between workers; each worker builds its own [`Scorecard`] from it.
#[derive(Debug)]
pub struct ModelSpec {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub version: String,
    pub kinds: KindMask,
    mapper: InputMapper,
    model_text: String,
}

impl ModelSpec {
    pub fn load(dir: &Path, features: &FeatureSet) -> Result<ModelSpec, ModelError> {
        let mpath = dir.join("manifest.toml");
        let shown = mpath.display().to_string();
        let (manifest, text) = read_manifest(&mpath)?;
        let mut kinds = 0;
        for e in &manifest.events {
            kinds |= EventKind::parse(e)
                .ok_or_else(|| ModelError::Manifest {
                    path: shown.clone(),
                    message: format!("unknown event type `{e}` in `events`"),
                })?
                .bit();
        }
        if !["application", "behaviour", "collection"].contains(&manifest.card.as_str()) {
            return Err(ModelError::Manifest {
                path: shown,
                message: format!("card `{}` must be application, behaviour or collection", manifest.card),
            });
        }
        let s = manifest.scaling;
        if !(s.base_odds > 0.0 && s.pdo > 0.0 && s.base_score.is_finite()) {
            return Err(ModelError::Manifest {
                path: shown,
                message: "scaling needs base_odds > 0 and pdo > 0".into(),
            });
        }
        let mapper = InputMapper::new(&manifest.inputs, features, &shown)?;
        let model_path = dir.join(&manifest.model_file);
        let model_shown = model_path.display().to_string();
        let model_text = std::fs::read_to_string(&model_path)
            .map_err(|source| ModelError::Read { path: model_shown.clone(), source })?;
        let booster = Booster::from_string(&model_text)
            .map_err(|e| ModelError::Lightgbm { path: model_shown.clone(), message: e.to_string() })?;
        let n = booster.num_features() as usize;
        if n != mapper.len() {
            return Err(ModelError::Mismatch {
                path: shown,
                message: format!("the model takes {n} inputs but the manifest lists {}", mapper.len()),
            });
        }
        if let Ok(names) = booster.feature_name() {
            for (i, (have, want)) in names.iter().zip(&manifest.inputs).enumerate() {
                if *have != want.name {
                    return Err(ModelError::Mismatch {
                        path: shown,
                        message: format!("model input {} is named `{have}` but the manifest says `{}` (inputs must be in model column order)", i + 1, want.name),
                    });
                }
            }
        }
        let version =
            ContentHasher::new().part("manifest.toml", text.as_bytes()).part("model", model_text.as_bytes()).finish();
        Ok(ModelSpec { manifest, dir: dir.to_path_buf(), version, kinds, mapper, model_text })
    }

    pub fn scores(&self, kind: EventKind) -> bool {
        self.kinds & kind.bit() != 0
    }

    /// Fills the model's input row for an event.
    pub fn fill_row(&self, ev: &Event, features: &FeatureVector, row: &mut Vec<f64>) {
        self.mapper.fill_row(ev, features, row);
    }

    pub fn model_text(&self) -> &str {
        &self.model_text
    }
}

/// LightGBM's booster handle is not tied to the thread that created it: the
/// C API may be called from any thread, one call at a time per handle, which
/// `&mut` access guarantees here.
struct OwnedBooster(Booster);
// SAFETY: see above; the handle is only used through `&mut self` or owned moves.
unsafe impl Send for OwnedBooster {}

/// A model prepared for one worker: its own booster with the single-row fast
/// path initialised and reused buffers.
pub struct Scorecard {
    spec: Arc<ModelSpec>,
    booster: OwnedBooster,
    row: Vec<f64>,
}

/// The result of scoring one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub probability: f64,
    pub points: f64,
    pub reasons: Vec<Reason>,
}

impl fmt::Debug for Scorecard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scorecard").field("model", &self.spec.manifest.name).finish()
    }
}

impl Scorecard {
    pub fn new(spec: Arc<ModelSpec>) -> Result<Scorecard, ModelError> {
        let path = spec.dir.display().to_string();
        let lgbm = |e: lightgbm3::Error| ModelError::Lightgbm { path: path.clone(), message: e.to_string() };
        let mut booster = Booster::from_string(&spec.model_text).map_err(lgbm)?;
        booster.single_row_fast_init::<f64>(Some(&serde_json::json!({"num_threads": 1}))).map_err(lgbm)?;
        let n = spec.mapper.len();
        Ok(Scorecard { spec, booster: OwnedBooster(booster), row: Vec::with_capacity(n) })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Probability of "bad" for a prepared row (exposed for parity tests).
    pub fn predict_row(&mut self, row: &[f64]) -> Result<f64, lightgbm3::Error> {
        Ok(self.booster.0.predict_single_row_fast(row)?[0])
    }

    /// Scores one event; `reasons` adds the top `n` adverse reason codes.
    pub fn score(
        &mut self,
        ev: &Event,
        features: &FeatureVector,
        reason_count: usize,
    ) -> Result<Score, lightgbm3::Error> {
        let mut row = std::mem::take(&mut self.row);
        self.spec.fill_row(ev, features, &mut row);
        let result = self.score_row(&row, reason_count);
        self.row = row;
        result
    }

    fn score_row(&mut self, row: &[f64], reason_count: usize) -> Result<Score, lightgbm3::Error> {
        let probability = self.predict_row(row)?;
        let mut reasons = Vec::new();
        if reason_count > 0 {
            let contrib = self.booster.0.predict_contrib(row, row.len() as i32, true)?;
            // Last entry is the bias; positive contributions push towards "bad".
            let mut adverse: Vec<(usize, f64)> =
                contrib[..row.len()].iter().copied().enumerate().filter(|(_, c)| *c > 0.0).collect();
            adverse.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for (i, c) in adverse.into_iter().take(reason_count) {
                let inp = &self.spec.manifest.inputs[i];
                reasons.push(Reason {
                    source: ReasonSource::Model,
                    code: inp.reason_code.clone(),
                    id: inp.name.clone(),
                    stage: None,
                    action: None,
                    shadow: false,
                    label: Some(inp.label.clone()),
                    contribution: Some((c * 1e6).round() / 1e6),
                });
            }
        }
        Ok(Score { probability, points: self.spec.manifest.scaling.points(probability), reasons })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_follow_the_scaling() {
        let s = Scaling { base_score: 600.0, base_odds: 20.0, pdo: 40.0 };
        // odds_good = 20 -> base score; odds doubled -> +pdo.
        assert!((s.points(1.0 / 21.0) - 600.0).abs() < 1e-9);
        assert!((s.points(1.0 / 41.0) - 640.0).abs() < 1e-9);
        assert!(s.points(0.5) < s.points(0.1));
    }
}
