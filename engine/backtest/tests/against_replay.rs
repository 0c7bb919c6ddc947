//! Backtests checked against replaying each configuration on its own
//! (`riskd replay`'s driver) and diffing the decisions: a candidate one
//! rule apart (the swap-in/swap-out matrix and the list of changes must be
//! exactly the decisions that rule changes), a candidate feature set (its
//! own intake) and a candidate model.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use riskd_backtest::{backtest, Options, Report};
use riskd_core::{Decision, KeyRing};
use riskd_pipeline::config::EngineConfig;
use riskd_pipeline::train::read_labels;
use riskd_pipeline::{Deployment, Pipeline};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn keys() -> KeyRing {
    let text = format!(
        "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
        "57".repeat(32),
        "68".repeat(32)
    );
    KeyRing::from_toml(&text, "test-keys").unwrap()
}

fn config(rules: &Path) -> EngineConfig {
    EngineConfig {
        features_dir: repo().join("features"),
        rules_dir: rules.to_path_buf(),
        models: vec![repo().join("models/a_card")],
        ..EngineConfig::default()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The repository's rules with one edit to one file.
fn rules_with(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let rules = dir.join("rules");
    copy_dir(&repo().join("rules"), &rules);
    let path = rules.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once in {file}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    rules
}

/// Decisions of a plain replay of the recorded stream with `cfg`, by event id.
fn replay_alone(cfg: &EngineConfig) -> BTreeMap<String, Decision> {
    let dep = Arc::new(Deployment::load(cfg).unwrap());
    let mut pipeline = Pipeline::new(dep, keys(), cfg).unwrap();
    let mut out = Vec::new();
    let input = repo().join("replay-data/events.jsonl");
    riskd_pipeline::replay::replay(&mut pipeline, &input, &mut out, &mut std::io::sink(), |_| {}).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let d: Decision = serde_json::from_str(l).unwrap();
            (d.event_id.clone(), d)
        })
        .collect()
}

type Swaps = BTreeMap<(String, String), (u64, u64, u64)>;

/// (baseline action, candidate action) -> (count, labelled, bad) over the
/// events whose action differs, and their ids.
fn expected_changes(base: &EngineConfig, cand: &EngineConfig) -> (Swaps, BTreeSet<String>) {
    let labels = read_labels(&repo().join("replay-data/labels.csv")).unwrap();
    let (a, b) = (replay_alone(base), replay_alone(cand));
    assert_eq!(a.len(), b.len());
    let mut swaps = Swaps::new();
    let mut ids = BTreeSet::new();
    for (id, x) in &a {
        let y = &b[id];
        if x.action != y.action {
            let e = swaps.entry((x.action.as_str().to_string(), y.action.as_str().to_string())).or_default();
            e.0 += 1;
            if let Some(&l) = labels.get(id) {
                e.1 += 1;
                e.2 += u64::from(l > 0.5);
            }
            ids.insert(id.clone());
        }
    }
    (swaps, ids)
}

fn run(base: &EngineConfig, cand: &EngineConfig, out: &Path) -> Report {
    let opts = Options {
        input: repo().join("replay-data/events.jsonl"),
        labels: Some(repo().join("replay-data/labels.csv")),
        out_dir: out.to_path_buf(),
        decisions: false,
        reason_codes: false,
    };
    backtest([base, cand], &keys(), &opts, |_, _| {}).unwrap().report
}

