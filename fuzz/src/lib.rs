//! What the fuzz targets share: the names the pipeline gives rules, and the
//! repository's own rule set, loaded once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use riskd_core::event::{EventKind, ALL_KINDS};
use riskd_core::fields::FIELDS;
use riskd_core::FieldType;
use riskd_rules::{RuleSet, Schema, Slot};

/// The repository root (this crate lives in `fuzz/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Event fields, the starter features and the model outputs, as the
/// pipeline registers them.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut s = Schema::new();
        let mut slot = 0u32;
        let mut add = |s: &mut Schema, name: &str, ty: FieldType, kinds| {
            s.add(name, ty, kinds, Slot(slot));
            slot += 1;
        };
        for f in FIELDS {
            add(&mut s, f.name, f.ty, f.kinds);
        }
        // Every feature of the starter set in features/.
        let app = EventKind::LoanApplication.bit();
        let set = riskd_features::FeatureSet::load(&repo().join("features"))
            .unwrap_or_else(|e| panic!("the starter features do not load: {e:?}"));
        for d in &set.defs {
            let kinds = if d.entity == riskd_features::EntityKind::Event { app } else { ALL_KINDS };
            add(&mut s, &d.name, FieldType::Num, kinds);
        }
        for name in ["model.score", "model.probability"] {
            add(&mut s, name, FieldType::Num, app);
        }
        s
    })
}

/// The starter rule set in `rules/`, with its lists and constants.
pub fn ruleset() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| match RuleSet::load(&repo().join("rules"), schema()) {
        Ok(rs) => rs,
        Err(d) => panic!("the starter rules do not load:\n{}", d.render()),
    })
}
