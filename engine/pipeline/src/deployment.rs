//! Everything a worker needs that does not change per event: the feature
//! set, the compiled rule set, the validated models and their versions.
//! Loading checks all of it and reports every problem before any event flows.
//!
//! Rules and models can be replaced while serving. A replacement is loaded
//! and validated beside the version in force and swapped in atomically
//! ([`ArcSwap`]); workers load the state once per event, so every event is
//! decided wholly by one set of versions. A refused replacement leaves the
//! previous version serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use riskd_core::event::{EventKind, ALL_KINDS};
use riskd_core::fields::{FieldType, FIELDS};
use riskd_core::version::ContentHasher;
use riskd_core::Versions;
use riskd_features::{DefError, FeatureSet};
use riskd_rules::{run_tests, Diagnostics, RuleSet, Schema, Slot};
use riskd_scorecard::{ModelError, ModelSet, ModelSpec};

use crate::config::EngineConfig;

/// Slots above this read features; above [`MODEL_BASE`] read the model.
pub const FEATURE_BASE: u32 = 1_000;
pub const MODEL_BASE: u32 = 100_000;
pub const MODEL_SCORE: Slot = Slot(MODEL_BASE);
pub const MODEL_PROBABILITY: Slot = Slot(MODEL_BASE + 1);

/// Why a deployment could not be loaded: every problem found, by stage.
#[derive(Debug, Default)]
pub struct LoadError {
    pub features: Vec<DefError>,
    pub rules: Option<Diagnostics>,
    pub models: Vec<ModelError>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.features {
            writeln!(f, "{e}")?;
        }
        if let Some(d) = &self.rules {
            write!(f, "{}", d.render())?;
        }
        for e in &self.models {
            writeln!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub fn count(&self) -> usize {
        self.features.len() + self.rules.as_ref().map_or(0, |d| d.0.len()) + self.models.len()
    }
}

/// The rule set and models in force, with the versions decisions made by
/// them record.
pub struct RuleState {
    pub rules: Arc<RuleSet>,
    pub models: Arc<ModelSet>,
    pub versions: Versions,
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new rule set is in force from the next event on.
    Applied { rule_set: String, lists: String },
    /// New models are in force from the next event on: (name, version) of
    /// each, and the combined model version decisions record.
    ModelsApplied { models: Vec<(String, String)>, model: String },
    /// The files compile to the rule set (or models) already in force.
    Unchanged,
}

/// Why a reload was refused; the previous rule set keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new rules do not compile:\n{0}")]
    Compile(String),
    #[error("the new rules fail their analyst tests:\n{0}")]
    Tests(String),
    #[error("the new models are refused:\n{0}")]
    Models(String),
}

pub struct Deployment {
    pub features: Arc<FeatureSet>,
    pub schema: Schema,
    rules_dir: PathBuf,
    model_dirs: Vec<PathBuf>,
    /// Swapped atomically on reload; workers load it once per event.
    current: ArcSwap<RuleState>,
    /// Serialises reloads (never taken on the event path).
    reloading: Mutex<()>,
}

impl fmt::Debug for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deployment").field("versions", &self.current.load().versions).finish_non_exhaustive()
    }
}

/// The names rules may read: event fields, features and model outputs.
pub fn schema_for(features: &FeatureSet, models: &ModelSet) -> Schema {
    let mut schema = Schema::new();
    for (i, f) in FIELDS.iter().enumerate() {
        schema.add(f.name, f.ty, f.kinds, Slot(i as u32));
    }
    for d in &features.defs {
        let kinds = if d.entity == riskd_features::EntityKind::Event { ratio_kinds(d) } else { ALL_KINDS };
        schema.add(&d.name, FieldType::Num, kinds, Slot(FEATURE_BASE + d.slot as u32));
    }
    let scored = if models.is_empty() { EventKind::LoanApplication.bit() } else { models.kinds() };
    schema.add("model.score", FieldType::Num, scored, MODEL_SCORE);
    schema.add("model.probability", FieldType::Num, scored, MODEL_PROBABILITY);
    schema
}

/// A per-event ratio has a value only where its operands can.
fn ratio_kinds(d: &riskd_features::FeatureDef) -> u16 {
    use riskd_features::Aggregation;
    match &d.agg {
        Aggregation::Ratio(n, m) => {
            let k = |o: &riskd_features::Operand| match o {
                riskd_features::Operand::Field(f) => f.spec().kinds,
                riskd_features::Operand::Feature(_) => ALL_KINDS,
            };
            k(n) & k(m)
        }
        _ => ALL_KINDS,
    }
}

