//! A whole rule file (TOML, conditions, spans inside strings) loaded with
//! the repository's chain, lists and constants: never a panic; a rejected
//! file has diagnostics that render with their file:line:col.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use riskd_fuzz::{repo, schema};
use riskd_rules::RuleSet;

/// A copy of `rules/` whose `hard.toml` each input replaces.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let from = repo().join("rules");
        for sub in ["", "lists"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
            for entry in std::fs::read_dir(from.join(sub)).expect("rules/ is readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_file() {
                    std::fs::copy(&path, dir.path().join(sub).join(path.file_name().expect("a name"))).expect("copy");
                }
            }
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    std::fs::write(dir.path().join("hard.toml"), data).expect("write hard.toml");
    match RuleSet::load(dir.path(), schema()) {
        Ok(rs) => {
            let _ = rs.warnings().render();
        }
        Err(d) => {
            assert!(!d.0.is_empty(), "a rejected rule set has a diagnostic");
            let _ = d.render();
        }
    }
});
