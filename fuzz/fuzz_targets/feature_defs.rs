//! A feature-definition file after the repository's own (so that it may
//! refer to their features): never a panic; errors carry a position.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use riskd_features::FeatureSet;
use riskd_fuzz::repo;

fn profile() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| std::fs::read_to_string(repo().join("features/profile.toml")).expect("features/profile.toml"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let files = [("profile.toml".to_string(), profile().to_string()), ("fuzz.toml".to_string(), text.to_string())];
    if let Err(errors) = FeatureSet::from_sources(&files) {
        assert!(!errors.is_empty(), "a rejected feature set has an error");
        for e in &errors {
            assert!(e.line >= 1 && e.col >= 1, "{e}");
            let _ = e.to_string();
        }
    }
});