impl Deployment {
    pub fn load(cfg: &EngineConfig) -> Result<Deployment, LoadError> {
        let mut err = LoadError::default();
        let features = match FeatureSet::load(&cfg.features_dir) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                err.features = e;
                Arc::new(FeatureSet {
                    defs: Vec::new(),
                    version: String::new(),
                    allowed_lateness_ms: 0,
                    limits: Default::default(),
                })
            }
        };
        let models = if err.features.is_empty() {
            match load_models(&cfg.models, &features, None) {
                Ok(set) => set,
                Err(e) => {
                    err.models = e;
                    ModelSet::default()
                }
            }
        } else {
            ModelSet::default()
        };
        let schema = schema_for(&features, &models);
        let rules = if err.features.is_empty() {
            match RuleSet::load(&cfg.rules_dir, &schema) {
                Ok(r) => Some(Arc::new(r)),
                Err(d) => {
                    err.rules = Some(d);
                    None
                }
            }
        } else {
            None
        };
        match rules {
            Some(rules) if err.count() == 0 => {
                let versions = Versions {
                    feature_set: features.version.clone(),
                    rule_set: rules.version().to_string(),
                    lists: rules.lists_version().to_string(),
                    model: models_version(&models.models),
                };
                let current = ArcSwap::from_pointee(RuleState { rules, models: Arc::new(models), versions });
                Ok(Deployment {
                    features,
                    schema,
                    rules_dir: cfg.rules_dir.clone(),
                    model_dirs: cfg.models.clone(),
                    current,
                    reloading: Mutex::new(()),
                })
            }
            _ => Err(err),
        }
    }

    /// The rule set and models in force now. Cheap: no lock, no allocation.
    pub fn rules(&self) -> arc_swap::Guard<Arc<RuleState>> {
        self.current.load()
    }

    /// The models in force now.
    pub fn models(&self) -> Arc<ModelSet> {
        self.current.load().models.clone()
    }

    pub fn model_dirs(&self) -> &[PathBuf] {
        &self.model_dirs
    }

    pub fn versions(&self) -> Versions {
        self.current.load().versions.clone()
    }

    pub fn rules_dir(&self) -> &Path {
        &self.rules_dir
    }

    /// Compiles the rule files again and, when they compile and pass their
    /// analyst tests, puts them in force atomically between two events.
    /// Otherwise the rule set in force stays, and the error says why.
    pub fn reload_rules(&self) -> Result<ReloadOutcome, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let rules = RuleSet::load(&self.rules_dir, &self.schema).map_err(|d| ReloadError::Compile(d.render()))?;
        let report = run_tests(&rules, &self.schema, &self.rules_dir.join("tests"))
            .map_err(|d| ReloadError::Tests(d.render()))?;
        if report.failed() > 0 {
            return Err(ReloadError::Tests(report.render()));
        }
        let old = self.current.load();
        if old.versions.rule_set == rules.version() && old.versions.lists == rules.lists_version() {
            return Ok(ReloadOutcome::Unchanged);
        }
        let versions = Versions {
            rule_set: rules.version().to_string(),
            lists: rules.lists_version().to_string(),
            ..old.versions.clone()
        };
        let outcome = ReloadOutcome::Applied { rule_set: versions.rule_set.clone(), lists: versions.lists.clone() };
        self.current.store(Arc::new(RuleState { rules: Arc::new(rules), models: old.models.clone(), versions }));
        Ok(outcome)
    }

    /// Loads the model directories again beside the models in force and,
    /// when every model validates against its manifest and the feature set
    /// and the set scores the same event types (the rules were checked
    /// against those), puts them in force atomically between two events.
    /// Otherwise the models in force stay, and the error says why.
    pub fn reload_models(&self) -> Result<ReloadOutcome, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current.load_full();
        let set = load_models(&self.model_dirs, &self.features, Some(&old.models)).map_err(|errors| {
            ReloadError::Models(errors.iter().map(|e| format!("error: {e}\n")).collect::<String>())
        })?;
        if set.kinds() != old.models.kinds() {
            let names = |mask| {
                EventKind::ALL.iter().filter(|k| mask & k.bit() != 0).map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            };
            return Err(ReloadError::Models(format!(
                "error: the new models score {} events but the models in force score {}; the rules were checked against the latter, so changing which events are scored needs a restart\n",
                names(set.kinds()),
                names(old.models.kinds())
            )));
        }
        let model = models_version(&set.models);
        if model == old.versions.model {
            return Ok(ReloadOutcome::Unchanged);
        }
        let models = set.models.iter().map(|m| (m.name().to_string(), m.version.clone())).collect();
        let versions = Versions { model: model.clone(), ..old.versions.clone() };
        self.current.store(Arc::new(RuleState { rules: old.rules.clone(), models: Arc::new(set), versions }));
        Ok(ReloadOutcome::ModelsApplied { models, model })
    }
}

/// Loads and validates every model directory and groups them. A model whose
/// content is unchanged from `current` keeps its loaded spec, so workers
/// keep their prepared scorecards for it.
fn load_models(
    dirs: &[PathBuf],
    features: &FeatureSet,
    current: Option<&ModelSet>,
) -> Result<ModelSet, Vec<ModelError>> {
    let (mut models, mut errors) = (Vec::new(), Vec::new());
    for dir in dirs {
        match ModelSpec::load(dir, features) {
            Ok(m) => {
                let same = current.and_then(|c| c.models.iter().find(|o| o.dir == m.dir && o.version == m.version));
                models.push(same.cloned().unwrap_or_else(|| Arc::new(m)));
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    ModelSet::new(models)
}

fn models_version(models: &[Arc<ModelSpec>]) -> String {
    if models.is_empty() {
        return "none".into();
    }
    let mut h = ContentHasher::new();
    for m in models {
        h.part(&m.manifest.name, m.version.as_bytes());
    }
    h.finish()
}
