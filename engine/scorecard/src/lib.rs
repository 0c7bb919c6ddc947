//! The scorecard stage: LightGBM models described by a manifest, scored on
//! one event at a time, converted to points, with adverse reason codes.
//!
//! A model directory holds `manifest.toml` and the LightGBM text model it
//! names. At load the manifest is checked on its own (event types, card,
//! scaling), its inputs are resolved against the event field table and the
//! feature set (types, and whether the scored events carry them), and the
//! whole is checked against the model itself (a binary objective, input
//! count, names and which inputs are categorical); any mismatch refuses the
//! model with a message naming the file and the input.
//!
//! Models are grouped in a [`ModelSet`]: at most one champion per event type,
//! each with an optional challenger that is scored beside it and may decide
//! a deterministic share of users.
//!
//! At run time each worker owns its own prepared [`Scorecard`] per model: the
//! input row is filled by slot into a reused buffer and scored through
//! LightGBM's single-row fast path. Reason codes come from SHAP
//! contributions computed natively ([`treeshap`], exact path-dependent
//! TreeSHAP, equal to LightGBM's `predict_contrib`) on trees read from the
//! same model text at load ([`trees`]), into another reused buffer, so
//! scoring an event allocates nothing here.

pub mod lgbm;
pub mod trees;
pub mod treeshap;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use riskd_core::event::{Event, EventKind, KindMask};
use riskd_core::fields::{FieldId, FieldType, Value};
use riskd_core::version::ContentHasher;
use riskd_core::{Reason, ReasonSource};
use riskd_features::{FeatureSet, FeatureVector};
use serde::{Deserialize, Serialize};

pub use lgbm::LgbmError;

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
    /// The model text cannot be read as trees for reason codes.
    #[error("{path}: cannot read the trees for reason codes: {source}")]
    Trees { path: String, source: trees::TreeTextError },
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
    /// Present when this model is a challenger to another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger: Option<ChallengerSpec>,
    /// LightGBM parameters `riskd train` uses for this model, over its
    /// defaults (command-line `--params` override these). Not used in serving.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub training: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "input")]
    pub inputs: Vec<InputSpec>,
}

/// `[challenger]`: this model is trialled against a champion on the same
/// event types. It is scored on every event the champion scores and
/// recorded in the decision; it decides only for `traffic_share` of users.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengerSpec {
    /// Manifest `name` of the champion model.
    pub champion: String,
    /// Share of users (0 to 1, by a hash of the user id) whose events this
    /// model decides instead of the champion. 0: recorded only.
    #[serde(default)]
    pub traffic_share: f64,
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

/// How an input's value is passed to the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A number (booleans as 0/1).
    #[default]
    Numeric,
    /// A category: a string field mapped to the integer code of its value
    /// (the n-th entry of `categories` is code n; a value not listed is
    /// missing), or a numeric field or feature whose value is the code.
    Categorical,
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
    #[serde(default, skip_serializing_if = "is_numeric")]
    pub kind: InputKind,
    /// Categorical inputs on string fields: the values, in code order (0, 1, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

fn is_numeric(k: &InputKind) -> bool {
    *k == InputKind::Numeric
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
    /// Categorical inputs: the category strings, code = position. A short
    /// list is scanned faster than a hash is computed.
    categories: Option<Box<[Box<str>]>>,
}

impl Input {
    #[inline]
    fn value(&self, ev: &Event, features: &FeatureVector) -> f64 {
        let v = match (self.source, &self.categories) {
            (InputSource::Field(f), Some(cats)) => match f.get(ev) {
                Value::Str(s) => cats.iter().position(|c| &**c == s).map_or(f64::NAN, |i| i as f64),
                _ => f64::NAN,
            },
            (InputSource::Field(f), None) => f.get(ev).num_or_nan(),
            (InputSource::Feature(slot), _) => features.get(slot),
        };
        if v.is_nan() && self.zero_if_missing {
            0.0
        } else {
            v
        }
    }
}

/// The names of the event kinds in a mask, for messages.
fn kind_names(mask: KindMask) -> String {
    let names: Vec<&str> = EventKind::ALL.iter().filter(|k| mask & k.bit() != 0).map(|k| k.as_str()).collect();
    names.join(", ")
}

