//! Champion/challenger: a challenger declared in its manifest is scored on
//! the champion's events and recorded in the decision without changing the
//! action; with a traffic share, a deterministic share of users (by a hash
//! of the user id) is decided by the challenger instead, and the decision
//! says which model decided. Both models are trained here by `riskd train`
//! on the recorded stream and checked against LightGBM's own predictions.

mod common;

use std::collections::HashMap;
use std::sync::OnceLock;

use common::*;
use riskd_core::{Decision, EventKind, ModelRole};
use riskd_pipeline::Deployment;
use riskd_scorecard::user_bucket;

const TOL: f64 = 1e-9;

/// The shipped champion, and a challenger trained with other parameters.
struct Models {
    _dir: tempfile::TempDir,
    champion: std::path::PathBuf,
    champion_ref: HashMap<String, f64>,
    challenger_ref: HashMap<String, f64>,
    dir: std::path::PathBuf,
}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a_card_v2");
        std::fs::create_dir(&dir).unwrap();
        train_into(
            &dir,
            &a_card_manifest("a_card_v2", Some(("a_card", 0.0))),
            serde_json::json!({"num_leaves": 7, "num_iterations": 120, "learning_rate": 0.08}),
        );
        let champion = repo().join("models/a_card");
        Models { champion_ref: reference(&champion), challenger_ref: reference(&dir), champion, dir, _dir: tmp }
    })
}

/// A copy of the challenger's directory with another `[challenger]` share.
fn challenger_with_share(share: f64) -> tempfile::TempDir {
    let m = models();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(m.dir.join("model.txt"), tmp.path().join("model.txt")).unwrap();
    std::fs::write(tmp.path().join("manifest.toml"), a_card_manifest("a_card_v2", Some(("a_card", share)))).unwrap();
    tmp
}

fn applications(ds: &[Decision]) -> Vec<&Decision> {
    ds.iter().filter(|d| d.event_type == EventKind::LoanApplication).collect()
}

/// Everything a decision says that a recorded-only model must not change.
fn acted(d: &Decision) -> impl PartialEq + std::fmt::Debug + '_ {
    (&d.event_id, d.action, d.score, d.probability, &d.reasons, &d.model)
}

#[test]
fn a_challenger_is_scored_and_recorded_but_never_decides() {
    let m = models();
    let with = replay(deployment(vec![m.champion.clone(), m.dir.clone()]));
    let without = replay(deployment(vec![m.champion.clone()]));
    assert_eq!(with.len(), without.len());
    let apps = applications(&with);
    assert_eq!(apps.len(), m.champion_ref.len(), "every recorded application is decided");
    let mut differ = 0;
    for (a, b) in with.iter().zip(&without) {
        // Same action, score, reasons and deciding model as without the challenger.
        assert_eq!(acted(a), acted(b));
        // The decision id covers the challenger's version too.
        assert_ne!(a.decision_id, b.decision_id);
        if a.event_type != EventKind::LoanApplication {
            assert!(a.model.is_none() && a.shadow_model.is_none(), "{}: {:?}", a.event_id, a.model);
            continue;
        }
        let used = a.model.as_ref().unwrap();
        assert_eq!((used.name.as_str(), used.role), ("a_card", ModelRole::Champion));
        let p = a.probability.unwrap();
        assert!((p - m.champion_ref[&a.event_id]).abs() <= TOL);
        let shadow = a.shadow_model.as_ref().unwrap_or_else(|| panic!("{}: no challenger score", a.event_id));
        assert_eq!((shadow.name.as_str(), shadow.role), ("a_card_v2", ModelRole::Challenger));
        let want = m.challenger_ref[&a.event_id];
        assert!((shadow.probability - want).abs() <= TOL, "{}: {} vs {want}", a.event_id, shadow.probability);
        assert!(shadow.score.is_finite());
        if (shadow.probability - p).abs() > 1e-6 {
            differ += 1;
        }
    }
    // The two models really are different models.
    assert!(differ > apps.len() / 2, "only {differ} of {} applications scored differently", apps.len());
    // The versions in the decision name both.
    let dep = deployment(vec![m.champion.clone(), m.dir.clone()]);
    let set = dep.models();
    let versions: Vec<&str> = set.models.iter().map(|s| s.version.as_str()).collect();
    let app = apps[0];
    assert_eq!(app.model.as_ref().unwrap().version, versions[0]);
    assert_eq!(app.shadow_model.as_ref().unwrap().version, versions[1]);
}

