//! `riskd train` with categorical inputs: the manifest's categorical inputs
//! become LightGBM categorical columns (no need to repeat them in
//! `--params`), the trained model splits on categories, and the engine
//! serves exactly the training-time predictions for the recorded stream.

mod common;

use common::*;
use riskd_core::EventKind;
use riskd_pipeline::train::{train, TrainError, TrainOptions};
use riskd_scorecard::ModelHeader;

const PURPOSE: &str = r#"
[[input]]
name = "purpose"
source = "event.purpose"
label = "Loan purpose"
reason_code = "A16_PURPOSE"
kind = "categorical"
categories = ["consumption", "education", "medical", "business", "home", "travel", "other"]
"#;

fn options(dir: &std::path::Path, params: serde_json::Value) -> TrainOptions {
    TrainOptions { events: events(), labels: labels(), model_dir: dir.to_path_buf(), holdout: 0.2, params }
}

#[test]
fn categorical_inputs_train_as_categories_and_serve_like_training() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = a_card_manifest("a_card_cat", None) + PURPOSE;
    std::fs::write(dir.path().join("manifest.toml"), &manifest).unwrap();
    let report = train(&options(dir.path(), serde_json::json!({})), features(), keys()).unwrap();
    assert_eq!(report.params["categorical_feature"], "15", "the manifest's categorical input, by column");
    let text = std::fs::read_to_string(dir.path().join("model.txt")).unwrap();
    let header = ModelHeader::parse(&text);
    let codes = header.categories(15).expect("purpose is a categorical column of the model");
    assert!(codes.iter().all(|&c| (-1..7).contains(&c)) && codes.contains(&3), "{codes:?}");
    assert!(header.categories(0).is_none());
    assert!(text.contains("[categorical_feature: 15]"), "the model file records the categorical column");

    // Served through the whole pipeline: the training-time prediction of
    // every labelled application, to 1e-9.
    let want = reference(dir.path());
    let ds = replay(deployment(vec![dir.path().to_path_buf()]));
    let mut n = 0;
    for d in ds.iter().filter(|d| d.event_type == EventKind::LoanApplication) {
        let p = d.probability.unwrap();
        assert!((p - want[&d.event_id]).abs() <= 1e-9, "{}: {p} vs {}", d.event_id, want[&d.event_id]);
        n += 1;
    }
    assert_eq!(n, want.len());

    // Naming the input in --params is the same; naming a numeric one is refused.
    let again = tempfile::tempdir().unwrap();
    std::fs::write(again.path().join("manifest.toml"), &manifest).unwrap();
    let same =
        train(&options(again.path(), serde_json::json!({"categorical_feature": ["purpose"]})), features(), keys())
            .unwrap();
    assert_eq!(same.params["categorical_feature"], "15");
    assert_eq!(std::fs::read_to_string(again.path().join("model.txt")).unwrap(), text);
    let e = train(
        &options(again.path(), serde_json::json!({"categorical_feature": "name:term_months"})),
        features(),
        keys(),
    )
    .unwrap_err();
    assert!(matches!(e, TrainError::Data(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "categorical_feature lists `term_months`, which the manifest declares numeric; declare it kind = \"categorical\" with its `categories`"
    );
    let e = train(&options(again.path(), serde_json::json!({"categorical_feature": ["purpos"]})), features(), keys())
        .unwrap_err();
    assert_eq!(e.to_string(), "categorical_feature names `purpos`, which is not an input of the manifest");
}