/// Model inputs resolved to event fields and feature slots, in column order.
/// Used by serving and by training, so both build rows the same way.
#[derive(Clone, Debug)]
pub struct InputMapper {
    inputs: Vec<Input>,
}

impl InputMapper {
    /// Resolves `specs` for a model scoring the event kinds in `kinds`.
    pub fn new(
        specs: &[InputSpec],
        features: &FeatureSet,
        kinds: KindMask,
        path: &str,
    ) -> Result<InputMapper, ModelError> {
        let mismatch = |message: String| ModelError::Mismatch { path: path.into(), message };
        let manifest = |message: String| ModelError::Manifest { path: path.into(), message };
        let mut inputs = Vec::new();
        for (i, inp) in specs.iter().enumerate() {
            let at = format!("input {} (`{}`)", i + 1, inp.name);
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
                return Err(mismatch(format!(
                    "{at} reads `{}`, which is neither an event field nor a feature in the feature set{hint}",
                    inp.source
                )));
            };
            let zero_if_missing = match inp.missing.as_str() {
                "nan" => false,
                "zero" => true,
                other => {
                    return Err(manifest(format!(
                        "input `{}`: missing = `{other}` must be \"nan\" or \"zero\"",
                        inp.name
                    )))
                }
            };
            if let InputSource::Field(f) = source {
                let spec = f.spec();
                if spec.kinds & kinds == 0 {
                    return Err(mismatch(format!(
                        "{at} reads `{}`, which only {} events carry; this model scores {} events, so it would always be missing",
                        inp.source,
                        kind_names(spec.kinds),
                        kind_names(kinds)
                    )));
                }
            }
            let ty = match source {
                InputSource::Field(f) => f.spec().ty,
                InputSource::Feature(_) => FieldType::Num,
            };
            let categories = match inp.kind {
                InputKind::Numeric => {
                    if !inp.categories.is_empty() {
                        return Err(manifest(format!(
                            "input `{}`: `categories` needs kind = \"categorical\"",
                            inp.name
                        )));
                    }
                    if !matches!(ty, FieldType::Num | FieldType::Bool) {
                        return Err(mismatch(format!(
                            "{at} reads `{}`, a {ty} field, as a number; declare it kind = \"categorical\" with its `categories`",
                            inp.source
                        )));
                    }
                    None
                }
                InputKind::Categorical if ty == FieldType::Num => {
                    // A numeric field or feature carries the category code itself.
                    if !inp.categories.is_empty() {
                        return Err(mismatch(format!(
                            "{at} reads `{}`, a number, which is passed as the category code itself; `categories` maps strings and must be left out",
                            inp.source
                        )));
                    }
                    None
                }
                InputKind::Categorical => {
                    if ty != FieldType::Str {
                        return Err(mismatch(format!(
                            "{at} is categorical but reads `{}`, a {ty} field; categorical inputs read string fields (with `categories`) or numeric codes",
                            inp.source
                        )));
                    }
                    if inp.categories.is_empty() {
                        return Err(manifest(format!(
                            "input `{}`: a categorical input on a string field needs `categories` (its values in code order)",
                            inp.name
                        )));
                    }
                    for (k, c) in inp.categories.iter().enumerate() {
                        if inp.categories[..k].contains(c) {
                            return Err(manifest(format!("input `{}`: category `{c}` is listed twice", inp.name)));
                        }
                    }
                    Some(inp.categories.iter().map(|c| c.as_str().into()).collect())
                }
            };
            inputs.push(Input { source, zero_if_missing, categories });
        }
        Ok(InputMapper { inputs })
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Fills the model's input row for an event (no allocation once `row`
    /// has the capacity).
    pub fn fill_row(&self, ev: &Event, features: &FeatureVector, row: &mut Vec<f64>) {
        row.clear();
        row.extend(self.inputs.iter().map(|inp| inp.value(ev, features)));
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

/// A manifest checked on its own and against the feature set: everything
/// that can be checked without the model file. Training uses it too.
#[derive(Clone, Debug)]
pub struct CheckedManifest {
    pub kinds: KindMask,
    pub mapper: InputMapper,
}

pub fn check_manifest(manifest: &Manifest, features: &FeatureSet, path: &str) -> Result<CheckedManifest, ModelError> {
    let invalid = |message: String| ModelError::Manifest { path: path.into(), message };
    if manifest.events.is_empty() {
        return Err(invalid("`events` is empty: list the event types this model scores".into()));
    }
    let mut kinds = 0;
    for e in &manifest.events {
        kinds |= EventKind::parse(e).ok_or_else(|| invalid(format!("unknown event type `{e}` in `events`")))?.bit();
    }
    if !["application", "behaviour", "collection"].contains(&manifest.card.as_str()) {
        return Err(invalid(format!("card `{}` must be application, behaviour or collection", manifest.card)));
    }
    let s = manifest.scaling;
    let positive = |v: f64| v > 0.0 && v.is_finite();
    if !(positive(s.base_odds) && positive(s.pdo) && s.base_score.is_finite()) {
        return Err(invalid("scaling needs base_odds > 0 and pdo > 0".into()));
    }
    if let Some(c) = &manifest.challenger {
        if !(0.0..=1.0).contains(&c.traffic_share) {
            return Err(invalid(format!("challenger traffic_share = {} must be between 0 and 1", c.traffic_share)));
        }
        if c.champion == manifest.name {
            return Err(invalid(format!("model `{}` cannot be its own challenger", manifest.name)));
        }
    }
    if manifest.inputs.is_empty() {
        return Err(invalid("no `[[input]]`: a model needs at least one input".into()));
    }
    for (i, a) in manifest.inputs.iter().enumerate() {
        if manifest.inputs[..i].iter().any(|b| b.name == a.name) {
            return Err(invalid(format!("input `{}` is listed twice", a.name)));
        }
    }
    let mapper = InputMapper::new(&manifest.inputs, features, kinds, path)?;
    Ok(CheckedManifest { kinds, mapper })
}

/// What the header of a LightGBM text model says (before the first tree).
#[derive(Clone, Debug, Default)]
pub struct ModelHeader {
    pub objective: String,
    pub num_class: usize,
    /// Per input: `[min:max]` (numerical), `none` (unused) or the category
    /// codes seen in training, `a:b:c` (categorical).
    pub feature_infos: Vec<String>,
}

impl ModelHeader {
    pub fn parse(text: &str) -> ModelHeader {
        let mut h = ModelHeader { num_class: 1, ..ModelHeader::default() };
        for line in text.lines() {
            if line.starts_with("Tree=") || line == "end of trees" {
                break;
            }
            if let Some(v) = line.strip_prefix("objective=") {
                h.objective = v.to_string();
            } else if let Some(v) = line.strip_prefix("num_class=") {
                h.num_class = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("feature_infos=") {
                h.feature_infos = v.split(' ').map(str::to_string).collect();
            }
        }
        h
    }

    /// The category codes a categorical input took in training, or `None`
    /// for a numerical (or unused) input.
    pub fn categories(&self, input: usize) -> Option<Vec<i64>> {
        let info = self.feature_infos.get(input)?;
        if info.starts_with('[') || info == "none" {
            return None;
        }
        info.split(':').map(|c| c.parse().ok()).collect()
    }
}

/// A validated model: manifest, resolved inputs and the model text. Shared
/// between workers; each worker builds its own [`Scorecard`] from it.
#[derive(Debug)]
pub struct ModelSpec {
    pub manifest: Manifest,
    pub dir: PathBuf,
    /// Content hash of the manifest and the model file.
    pub version: String,
    pub kinds: KindMask,
    mapper: InputMapper,
    model_text: String,
    explainer: treeshap::Explainer,
}

impl ModelSpec {
    pub fn load(dir: &Path, features: &FeatureSet) -> Result<ModelSpec, ModelError> {
        let mpath = dir.join("manifest.toml");
        let shown = mpath.display().to_string();
        let (manifest, text) = read_manifest(&mpath)?;
        let CheckedManifest { kinds, mapper } = check_manifest(&manifest, features, &shown)?;
        let model_path = dir.join(&manifest.model_file);
        let model_shown = model_path.display().to_string();
        let model_text = std::fs::read_to_string(&model_path)
            .map_err(|source| ModelError::Read { path: model_shown.clone(), source })?;
        let lgbm = |e: LgbmError| ModelError::Lightgbm { path: model_shown.clone(), message: e.0 };
        let model = lgbm::Model::from_string(&model_text).map_err(lgbm)?;
        let mismatch = |message: String| ModelError::Mismatch { path: shown.clone(), message };
        let header = ModelHeader::parse(&model_text);
        let objective = header.objective.split(' ').next().unwrap_or("");
        if objective != "binary" || model.num_classes().map_err(lgbm)? != 1 {
            return Err(mismatch(format!(
                "{model_shown} is a `{}` model; a scorecard needs a binary classifier (objective = binary) whose output is the probability of \"bad\"",
                if header.objective.is_empty() { "unknown" } else { &header.objective }
            )));
        }
        let n = model.num_features().map_err(lgbm)?;
        if n != mapper.len() {
            return Err(mismatch(format!("the model takes {n} inputs but the manifest lists {}", mapper.len())));
        }
        let names = model.feature_names().map_err(lgbm)?;
        for (i, (have, want)) in names.iter().zip(&manifest.inputs).enumerate() {
            if *have != want.name {
                return Err(mismatch(format!(
                    "model input {} is named `{have}` but the manifest says `{}` (inputs must be in model column order)",
                    i + 1,
                    want.name
                )));
            }
        }
        for (i, inp) in manifest.inputs.iter().enumerate() {
            let at = format!("input {} (`{}`)", i + 1, inp.name);
            match (inp.kind, header.categories(i)) {
                (InputKind::Numeric, Some(_)) => {
                    return Err(mismatch(format!(
                        "{at} is categorical in the model but numeric in the manifest; declare kind = \"categorical\" with its `categories`"
                    )))
                }
                (InputKind::Categorical, None) if header.feature_infos.get(i).is_some_and(|f| f.starts_with('[')) => {
                    return Err(mismatch(format!(
                        "{at} is categorical in the manifest but the model was trained with it as numerical"
                    )))
                }
                (InputKind::Categorical, Some(codes)) if !inp.categories.is_empty() => {
                    // LightGBM lists -1 for rows where the input was missing.
                    if let Some(bad) = codes.iter().copied().filter(|&c| c >= 0 && c as usize >= inp.categories.len()).max() {
                        return Err(mismatch(format!(
                            "{at}: the model was trained with category code {bad}, but the manifest lists {} categories (codes 0 to {})",
                            inp.categories.len(),
                            inp.categories.len() as i64 - 1
                        )));
                    }
                }
                _ => {}
            }
        }
        // The fast path must prepare too, or no worker could serve the model.
        lgbm::SingleRow::new(model, n).map_err(lgbm)?;
        // Reason codes come from the trees read natively: a model text that
        // cannot be read so is refused now rather than explained wrongly.
        let trees = |source| ModelError::Trees { path: model_shown.clone(), source };
        let forest = trees::Forest::parse(&model_text).map_err(trees)?;
        if forest.width != n {
            let message = format!("the trees read {} inputs but LightGBM reports {n}", forest.width);
            return Err(trees(trees::TreeTextError { tree: None, message }));
        }
        let explainer = treeshap::Explainer::new(&forest);
        let version =
            ContentHasher::new().part("manifest.toml", text.as_bytes()).part("model", model_text.as_bytes()).finish();
        Ok(ModelSpec { manifest, dir: dir.to_path_buf(), version, kinds, mapper, model_text, explainer })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
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

    /// The model prepared for SHAP contributions (reason codes).
    pub fn explainer(&self) -> &treeshap::Explainer {
        &self.explainer
    }

    /// The decision's reason for input `input` contributing `contribution`.
    pub fn reason(&self, input: usize, contribution: f64) -> Reason {
        let inp = &self.manifest.inputs[input];
        Reason {
            source: ReasonSource::Model,
            code: inp.reason_code.clone(),
            id: inp.name.clone(),
            stage: None,
            action: None,
            shadow: false,
            label: Some(inp.label.clone()),
            contribution: Some((contribution * 1e6).round() / 1e6),
        }
    }
}

/// The role of a model in a [`ModelSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Champion,
    Challenger,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Challenger => "challenger",
        }
    }
}

/// The models in force: at most one champion per event type, each with at
/// most one challenger scoring the same event types.
#[derive(Debug, Default)]
pub struct ModelSet {
    pub models: Vec<Arc<ModelSpec>>,
    /// Per event kind: the champion's index and its challenger's, if any.
    by_kind: [Option<(usize, Option<usize>)>; 16],
}

/// Which models score an event, and which of them decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Index of the model whose score decides.
    pub decides: usize,
    /// Index of the model scored beside it and recorded only.
    pub shadow: Option<usize>,
}

