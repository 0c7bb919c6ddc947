//! The streaming, two-thread replay gives exactly what the pipeline gives
//! when fed the same inputs one by one in file order (what the live driver
//! does), including for out-of-order events, blank lines, CRLF line ends
//! and malformed lines, and it reports the position of the last input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use riskd_core::{DeadLetter, Decision, KeyRing, SourcePosition};
use riskd_pipeline::config::EngineConfig;
use riskd_pipeline::replay::replay;
use riskd_pipeline::{Deployment, Outcome, Pipeline};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn keys() -> KeyRing {
    let text = format!(
        "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
        "33".repeat(32),
        "44".repeat(32)
    );
    KeyRing::from_toml(&text, "test-keys").unwrap()
}

fn pipeline() -> Pipeline {
    let cfg = EngineConfig {
        features_dir: repo().join("features"),
        rules_dir: repo().join("rules"),
        models: vec![repo().join("models/a_card")],
        ..EngineConfig::default()
    };
    let deployment = Arc::new(Deployment::load(&cfg).unwrap_or_else(|e| panic!("{e}")));
    Pipeline::new(deployment, keys(), &cfg).unwrap()
}

/// The sample stream with every 97th pair of lines swapped (out of
/// event-time order), blank lines, CRLF ends and malformed lines mixed in.
fn input_text() -> String {
    let text = std::fs::read_to_string(repo().join("replay-data/events.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for i in (0..lines.len() - 1).step_by(97) {
        lines.swap(i, i + 1);
    }
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        out += l;
        out += if i % 50 == 0 { "\r\n" } else { "\n" };
        if i % 700 == 0 {
            out += "\n   \n{not json\n";
        }
    }
    out += "{\"last\": true}"; // no final newline
    out
}

#[test]
fn streaming_replay_equals_one_by_one_processing_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let text = input_text();
    std::fs::write(&path, &text).unwrap();

    let (mut decisions, mut dead) = (Vec::new(), Vec::new());
    let mut calls = 0;
    let summary = replay(&mut pipeline(), &path, &mut decisions, &mut dead, |_| calls += 1).unwrap();

    // The reference: every non-blank line, in file order, through `process`.
    let mut reference = pipeline();
    let shown = path.display().to_string();
    let (mut want_decisions, mut want_dead) = (Vec::new(), Vec::new());
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let source = || SourcePosition::File { path: shown.clone(), line: i as u64 + 1 };
        match reference.process(line.as_bytes(), source) {
            Outcome::Decision(d) => want_decisions.push(d.without_timing()),
            Outcome::DeadLetter(dl) => want_dead.push(dl),
        }
    }

    let got: Vec<Decision> = std::str::from_utf8(&decisions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Decision>(l).unwrap().without_timing())
        .collect();
    assert_eq!(got.len(), want_decisions.len());
    assert!(got == want_decisions, "replay decisions differ from one-by-one processing");
    // Byte-identical records once the timing field is equal.
    let encode = |ds: &[Decision]| ds.iter().map(|d| serde_json::to_string(d).unwrap()).collect::<Vec<_>>();
    assert_eq!(encode(&got), encode(&want_decisions));

    let got_dead: Vec<DeadLetter> =
        std::str::from_utf8(&dead).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let key = |d: &DeadLetter| (d.dead_letter_id.clone(), d.reason, d.field.clone(), d.source.clone());
    assert_eq!(got_dead.iter().map(key).collect::<Vec<_>>(), want_dead.iter().map(key).collect::<Vec<_>>());
    assert!(got_dead.len() >= 9, "the malformed lines are dead-lettered");

    assert_eq!(summary.inputs as usize, got.len() + got_dead.len());
    assert_eq!(summary.decisions as usize, got.len());
    let lines = text.split('\n').count() as u64;
    assert_eq!(summary.position.line, lines, "the last input is the last line");
    assert_eq!(summary.position.next_offset, text.len() as u64);
    assert_eq!(calls, 0, "progress is reported every million inputs");
}

#[test]
fn an_empty_file_replays_to_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.jsonl");
    std::fs::write(&path, "\n\n").unwrap();
    let (mut decisions, mut dead) = (Vec::new(), Vec::new());
    let summary = replay(&mut pipeline(), &path, &mut decisions, &mut dead, |_| {}).unwrap();
    assert_eq!(summary.inputs, 0);
    assert!(decisions.is_empty() && dead.is_empty());
}
