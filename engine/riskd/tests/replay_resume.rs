//! `riskd replay --checkpoint-dir`: killed with SIGKILL midway and started
//! again with the same arguments, it resumes from its checkpoint and its
//! outputs equal an uninterrupted replay's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn riskd(keys: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riskd"));
    c.current_dir(repo()).env("RISKD_PII_KEY_FILE", keys).env("RISKD_LOG", "warn");
    c
}

fn without_timing(text: &str) -> Vec<riskd_core::Decision> {
    text.lines().map(|l| serde_json::from_str::<riskd_core::Decision>(l).unwrap().without_timing()).collect()
}

fn dead_letters(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| {
            let d: riskd_core::DeadLetter = serde_json::from_str(l).unwrap();
            (d.reason.to_string(), format!("{:?}", d.source))
        })
        .collect()
}

#[test]
fn a_killed_replay_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, riskd_core::KeyRing::generate_file("k1")).unwrap();
    let input = dir.path().join("events.jsonl");
    let st = riskd(&keys)
        .args(["gen", "--seed", "5", "--users", "3000", "--events", "120000", "--bad", "40", "--out"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(st.success());

    let full = dir.path().join("full.jsonl");
    let st = riskd(&keys).args(["replay", "--input"]).arg(&input).arg("--out").arg(&full).status().unwrap();
    assert!(st.success());

    let part = dir.path().join("part.jsonl");
    let ck = dir.path().join("ck");
    let replay = || {
        let mut c = riskd(&keys);
        c.args(["replay", "--checkpoint-every", "5000", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(&part)
            .arg("--checkpoint-dir")
            .arg(&ck);
        c
    };
    let mut first = replay().stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ck.join("state.ckpt").exists() {
        assert!(Instant::now() < deadline, "no checkpoint was written");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(first.try_wait().unwrap().is_none(), "the replay must still be running when it is killed");
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let written_before = std::fs::read_to_string(&part).unwrap_or_default().lines().count();
    let total = std::fs::read_to_string(&full).unwrap().lines().count();
    assert!(written_before < total, "killed midway ({written_before} of {total} decisions written)");

    let out = replay().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "the second run resumed: {stderr}");
    assert!(!ck.join("state.ckpt").exists(), "a completed replay leaves no checkpoint behind");

    let (a, b) = (std::fs::read_to_string(&full).unwrap(), std::fs::read_to_string(&part).unwrap());
    assert_eq!(without_timing(&b), without_timing(&a), "decisions after the resume equal an uninterrupted replay");
    let dl = |p: &Path| std::fs::read_to_string(p.with_extension("dead-letters.jsonl")).unwrap();
    assert_eq!(dead_letters(&dl(&part)), dead_letters(&dl(&full)));
    assert_eq!(dead_letters(&dl(&full)).len(), 40);
}

#[test]
fn a_checkpoint_of_another_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, riskd_core::KeyRing::generate_file("k1")).unwrap();
    let ck = dir.path().join("ck");
    // A checkpoint for replay-data, left as if that replay had been killed.
    let store = riskd_pipeline::CheckpointStore::new(&ck);
    let meta = riskd_pipeline::CheckpointMeta {
        feature_set: "x".into(),
        replay: Some(riskd_pipeline::checkpoint::ReplayPoint { input: "other.jsonl".into(), ..Default::default() }),
        ..Default::default()
    };
    let set = std::sync::Arc::new(riskd_features::FeatureSet::load(&repo().join("features")).unwrap());
    let keyring = riskd_core::KeyRing::load(&keys).unwrap();
    let engine = riskd_features::FeatureEngine::new(set, riskd_pipeline::pipeline::state_key(&keyring));
    store.write(&riskd_pipeline::CheckpointStore::encode(&meta, &engine)).unwrap();
    let out = riskd(&keys)
        .args(["replay", "--input", "replay-data/events.jsonl", "--out"])
        .arg(dir.path().join("d.jsonl"))
        .arg("--checkpoint-dir")
        .arg(&ck)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to a replay of other.jsonl"), "{err}");
}
