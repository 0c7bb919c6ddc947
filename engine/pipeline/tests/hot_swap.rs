//! Hot swap of models: a new model version written into a model directory
//! while serving is loaded and validated beside the one in force and swapped
//! in between two events; a bad one is refused with the reason, and the old
//! model keeps serving. Scores before and after equal LightGBM's own
//! predictions for the model version that made them.

mod common;

use common::*;
use riskd_core::{Decision, EventKind};
use riskd_pipeline::deployment::{ReloadError, ReloadOutcome};
use riskd_pipeline::Pipeline;

const TOL: f64 = 1e-9;

fn check_scored_by(ds: &[Decision], reference: &std::collections::HashMap<String, f64>, version: &str) -> usize {
    let mut n = 0;
    for d in ds.iter().filter(|d| d.event_type == EventKind::LoanApplication) {
        assert_eq!(d.model.as_ref().unwrap().version, version, "{}", d.event_id);
        let want = reference[&d.event_id];
        assert!((d.probability.unwrap() - want).abs() <= TOL, "{}: {:?} vs {want}", d.event_id, d.probability);
        n += 1;
    }
    n
}

#[test]
fn a_new_model_version_is_swapped_in_between_events_and_a_bad_one_is_refused() {
    // The model directory starts with the shipped A card.
    let live = tempfile::tempdir().unwrap();
    let shipped = repo().join("models/a_card");
    for f in ["manifest.toml", "model.txt"] {
        std::fs::copy(shipped.join(f), live.path().join(f)).unwrap();
    }
    let old_ref = reference(live.path());
    // The next version, trained aside.
    let next = tempfile::tempdir().unwrap();
    train_into(
        next.path(),
        &std::fs::read_to_string(shipped.join("manifest.toml")).unwrap().replace("2026.11.0", "2026.12.0"),
        serde_json::json!({"num_leaves": 15, "num_iterations": 150}),
    );
    let new_ref = reference(next.path());

    let dep = deployment(vec![live.path().to_path_buf()]);
    let mut pipeline = Pipeline::new(dep.clone(), keys(), &config(Vec::new())).unwrap();
    let inputs = recorded();
    let (a, rest) = inputs.split_at(inputs.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let old_version = dep.models().models[0].version.clone();
    let old_model_versions = dep.versions();

    let da = decide(&mut pipeline, a);
    assert!(check_scored_by(&da, &old_ref, &old_version) > 0);

    // Nothing changed: nothing to do.
    assert_eq!(dep.reload_models().unwrap(), ReloadOutcome::Unchanged);

    // A bad version: the model file now has inputs the manifest does not list
    // in that order. Refused, naming the file; the old model keeps serving.
    let broken = std::fs::read_to_string(live.path().join("manifest.toml"))
        .unwrap()
        .replace("name = \"amount\"\n", "name = \"loan_amount\"\n");
    std::fs::copy(next.path().join("model.txt"), live.path().join("model.txt")).unwrap();
    std::fs::write(live.path().join("manifest.toml"), &broken).unwrap();
    let e = dep.reload_models().unwrap_err();
    assert!(matches!(e, ReloadError::Models(_)), "{e:?}");
    let shown = live.path().join("manifest.toml").display().to_string();
    assert!(
        e.to_string().contains(&format!(
            "{shown}: model input 1 is named `amount` but the manifest says `loan_amount` (inputs must be in model column order)"
        )),
        "{e}"
    );
    assert_eq!(dep.versions(), old_model_versions, "the versions in force did not change");
    let db = decide(&mut pipeline, b);
    assert!(check_scored_by(&db, &old_ref, &old_version) > 0, "the old model kept serving");

    // The complete new version: swapped in; the next event uses it.
    std::fs::copy(next.path().join("manifest.toml"), live.path().join("manifest.toml")).unwrap();
    let outcome = dep.reload_models().unwrap();
    let ReloadOutcome::ModelsApplied { models, model } = outcome else { panic!("{outcome:?}") };
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].0, "a_card");
    assert_ne!(models[0].1, old_version);
    assert_eq!(dep.versions().model, model);
    assert_eq!(
        (dep.versions().rule_set, dep.versions().feature_set),
        (old_model_versions.rule_set.clone(), old_model_versions.feature_set.clone())
    );
    let dc = decide(&mut pipeline, c);
    assert!(check_scored_by(&dc, &new_ref, &models[0].1) > 0);
    assert!(dc.iter().all(|d| d.versions.model == model), "every later decision records the new model version");
    assert!(da.iter().chain(&db).all(|d| d.versions == old_model_versions));
    assert_eq!(dep.models().models[0].manifest.version, "2026.12.0");

    // A set that would score other event types is refused: the rules were
    // checked against the event types scored at start.
    let other = std::fs::read_to_string(live.path().join("manifest.toml"))
        .unwrap()
        .replace("events = [\"loan_application\"]", "events = [\"loan_application\", \"credit_report\"]");
    std::fs::write(live.path().join("manifest.toml"), other).unwrap();
    let e = dep.reload_models().unwrap_err().to_string();
    assert!(
        e.contains("the new models score loan_application, credit_report events but the models in force score loan_application"),
        "{e}"
    );
    assert_eq!(dep.versions().model, model);
}

#[test]
fn unchanged_models_keep_their_loaded_spec_across_a_swap() {
    // A champion and a challenger; only the challenger changes.
    let tmp = tempfile::tempdir().unwrap();
    let champion = tmp.path().join("a_card");
    let challenger = tmp.path().join("a_card_v2");
    std::fs::create_dir_all(&champion).unwrap();
    std::fs::create_dir_all(&challenger).unwrap();
    for f in ["manifest.toml", "model.txt"] {
        std::fs::copy(repo().join("models/a_card").join(f), champion.join(f)).unwrap();
    }
    train_into(&challenger, &a_card_manifest("a_card_v2", Some(("a_card", 0.0))), serde_json::json!({"num_leaves": 7}));
    let dep = deployment(vec![champion.clone(), challenger.clone()]);
    let before = dep.models();
    train_into(&challenger, &a_card_manifest("a_card_v2", Some(("a_card", 0.0))), serde_json::json!({"num_leaves": 9}));
    let new_ref = reference(&challenger);
    assert!(matches!(dep.reload_models().unwrap(), ReloadOutcome::ModelsApplied { .. }));
    let after = dep.models();
    // The unchanged champion is the same loaded spec; the challenger is new.
    assert!(std::sync::Arc::ptr_eq(&before.models[0], &after.models[0]));
    assert!(!std::sync::Arc::ptr_eq(&before.models[1], &after.models[1]));
    let ds = replay(dep);
    for d in ds.iter().filter(|d| d.event_type == EventKind::LoanApplication) {
        let s = d.shadow_model.as_ref().unwrap();
        assert_eq!(s.version, after.models[1].version);
        assert!((s.probability - new_ref[&d.event_id]).abs() <= TOL);
    }
}
