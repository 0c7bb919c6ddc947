//! Rules reading the results of earlier stages: `stage.<name>.action` and
//! `stage.<name>.fired`.

mod common;

use common::{rules_dir, starter_schema, MapSource};
use riskd_rules::{Action, EventKind, RuleSet, Verdict};

const CHAIN: &str = "[[stage]]\nname = \"hard\"\ncombine = \"first_match\"\nfiles = [\"hard.toml\"]\n\n\
                     [[stage]]\nname = \"velocity\"\ncombine = \"highest_severity\"\nfiles = [\"velocity.toml\"]\n\n\
                     [[stage]]\nname = \"policy\"\ncombine = \"first_match\"\nfiles = [\"policy.toml\"]\n";

fn rule(id: &str, when: &str, action: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\ndescription = \"d\"\nowner = \"o\"\nseverity = 50\nmode = \"active\"\nevents = [\"loan_application\"]\nwhen = \"{when}\"\naction = \"{action}\"\nreason = \"{id}_R\"\n\n"
    )
}

fn load(hard: &str, velocity: &str, policy: &str) -> Result<(tempfile::TempDir, RuleSet), String> {
    let dir = rules_dir(&[
        ("chain.toml", CHAIN),
        ("hard.toml", hard),
        ("velocity.toml", velocity),
        ("policy.toml", policy),
        ("lists/x.txt", "a\n"),
    ]);
    match RuleSet::load(dir.path(), &starter_schema()) {
        Ok(rs) => Ok((dir, rs)),
        Err(d) => Err(d.render()),
    }
}

fn decide(rs: &RuleSet, amount: &str, score: &str) -> Verdict {
    let schema = starter_schema();
    let src = MapSource::new(EventKind::LoanApplication).set(&schema, "event.amount", amount).set(
        &schema,
        "model.score",
        score,
    );
    let mut v = Verdict::default();
    rs.evaluate(&src, &mut v);
    v
}

#[test]
fn later_stages_read_earlier_outcomes() {
    let (_dir, rs) = load(
        &rule("H1", "event.amount > 40000", "review"),
        &rule("V1", "stage.hard.action == 'review' and model.score < 700", "reject"),
        &(rule("P1", "not stage.velocity.fired and not stage.hard.fired and model.score >= 600", "approve")
            + &rule("P2", "is_missing(stage.hard.action)", "review")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ids = |v: &Verdict| v.hits.iter().map(|h| h.rule_id().to_string()).collect::<Vec<_>>();

    // The hard stage asks for review; velocity sees it and escalates.
    let v = decide(&rs, "45000", "650");
    assert_eq!(ids(&v), ["H1", "V1"]);
    assert_eq!(v.action, Some(Action::Reject));

    // Nothing fired earlier: the policy approves on the score (P1 wins, first match).
    let v = decide(&rs, "1000", "650");
    assert_eq!(ids(&v), ["P1"]);
    assert_eq!(v.action, Some(Action::Approve));

    // A missing earlier action is missing, not an empty string.
    let v = decide(&rs, "1000", "550");
    assert_eq!(ids(&v), ["P2"]);
}

#[test]
fn a_stage_cannot_read_itself_or_later_stages() {
    let err = |r: Result<(tempfile::TempDir, RuleSet), String>| r.err().expect("the rules must be refused");
    let e = err(load(&rule("H1", "stage.velocity.fired", "review"), "", ""));
    assert!(e.contains("E-UNKNOWN-NAME") && e.contains("stage.velocity.fired"), "{e}");
    let e = err(load("", &rule("V1", "stage.velocity.action == 'reject'", "review"), ""));
    assert!(e.contains("E-UNKNOWN-NAME"), "{e}");
    let e = err(load("", &rule("V1", "stage.hard.action == 1", "review"), ""));
    assert!(e.contains("E-TYPE"), "{e}");
}
