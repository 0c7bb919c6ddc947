//! How stages combine their rules' hits, and how shadow and disabled rules
//! behave.

mod common;

use common::{rules_dir, starter_schema, MapSource};
use riskd_rules::{Action, EventKind, Mode, RuleSet, Verdict};

/// A loan-application rule on `user.applications_30d` (named `x` below).
fn r(id: &str, severity: u8, mode: &str, when: &str, outcome: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\ndescription = \"d\"\nowner = \"o\"\nseverity = {severity}\nmode = \"{mode}\"\nevents = [\"loan_application\"]\nwhen = \"{}\"\n{outcome}\nreason = \"{id}_REASON\"\n\n",
        when.replace('x', "user.applications_30d")
    )
}

fn act(a: &str) -> String {
    format!("action = \"{a}\"")
}

fn chain(stages: &[(&str, &str)]) -> String {
    stages
        .iter()
        .map(|(name, combine)| {
            format!("[[stage]]\nname = \"{name}\"\ncombine = \"{combine}\"\nfiles = [\"{name}.toml\"]\n\n")
        })
        .collect()
}

fn load(stages: &[(&str, &str, String)]) -> (tempfile::TempDir, RuleSet) {
    let chain = chain(&stages.iter().map(|(n, c, _)| (*n, *c)).collect::<Vec<_>>());
    let mut files: Vec<(String, String)> = vec![("chain.toml".into(), chain)];
    for (n, _, text) in stages {
        files.push((format!("{n}.toml"), text.clone()));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = rules_dir(&refs);
    let rs = RuleSet::load(dir.path(), &starter_schema()).unwrap_or_else(|d| panic!("{}", d.render()));
    (dir, rs)
}

fn eval(rs: &RuleSet, x: Option<f64>) -> Verdict {
    let schema = starter_schema();
    let mut src = MapSource::new(EventKind::LoanApplication);
    if let Some(x) = x {
        src = src.set(&schema, "user.applications_30d", &x.to_string());
    }
    let mut v = Verdict::default();
    rs.evaluate(&src, &mut v);
    v
}

fn ids(v: &Verdict) -> Vec<String> {
    v.hits.iter().map(|h| format!("{}{}", h.rule_id(), if h.shadow { "(shadow)" } else { "" })).collect()
}

#[test]
fn first_match_stops_at_the_first_active_hit_but_evaluates_shadow_rules() {
    let text = [
        r("S0", 10, "shadow", "x > 0", &act("reject")),
        r("R1", 20, "active", "x > 5", &act("review")),
        r("R2", 90, "active", "x > 3", &act("reject")),
        r("S3", 30, "shadow", "x > 1", &act("review")),
        r("R4", 10, "active", "x >= 0", &act("approve")),
    ]
    .concat();
    let (_d, rs) = load(&[("p", "first_match", text)]);
    let v = eval(&rs, Some(10.0));
    assert_eq!(v.action, Some(Action::Review));
    // R2 fires too but is not evaluated after R1; shadow S0 and S3 are. Hits
    // are ordered by severity within the stage.
    assert_eq!(ids(&v), ["S3(shadow)", "R1", "S0(shadow)"]);
    let v = eval(&rs, Some(4.0));
    assert_eq!(v.action, Some(Action::Reject));
    assert_eq!(ids(&v), ["R2", "S3(shadow)", "S0(shadow)"]);
    let v = eval(&rs, Some(0.0));
    assert_eq!(v.action, Some(Action::Approve));
    assert_eq!(ids(&v), ["R4"]);
    // Missing: no rule fires (x >= 0 is missing, not true).
    let v = eval(&rs, None);
    assert_eq!(v.action, None);
    assert!(v.hits.is_empty());
}

#[test]
fn highest_severity_evaluates_everything_and_the_most_severe_hit_decides() {
    let text = [
        r("R1", 50, "active", "x > 1", &act("review")),
        r("R2", 80, "active", "x > 2", &act("review")),
        r("R3", 80, "active", "x > 3", &act("reject")),
        r("R4", 10, "active", "x > 4", &act("reject")),
        r("S5", 99, "shadow", "x > 0", &act("reject")),
    ]
    .concat();
    let (_d, rs) = load(&[("v", "highest_severity", text)]);
    let v = eval(&rs, Some(10.0));
    // R2 and R3 tie on severity 80: the more severe action (reject) wins.
    assert_eq!(v.action, Some(Action::Reject));
    assert_eq!(ids(&v), ["S5(shadow)", "R2", "R3", "R1", "R4"]);
    // Severity, not the action, decides: R2 (80, review) beats R4 (10, reject).
    let v = eval(&rs, Some(2.5));
    assert_eq!(v.action, Some(Action::Review));
    let text =
        [r("R1", 90, "active", "x > 1", &act("review")), r("R2", 10, "active", "x > 1", &act("reject"))].concat();
    let (_d, rs) = load(&[("v", "highest_severity", text)]);
    assert_eq!(eval(&rs, Some(5.0)).action, Some(Action::Review));
}

#[test]
fn score_sum_adds_up_active_scores() {
    let text = [
        r("S1", 10, "active", "x > 1", "score = -40"),
        r("S2", 10, "active", "x > 2", "score = 15.5"),
        r("S3", 10, "shadow", "x > 0", "score = -100"),
        r("S4", 10, "disabled", "x > 0", "score = -1000"),
    ]
    .concat();
    let (_d, rs) = load(&[("adjust", "score_sum", text)]);
    let v = eval(&rs, Some(5.0));
    assert_eq!(v.score_adjustment, -24.5);
    assert_eq!(v.action, None, "score stages set no action");
    assert_eq!(ids(&v), ["S1", "S2", "S3(shadow)"]);
    assert_eq!(v.hits[0].score, Some(-40.0));
    assert_eq!(v.hits[0].action, None);
    assert_eq!(v.hits[0].stage(), "adjust");
    assert_eq!(eval(&rs, Some(1.5)).score_adjustment, -40.0);
    assert_eq!(eval(&rs, None).score_adjustment, 0.0);
}

#[test]
fn the_most_severe_action_across_stages_wins() {
    let (_d, rs) = load(&[
        ("a", "first_match", r("A1", 10, "active", "x > 1", &act("review"))),
        ("b", "first_match", r("B1", 10, "active", "x > 2", &act("reject"))),
        ("c", "first_match", r("C1", 100, "active", "x > 0", &act("approve"))),
    ]);
    let v = eval(&rs, Some(5.0));
    assert_eq!(v.action, Some(Action::Reject));
    // Hits in stage order.
    assert_eq!(ids(&v), ["A1", "B1", "C1"]);
    assert_eq!(v.hits.iter().map(|h| h.stage()).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(eval(&rs, Some(1.5)).action, Some(Action::Review));
    assert_eq!(eval(&rs, Some(0.5)).action, Some(Action::Approve));
}

#[test]
fn shadow_rules_never_change_the_action() {
    let (_d, rs) = load(&[
        ("a", "first_match", r("S1", 100, "shadow", "x > 1", &act("reject"))),
        ("b", "highest_severity", r("S2", 100, "shadow", "x > 1", &act("reject"))),
    ]);
    let v = eval(&rs, Some(5.0));
    assert_eq!(v.action, None);
    assert_eq!(ids(&v), ["S1(shadow)", "S2(shadow)"]);
    assert!(v.hits.iter().all(|h| h.shadow && h.action == Some(Action::Reject) && h.severity == 100));
    assert_eq!(v.hits[0].reason(), "S1_REASON");
}

#[test]
fn disabled_rules_are_not_evaluated_but_listed() {
    let text =
        [r("D1", 100, "disabled", "x > 1", &act("reject")), r("R2", 10, "active", "x > 1", &act("review"))].concat();
    let (_d, rs) = load(&[("a", "first_match", text)]);
    let v = eval(&rs, Some(5.0));
    assert_eq!(v.action, Some(Action::Review));
    assert_eq!(ids(&v), ["R2"]);
    assert_eq!(rs.rule_count(), 1);
    assert_eq!(rs.rules().len(), 2);
    assert_eq!(rs.rules()[0].mode, Mode::Disabled);
    // A disabled unconditional rule does not make later rules unreachable.
    let text =
        [r("D1", 100, "disabled", "true", &act("reject")), r("R2", 10, "active", "x > 1", &act("review"))].concat();
    load(&[("a", "first_match", text)]);
}

#[test]
fn rules_apply_only_to_their_events() {
    let login = "[[rule]]\nid = \"L1\"\ndescription = \"d\"\nowner = \"o\"\nseverity = 10\nmode = \"active\"\nevents = [\"login\"]\nwhen = \"user.applications_30d > 1\"\naction = \"alert\"\nreason = \"L\"\n";
    let (_d, rs) =
        load(&[("a", "highest_severity", format!("{login}{}", r("A1", 10, "active", "x > 1", &act("review"))))]);
    let schema = starter_schema();
    let mut v = Verdict::default();
    rs.evaluate(&MapSource::new(EventKind::Login).set(&schema, "user.applications_30d", "5"), &mut v);
    assert_eq!(v.action, Some(Action::Alert));
    assert_eq!(ids(&v), ["L1"]);
    rs.evaluate(&MapSource::new(EventKind::Repayment).set(&schema, "user.applications_30d", "5"), &mut v);
    assert_eq!(v.action, None);
    assert!(v.hits.is_empty());
}

#[test]
fn versions_follow_content() {
    let (d1, rs1) = load(&[("a", "first_match", r("A1", 10, "active", "x > 1", &act("review")))]);
    let (_d2, rs2) = load(&[("a", "first_match", r("A1", 10, "active", "x > 2", &act("review")))]);
    assert_ne!(rs1.version(), rs2.version());
    assert_eq!(rs1.lists_version(), rs2.lists_version());
    std::fs::create_dir_all(d1.path().join("lists")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d1.path().join("lists/l.txt"), "a\n").unwrap_or_else(|e| panic!("{e}"));
    let rs3 = RuleSet::load(d1.path(), &starter_schema()).unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!(rs1.version(), rs3.version());
    assert_ne!(rs1.lists_version(), rs3.lists_version());
}

#[test]
fn ruleset_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<RuleSet>();
    check::<Verdict>();
}
