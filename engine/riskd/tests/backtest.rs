//! `riskd backtest` end to end: the baseline's decisions are `riskd
//! replay`'s, two runs write identical outputs, and bad inputs are refused
//! with messages that say what is wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn riskd(keys: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riskd"));
    c.current_dir(repo()).env("RISKD_PII_KEY_FILE", keys).env("RISKD_LOG", "warn");
    c
}

struct Setup {
    dir: tempfile::TempDir,
    keys: PathBuf,
    /// The repository's rules with R302's review band raised from 600 to 640.
    rules: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, riskd_core::KeyRing::generate_file("k1")).unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&repo().join("rules"), &rules);
    let policy = std::fs::read_to_string(rules.join("policy.toml")).unwrap();
    std::fs::write(rules.join("policy.toml"), policy.replacen("model.score < 600", "model.score < 640", 1)).unwrap();
    Setup { dir, keys, rules }
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

fn backtest(s: &Setup, out: &Path, extra: &[&str]) -> Output {
    riskd(&s.keys)
        .args(["backtest", "--input", "replay-data/events.jsonl", "--labels", "replay-data/labels.csv", "--out-dir"])
        .arg(out)
        .arg("--candidate-rules")
        .arg(&s.rules)
        .args(extra)
        .output()
        .unwrap()
}

fn decisions(text: &str) -> Vec<riskd_core::Decision> {
    text.lines().map(|l| serde_json::from_str::<riskd_core::Decision>(l).unwrap().without_timing()).collect()
}

#[test]
fn the_baseline_decides_as_replay_does_and_runs_are_identical() {
    let s = setup();
    let (one, two) = (s.dir.path().join("one"), s.dir.path().join("two"));
    let out = backtest(&s, &one, &["--decisions"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("changed decisions:") && stdout.contains("approve -> review"), "{stdout}");

    // (b) The baseline's decisions are the replay's, record for record.
    let replayed = s.dir.path().join("replay.jsonl");
    let st = riskd(&s.keys)
        .args(["replay", "--input", "replay-data/events.jsonl", "--out"])
        .arg(&replayed)
        .output()
        .unwrap();
    assert!(st.status.success());
    let want = decisions(&std::fs::read_to_string(&replayed).unwrap());
    let got = decisions(&std::fs::read_to_string(one.join("baseline.decisions.jsonl")).unwrap());
    assert_eq!(want.len(), 5000);
    assert_eq!(got, want);
    // The candidate's differ exactly where changed.csv says.
    let cand = decisions(&std::fs::read_to_string(one.join("candidate.decisions.jsonl")).unwrap());
    let differing: Vec<&str> =
        want.iter().zip(&cand).filter(|(a, b)| a.action != b.action).map(|(a, _)| a.event_id.as_str()).collect();
    let changed = std::fs::read_to_string(one.join("changed.csv")).unwrap();
    let listed: Vec<&str> = changed.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect();
    assert!(!listed.is_empty());
    assert_eq!(listed, differing);

    // (c) Determinism: a second run writes byte-identical files.
    let out = backtest(&s, &two, &["--decisions"]);
    assert!(out.status.success());
    let mut names: Vec<String> =
        std::fs::read_dir(&one).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for table in ["summary.csv", "swap.csv", "rules.csv", "daily.csv", "report.json", "report.html", "changed.csv"] {
        assert!(names.iter().any(|n| n == table), "{table} written");
    }
    for name in &names {
        let (a, b) = (std::fs::read(one.join(name)).unwrap(), std::fs::read(two.join(name)).unwrap());
        assert!(a == b, "{name} differs between two runs");
    }

    // Without --decisions no reason codes are computed; they never change an
    // action, a score or a rule hit, so every table is the same.
    let three = s.dir.path().join("three");
    assert!(backtest(&s, &three, &[]).status.success());
    for name in names.iter().filter(|n| !n.ends_with(".decisions.jsonl")) {
        let (a, b) = (std::fs::read(one.join(name)).unwrap(), std::fs::read(three.join(name)).unwrap());
        assert!(a == b, "{name} differs without reason codes");
    }

    // The report is self-contained and holds no entity values.
    let html = std::fs::read_to_string(one.join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    // The tables and the page name events, never users, devices, phones or identity numbers.
    for name in names.iter().filter(|n| !n.ends_with(".decisions.jsonl")) {
        let text = std::fs::read_to_string(one.join(name)).unwrap();
        for entity in ["u-0", "dev-", "+99", "ZZ"] {
            assert!(!text.contains(entity), "{name} holds an entity value ({entity}...)");
        }
    }
}

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    let s = setup();
    let out_dir = s.dir.path().join("out");
    let stderr = |o: Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };

    let e = stderr(
        riskd(&s.keys)
            .args(["backtest", "--input", "replay-data/events.jsonl", "--labels", "no/such/labels.csv", "--out-dir"])
            .arg(&out_dir)
            .output()
            .unwrap(),
    );
    assert!(e.contains("no/such/labels.csv") && e.contains("No such file"), "{e}");

    let e = stderr(backtest(&s, &out_dir, &["--candidate", "no-such-candidate.toml"]));
    assert!(e.contains("cannot read config no-such-candidate.toml"), "{e}");

    let cfg = s.dir.path().join("candidate.toml");
    std::fs::write(&cfg, "[engine]\nrule_dir = \"rules\"\n").unwrap();
    let e = stderr(backtest(&s, &out_dir, &["--candidate", cfg.to_str().unwrap()]));
    assert!(e.contains("candidate.toml:2:1: unknown field `rule_dir`"), "{e}");

    let labels = s.dir.path().join("labels.csv");
    std::fs::write(&labels, "event_id,bad\nev-000000073,0\nev-000000094,maybe\n").unwrap();
    let e = stderr(
        riskd(&s.keys)
            .args(["backtest", "--input", "replay-data/events.jsonl", "--labels"])
            .arg(&labels)
            .arg("--out-dir")
            .arg(&out_dir)
            .output()
            .unwrap(),
    );
    assert!(e.contains("labels.csv:3: label must be 0 or 1"), "{e}");

    let e = stderr(
        riskd(&s.keys)
            .args(["backtest", "--input", "no-such-events.jsonl", "--labels", "replay-data/labels.csv", "--out-dir"])
            .arg(&out_dir)
            .output()
            .unwrap(),
    );
    assert!(e.contains("no-such-events.jsonl"), "{e}");

    std::fs::write(s.rules.join("policy.toml"), "[[rule]]\nid = \"R301\"\nwhen = \"model.score <\"\n").unwrap();
    let e = stderr(backtest(&s, &out_dir, &[]));
    assert!(e.contains("the candidate configuration does not load"), "{e}");
}