impl ModelSet {
    /// Groups validated models; refuses overlapping champions, challengers
    /// without a matching champion and duplicate names, naming each model's
    /// manifest.
    pub fn new(models: Vec<Arc<ModelSpec>>) -> Result<ModelSet, Vec<ModelError>> {
        let mut errors = Vec::new();
        let shown = |m: &ModelSpec| m.dir.join("manifest.toml").display().to_string();
        let mut by_kind: [Option<(usize, Option<usize>)>; 16] = [None; 16];
        for (i, m) in models.iter().enumerate() {
            if let Some(j) = models[..i].iter().position(|o| o.name() == m.name()) {
                errors.push(ModelError::Mismatch {
                    path: shown(m),
                    message: format!("model name `{}` is also used by {}", m.name(), shown(&models[j])),
                });
            }
        }
        for (i, m) in models.iter().enumerate().filter(|(_, m)| m.manifest.challenger.is_none()) {
            for k in EventKind::ALL.iter().filter(|k| m.scores(**k)) {
                match by_kind[*k as usize] {
                    Some((j, _)) => errors.push(ModelError::Mismatch {
                        path: shown(m),
                        message: format!(
                            "models `{}` and `{}` both score {} events; make one the other's challenger",
                            models[j].name(),
                            m.name(),
                            k.as_str()
                        ),
                    }),
                    None => by_kind[*k as usize] = Some((i, None)),
                }
            }
        }
        for (i, m) in models.iter().enumerate() {
            let Some(c) = &m.manifest.challenger else { continue };
            let err = |message: String| ModelError::Mismatch { path: shown(m), message };
            let Some(champ) = models.iter().position(|o| o.name() == c.champion) else {
                let names: Vec<&str> = models.iter().map(|o| o.name()).collect();
                errors.push(err(format!(
                    "challenger of `{}`, but no model of that name is loaded (loaded: {})",
                    c.champion,
                    names.join(", ")
                )));
                continue;
            };
            let champion = &models[champ];
            if champion.manifest.challenger.is_some() {
                errors.push(err(format!("challenger of `{}`, which is itself a challenger", c.champion)));
                continue;
            }
            if champion.kinds != m.kinds {
                errors.push(err(format!(
                    "challenger of `{}`, which scores {} events, but it scores {} events; a challenger scores the same events",
                    c.champion,
                    kind_names(champion.kinds),
                    kind_names(m.kinds)
                )));
                continue;
            }
            for k in EventKind::ALL.iter().filter(|k| m.scores(**k)) {
                match &mut by_kind[*k as usize] {
                    Some((_, slot @ None)) => *slot = Some(i),
                    Some((_, Some(other))) => {
                        errors.push(err(format!(
                            "`{}` already has a challenger, `{}`",
                            c.champion,
                            models[*other].name()
                        )));
                        break;
                    }
                    None => {}
                }
            }
        }
        if errors.is_empty() {
            Ok(ModelSet { models, by_kind })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    pub fn role(&self, index: usize) -> Role {
        if self.models[index].manifest.challenger.is_some() {
            Role::Challenger
        } else {
            Role::Champion
        }
    }

    /// Event kinds any model scores.
    pub fn kinds(&self) -> KindMask {
        self.models.iter().fold(0, |m, s| m | s.kinds)
    }

    /// Which model decides an event of `kind` by `user_id`, and which is
    /// scored beside it. The split is deterministic per user: the same user
    /// always lands on the same side for a given champion and share.
    #[inline]
    pub fn route(&self, kind: EventKind, user_id: &str) -> Option<Route> {
        let (champion, challenger) = self.by_kind[kind as usize]?;
        let Some(ch) = challenger else { return Some(Route { decides: champion, shadow: None }) };
        let share = self.models[ch].manifest.challenger.as_ref().map_or(0.0, |c| c.traffic_share);
        if share > 0.0 && user_bucket(self.models[champion].name(), user_id) < share {
            Some(Route { decides: ch, shadow: Some(champion) })
        } else {
            Some(Route { decides: champion, shadow: Some(ch) })
        }
    }
}

/// A user's position in [0, 1) for traffic splits: FNV-1a over the champion's
/// name and the user id, finished with the SplitMix64 mixer. Stable across
/// runs, machines and releases (documented in docs/models.md).
pub fn user_bucket(salt: &str, user_id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain(std::iter::once(0xff)).chain(user_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A model prepared for one worker: its own booster with the single-row fast
/// path initialised for probabilities, and reused buffers for the row and
/// the contributions.
pub struct Scorecard {
    spec: Arc<ModelSpec>,
    predictor: lgbm::SingleRow,
    row: Vec<f64>,
    contrib: Vec<f64>,
    scratch: treeshap::Scratch,
    /// Adverse inputs of the last scored event: (input index, contribution),
    /// largest first.
    adverse: Vec<(usize, f64)>,
}

/// The result of scoring one event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub probability: f64,
    pub points: f64,
}

/// The result of scoring one event, with its reasons as decision records.
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
        let lgbm = |e: LgbmError| ModelError::Lightgbm { path: path.clone(), message: e.0 };
        let model = lgbm::Model::from_string(&spec.model_text).map_err(lgbm)?;
        let n = spec.mapper.len();
        let predictor = lgbm::SingleRow::new(model, n).map_err(lgbm)?;
        let contrib = vec![0.0; spec.explainer.len()];
        let scratch = spec.explainer.scratch();
        Ok(Scorecard { spec, predictor, row: Vec::with_capacity(n), contrib, scratch, adverse: Vec::with_capacity(n) })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn spec_arc(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    /// Probability of "bad" for a prepared row (exposed for parity tests).
    pub fn predict_row(&mut self, row: &[f64]) -> Result<f64, LgbmError> {
        self.predictor.predict(row)
    }

    /// SHAP contributions for a prepared row, as reason codes use them: one
    /// per input, then the bias (log-odds). `out` needs one more value than
    /// the row.
    pub fn contributions_row(&mut self, row: &[f64], out: &mut [f64]) -> Result<(), LgbmError> {
        let w = self.spec.explainer.width();
        if row.len() != w || out.len() <= w {
            return Err(LgbmError(format!(
                "a row of {} values for a model of {w} inputs, or an output buffer of {}",
                row.len(),
                out.len()
            )));
        }
        self.spec.explainer.contributions(row, &mut self.scratch, out);
        Ok(())
    }

    /// LightGBM's own SHAP contributions for a prepared row (its
    /// `predict_contrib` on the single-row fast path), the reference
    /// [`contributions_row`](Self::contributions_row) is tested against.
    pub fn lightgbm_contributions_row(&mut self, row: &[f64], out: &mut [f64]) -> Result<(), LgbmError> {
        self.predictor.contrib(row, out)
    }

    /// Scores one event without allocating; with `reason_count > 0` the top
    /// adverse inputs are then in [`adverse`](Self::adverse).
    pub fn score_event(
        &mut self,
        ev: &Event,
        features: &FeatureVector,
        reason_count: usize,
    ) -> Result<Scored, LgbmError> {
        self.spec.mapper.fill_row(ev, features, &mut self.row);
        let probability = self.predictor.predict(&self.row)?;
        self.adverse.clear();
        if reason_count > 0 {
            self.spec.explainer.contributions(&self.row, &mut self.scratch, &mut self.contrib);
            // One value per input, then the bias; positive pushes towards "bad".
            let w = self.row.len();
            self.adverse.extend(self.contrib[..w].iter().copied().enumerate().filter(|&(_, c)| c > 0.0));
            // Total order (largest first, then column order): unstable sort
            // gives the same result as a stable one, and needs no buffer.
            self.adverse.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            self.adverse.truncate(reason_count);
        }
        Ok(Scored { probability, points: self.spec.manifest.scaling.points(probability) })
    }

    /// The top adverse inputs of the last [`score_event`](Self::score_event):
    /// (input index, contribution to the log-odds of "bad"), largest first.
    pub fn adverse(&self) -> &[(usize, f64)] {
        &self.adverse
    }

    /// Scores one event and returns its reasons as decision records.
    pub fn score(&mut self, ev: &Event, features: &FeatureVector, reason_count: usize) -> Result<Score, LgbmError> {
        let s = self.score_event(ev, features, reason_count)?;
        let reasons = self.adverse.iter().map(|&(i, c)| self.spec.reason(i, c)).collect();
        Ok(Score { probability: s.probability, points: s.points, reasons })
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
