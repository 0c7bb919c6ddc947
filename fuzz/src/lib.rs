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
        for name in [
            "device.distinct_users_24h",
            "device.applications_1h",
            "user.failed_logins_10m",
            "user.applications_30d",
            "ip24.distinct_users_24h",
            "user.contact_changes_30d",
            "user.device_is_emulator",
            "user.device_is_rooted",
            "user.max_external_applications_30d",
        ] {
            add(&mut s, name, FieldType::Num, ALL_KINDS);
        }
        let app = EventKind::LoanApplication.bit();
        for name in ["app.amount_to_income", "model.score", "model.probability"] {
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
