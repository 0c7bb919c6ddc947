//! No clear-text identity number, phone or bank card of the input appears in
//! anything `riskd replay` writes: decisions, dead letters or logs.

use std::path::Path;
use std::process::Command;

#[test]
fn replay_outputs_hold_no_clear_personal_data() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), riskd_core::KeyRing::generate_file("k1")).unwrap();
    let input = repo.join("replay-data/events.jsonl");
    let out = dir.path().join("decisions.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_riskd"))
        .current_dir(&repo)
        .env("RISKD_PII_KEY_FILE", dir.path().join("keys.toml"))
        .env("RISKD_LOG", "debug")
        .env("RISKD_ENGINE_INCLUDE_FEATURES", "true")
        .args(["replay", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--dead-letters")
        .arg(&dead)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let mut secrets = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        for field in ["phone", "id_number", "bank_card"] {
            if let Some(s) = v["entities"][field].as_str() {
                secrets.insert(s.to_string());
            }
        }
    }
    assert!(secrets.len() > 500, "the sample holds identity data to look for ({})", secrets.len());
    let outputs = [
        ("decisions", std::fs::read_to_string(&out).unwrap()),
        ("dead letters", std::fs::read_to_string(&dead).unwrap()),
        ("logs", String::from_utf8_lossy(&run.stderr).into_owned()),
    ];
    assert!(outputs[0].1.lines().count() >= 5000);
    assert!(outputs[1].1.lines().count() >= 8);
    for (what, text) in &outputs {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{what} contain a clear identity value");
        }
    }
}