fn changed_csv(out: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(out.join("changed.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(str::to_string)).collect()).collect()
}

/// The backtest's swap matrix and list of changes equal the independent diff.
fn check_changes(base: &EngineConfig, cand: &EngineConfig, out: &Path) -> (Report, Vec<HashMap<String, String>>) {
    let (want, want_ids) = expected_changes(base, cand);
    assert!(!want.is_empty(), "the edit must change some decisions for the test to mean anything");
    let report = run(base, cand, out);
    let got: Swaps = report
        .difference
        .swap
        .iter()
        .filter(|s| s.baseline != s.candidate)
        .map(|s| ((s.baseline.to_string(), s.candidate.to_string()), (s.count, s.labelled, s.bad)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(report.difference.changed, want_ids.len() as u64);
    let total: u64 = report.difference.swap.iter().map(|s| s.count).sum();
    assert_eq!(total, report.inputs, "every input is in the matrix, unchanged ones on its diagonal");

    let rows = changed_csv(out);
    let ids: BTreeSet<String> = rows.iter().map(|r| r["event_id"].clone()).collect();
    assert_eq!(ids, want_ids);
    (report, rows)
}

fn check_one_rule(base: &EngineConfig, cand: &EngineConfig, rule: &str, out: &Path) -> Report {
    let (report, rows) = check_changes(base, cand, out);
    assert!(report.shared_intake, "same feature set: one intake feeds both");
    // Only the edited rule can explain a change.
    for r in &rows {
        let named = format!("{};{}", r["rules_only_in_baseline"], r["rules_only_in_candidate"]);
        assert!(named.split(';').any(|x| x == rule), "change of {} not attributed to {rule}: {named}", r["event_id"]);
    }
    assert!(report.difference.top_rules.iter().any(|t| t.rule_id == rule));
    report
}

#[test]
fn a_changed_threshold_changes_exactly_the_decisions_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_with(dir.path(), "policy.toml", "when = \"model.score < 600\"", "when = \"model.score < 650\"");
    let (base, cand) = (config(&repo().join("rules")), config(&rules));
    let report = check_one_rule(&base, &cand, "R302", &dir.path().join("out"));
    // A higher review threshold only moves approvals to review.
    assert!(report
        .difference
        .swap
        .iter()
        .all(|s| s.baseline == s.candidate || (s.baseline == "approve" && s.candidate == "review")));
    let [b, c] = &report.configurations;
    assert!(c.approval_rate < b.approval_rate);
}

#[test]
fn a_disabled_rule_changes_exactly_the_decisions_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("rules/velocity.toml")).unwrap();
    let at = text.find("id = \"R206\"").expect("rule R206 in velocity.toml");
    let mode_at = at + text[at..].find("mode = \"active\"").unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&repo().join("rules"), &rules);
    let edited = format!("{}mode = \"disabled\"{}", &text[..mode_at], &text[mode_at + "mode = \"active\"".len()..]);
    std::fs::write(rules.join("velocity.toml"), edited).unwrap();
    let (base, cand) = (config(&repo().join("rules")), config(&rules));
    let report = check_one_rule(&base, &cand, "R206", &dir.path().join("out"));
    let hits = |i: usize| report.configurations[i].rules.iter().find(|r| r.rule_id == "R206").unwrap().hits;
    assert!(hits(0) > 0);
    assert_eq!(hits(1), 0);
}