#[test]
fn a_traffic_share_routes_users_deterministically_to_the_challenger() {
    let m = models();
    let share = 0.4;
    let dir = challenger_with_share(share);
    let ds = replay(deployment(vec![m.champion.clone(), dir.path().to_path_buf()]));
    // The challenger alone, as a champion: what it decides for routed users.
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(m.dir.join("model.txt"), alone.path().join("model.txt")).unwrap();
    std::fs::write(alone.path().join("manifest.toml"), a_card_manifest("a_card_v2", None)).unwrap();
    let challenger_only: HashMap<String, Decision> =
        replay(deployment(vec![alone.path().to_path_buf()])).into_iter().map(|d| (d.event_id.clone(), d)).collect();
    let champion_only: HashMap<String, Decision> =
        replay(deployment(vec![m.champion.clone()])).into_iter().map(|d| (d.event_id.clone(), d)).collect();

    let mut side_of_user: HashMap<&str, ModelRole> = HashMap::new();
    let (mut routed, mut kept) = (0, 0);
    for d in applications(&ds) {
        let used = d.model.as_ref().unwrap();
        let shadow = d.shadow_model.as_ref().unwrap();
        let expect_challenger = user_bucket("a_card", &d.user_id) < share;
        let (want_used, want_shadow, ref_used, ref_shadow, same_as) = if expect_challenger {
            routed += 1;
            (
                ("a_card_v2", ModelRole::Challenger),
                ("a_card", ModelRole::Champion),
                &m.challenger_ref,
                &m.champion_ref,
                &challenger_only,
            )
        } else {
            kept += 1;
            (
                ("a_card", ModelRole::Champion),
                ("a_card_v2", ModelRole::Challenger),
                &m.champion_ref,
                &m.challenger_ref,
                &champion_only,
            )
        };
        assert_eq!((used.name.as_str(), used.role), want_used, "{}", d.event_id);
        assert_eq!((shadow.name.as_str(), shadow.role), want_shadow, "{}", d.event_id);
        assert!((d.probability.unwrap() - ref_used[&d.event_id]).abs() <= TOL);
        assert!((shadow.probability - ref_shadow[&d.event_id]).abs() <= TOL);
        // The deciding model acts exactly as it would alone: action, score
        // (rules read model.score) and reason codes.
        let alone = &same_as[&d.event_id];
        assert_eq!((d.action, d.score, &d.reasons), (alone.action, alone.score, &alone.reasons), "{}", d.event_id);
        // One side per user.
        let side = *side_of_user.entry(d.user_id.as_str()).or_insert(used.role);
        assert_eq!(side, used.role, "user {} decided by both models", d.user_id);
    }
    let total = routed + kept;
    assert!(routed > 0 && kept > 0, "routed {routed}, kept {kept}");
    // Close to the share (users, not events, are split; a loose bound).
    let got = routed as f64 / total as f64;
    assert!((got - share).abs() < 0.15, "{routed} of {total} routed for a share of {share}");
    // Replaying again routes every event the same way.
    let again = replay(deployment(vec![m.champion.clone(), dir.path().to_path_buf()]));
    let strip = |ds: &[Decision]| ds.iter().map(Decision::without_timing).collect::<Vec<_>>();
    assert_eq!(strip(&ds), strip(&again));
}

#[test]
fn user_buckets_are_uniform_and_stable() {
    let n = 20_000;
    let below = (0..n).filter(|i| user_bucket("a_card", &format!("u-{i:05}")) < 0.25).count();
    assert!((below as f64 / n as f64 - 0.25).abs() < 0.01, "{below} of {n} below 0.25");
    // Another champion splits the same users independently.
    let both = (0..n)
        .filter(|i| {
            let u = format!("u-{i:05}");
            user_bucket("a_card", &u) < 0.5 && user_bucket("b_card", &u) < 0.5
        })
        .count();
    assert!((both as f64 / n as f64 - 0.25).abs() < 0.015, "{both} of {n} in both halves");
    assert_eq!(user_bucket("a_card", "u-1"), user_bucket("a_card", "u-1"));
    assert!((0.0..1.0).contains(&user_bucket("", "")));
}

fn load_error(models: Vec<std::path::PathBuf>) -> String {
    match Deployment::load(&config(models)) {
        Ok(_) => panic!("deployment accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_champion_challenger_setups_are_refused_by_name() {
    let m = models();
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, manifest: String| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(m.dir.join("model.txt"), dir.join("model.txt")).unwrap();
        std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
        dir
    };
    let shown = |dir: &std::path::Path| dir.join("manifest.toml").display().to_string();

    // A challenger without its champion.
    let orphan = write("orphan", a_card_manifest("a_card_v2", Some(("b_card", 0.0))));
    let e = load_error(vec![m.champion.clone(), orphan.clone()]);
    assert!(
        e.contains(&format!(
            "{}: challenger of `b_card`, but no model of that name is loaded (loaded: a_card, a_card_v2)",
            shown(&orphan)
        )),
        "{e}"
    );
    // Two champions for the same events.
    let twin = write("twin", a_card_manifest("a_card_twin", None));
    let e = load_error(vec![m.champion.clone(), twin.clone()]);
    assert!(
        e.contains(
            "models `a_card` and `a_card_twin` both score loan_application events; make one the other's challenger"
        ),
        "{e}"
    );
    // Two challengers for one champion.
    let second = write("second", a_card_manifest("a_card_v3", Some(("a_card", 0.1))));
    let e = load_error(vec![m.champion.clone(), m.dir.clone(), second.clone()]);
    assert!(e.contains(&format!("{}: `a_card` already has a challenger, `a_card_v2`", shown(&second))), "{e}");
    // A share outside [0, 1].
    let greedy = write("greedy", a_card_manifest("a_card_v2", Some(("a_card", 1.5))));
    let e = load_error(vec![m.champion.clone(), greedy.clone()]);
    assert!(
        e.contains(&format!(
            "{}: invalid manifest: challenger traffic_share = 1.5 must be between 0 and 1",
            shown(&greedy)
        )),
        "{e}"
    );
    // Its own challenger.
    let selfish = write("selfish", a_card_manifest("a_card_v2", Some(("a_card_v2", 0.0))));
    let e = load_error(vec![selfish.clone()]);
    assert!(e.contains("invalid manifest: model `a_card_v2` cannot be its own challenger"), "{e}");
    // The same name twice.
    let e = load_error(vec![m.champion.clone(), m.champion.clone()]);
    assert!(e.contains("model name `a_card` is also used by"), "{e}");
    // Different events from its champion.
    let other = write(
        "other",
        a_card_manifest("a_card_v2", Some(("a_card", 0.0)))
            .replace("events = [\"loan_application\"]", "events = [\"loan_application\", \"credit_report\"]"),
    );
    let e = load_error(vec![m.champion.clone(), other.clone()]);
    assert!(
        e.contains("challenger of `a_card`, which scores loan_application events, but it scores loan_application, credit_report events"),
        "{e}"
    );
}
