//! The starter rule set in the repository's `rules/` folder loads with the
//! pipeline's names, and every analyst test beside it passes.

mod common;

use common::{starter_dir, starter_schema, MapSource};
use riskd_rules::{run_tests, Action, EventKind, Mode, RuleSet, Verdict};

fn load() -> RuleSet {
    RuleSet::load(&starter_dir(), &starter_schema()).unwrap_or_else(|d| panic!("{}", d.render()))
}

#[test]
fn starter_rules_load_without_warnings() {
    let rs = load();
    assert!(rs.warnings().is_empty(), "{}", rs.warnings().render());
    assert_eq!(rs.rule_count(), rs.rules().iter().filter(|r| r.mode != Mode::Disabled).count());
    assert!(rs.rule_count() >= 20, "{}", rs.rule_count());
    assert!(rs.rules().iter().any(|r| r.mode == Mode::Shadow));
    let stages: Vec<&str> = rs.stages().map(|s| s.0).collect();
    assert_eq!(stages, ["hard", "velocity", "policy"]);
    assert!(rs.version().starts_with("sha256:") && rs.lists_version().starts_with("sha256:"));
}

#[test]
fn analyst_tests_pass() {
    let rs = load();
    let report = run_tests(&rs, &starter_schema(), &starter_dir()).unwrap_or_else(|d| panic!("{}", d.render()));
    println!("{}", report.render());
    assert!(report.all_passed(), "{}", report.render());
    assert!(report.cases.len() >= 40, "{}", report.cases.len());
    // Every rule has a case that makes it fire and one that expects it not to.
    let mut not_expected = Vec::new();
    for entry in std::fs::read_dir(starter_dir().join("tests")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let doc: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        for case in doc.get("case").and_then(|c| c.as_array()).into_iter().flatten() {
            for id in case.get("expect_no_hits").and_then(|c| c.as_array()).into_iter().flatten() {
                not_expected.extend(id.as_str().map(str::to_string));
            }
        }
    }
    for r in rs.rules() {
        let fired = report.cases.iter().any(|c| c.hits.iter().any(|h| h.rule_id() == r.id));
        assert!(fired, "no analyst test makes {} fire", r.id);
        assert!(not_expected.contains(&r.id), "no analyst test expects {} not to fire", r.id);
    }
}

#[test]
fn versions_are_stable_and_follow_content() {
    let a = load();
    let b = load();
    assert_eq!(a.version(), b.version());
    assert_eq!(a.lists_version(), b.lists_version());
    assert_ne!(a.version(), a.lists_version());
}

#[test]
fn evaluation_reuses_the_verdict() {
    let rs = load();
    let schema = starter_schema();
    let mut v = Verdict::default();
    let ring = MapSource::new(EventKind::LoanApplication)
        .set(&schema, "entity.ip", "10.66.1.2")
        .set(&schema, "model.score", "700")
        .set(&schema, "event.type", "loan_application");
    rs.evaluate(&ring, &mut v);
    assert_eq!(v.action, Some(Action::Reject));
    let cap = v.hits.capacity();
    let clean = MapSource::new(EventKind::Login).set(&schema, "event.success", "true");
    rs.evaluate(&clean, &mut v);
    assert_eq!(v.action, None);
    assert!(v.hits.is_empty());
    assert_eq!(v.hits.capacity(), cap, "cleared, not reallocated");
}