#[test]
fn two_intakes_give_the_shared_intakes_decisions() {
    // A different size limit (above every event's size) makes the candidate
    // run its own intake; the decisions must not change.
    let dir = tempfile::tempdir().unwrap();
    let base = config(&repo().join("rules"));
    let cand = EngineConfig { max_event_bytes: base.max_event_bytes * 2, ..base.clone() };
    let out = dir.path().join("out");
    let opts = Options {
        input: repo().join("replay-data/events.jsonl"),
        labels: Some(repo().join("replay-data/labels.csv")),
        out_dir: out.clone(),
        decisions: true,
        reason_codes: true,
    };
    let report = backtest([&base, &cand], &keys(), &opts, |_, _| {}).unwrap().report;
    assert!(!report.shared_intake);
    assert_eq!(report.difference.changed, 0);
    let read = |side: &str| -> Vec<Decision> {
        std::fs::read_to_string(out.join(format!("{side}.decisions.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (a, b) = (read("baseline"), read("candidate"));
    assert_eq!(a.len(), 5000);
    assert_eq!(a, b);
    let alone: Vec<Decision> = replay_alone(&base).into_values().map(|d| d.without_timing()).collect();
    let mut sorted = a.clone();
    sorted.sort_by(|x, y| x.event_id.cmp(&y.event_id));
    assert_eq!(sorted, alone);
}

#[test]
fn a_candidate_feature_set_gets_its_own_intake_and_changes_what_replays_change() {
    let dir = tempfile::tempdir().unwrap();
    let features = dir.path().join("features");
    copy_dir(&repo().join("features"), &features);
    let path = features.join("velocity.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Contact changes count for an hour instead of 30 days.
    let at = text.find("name = \"user.contact_changes_30d\"").unwrap();
    let w = at + text[at..].find("window = \"30d\"").unwrap();
    let edited = format!("{}window = \"1h\"{}", &text[..w], &text[w + "window = \"30d\"".len()..]);
    std::fs::write(&path, edited).unwrap();
    let base = config(&repo().join("rules"));
    let cand = EngineConfig { features_dir: features, ..base.clone() };
    let (report, _) = check_changes(&base, &cand, &dir.path().join("out"));
    assert!(!report.shared_intake, "different feature sets: one intake each");
    let [b, c] = &report.configurations;
    assert_ne!(b.versions.feature_set, c.versions.feature_set);
}

#[test]
fn a_candidate_model_is_measured_and_changes_what_replays_change() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("a_card");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(repo().join("models/a_card/manifest.toml"), model.join("manifest.toml")).unwrap();
    let opts = riskd_pipeline::train::TrainOptions {
        events: repo().join("replay-data/events.jsonl"),
        labels: repo().join("replay-data/labels.csv"),
        model_dir: model.clone(),
        holdout: 0.2,
        params: serde_json::json!({"num_iterations": 40, "num_leaves": 4, "learning_rate": 0.2}),
    };
    let features = Arc::new(riskd_features::FeatureSet::load(&repo().join("features")).unwrap());
    riskd_pipeline::train::train(&opts, features, keys()).unwrap();
    let base = config(&repo().join("rules"));
    let cand = EngineConfig { models: vec![model], ..base.clone() };
    let (report, _) = check_changes(&base, &cand, &dir.path().join("out"));
    assert!(report.shared_intake);
    let [b, c] = &report.configurations;
    assert_ne!(b.versions.model, c.versions.model);
    // Each model is measured on all 270 labelled applications.
    assert_eq!((b.models[0].labelled, c.models[0].labelled), (270, 270));
    assert!(b.models[0].auc.is_some() && c.models[0].auc.is_some());
    assert_ne!(b.scores, c.scores, "another model, other scores");
}

#[test]
fn gzip_input_gives_the_same_tables() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("events.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(repo().join("replay-data/events.jsonl")).unwrap()).unwrap();
    enc.finish().unwrap();
    let rules = rules_with(dir.path(), "policy.toml", "when = \"model.score < 600\"", "when = \"model.score < 650\"");
    let (base, cand) = (config(&repo().join("rules")), config(&rules));
    let plain = run(&base, &cand, &dir.path().join("plain"));
    let opts = Options {
        input: gz,
        labels: Some(repo().join("replay-data/labels.csv")),
        out_dir: dir.path().join("gz"),
        decisions: false,
        reason_codes: false,
    };
    let zipped = backtest([&base, &cand], &keys(), &opts, |_, _| {}).unwrap().report;
    assert_eq!(zipped.inputs, 5008);
    assert!(zipped.difference.changed > 0);
    assert_eq!(Report { input: plain.input.clone(), ..zipped }, plain);
    for table in ["swap.csv", "rules.csv", "daily.csv", "changed.csv"] {
        let read = |sub: &str| std::fs::read(dir.path().join(sub).join(table)).unwrap();
        assert!(read("plain") == read("gz"), "{table} differs between plain and gzip input");
    }
}
