//! A model whose manifest does not match it, or does not make sense, is
//! refused at load with a precise message naming the file, the input and
//! what is wrong.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use lightgbm3::{Booster, Dataset};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use riskd_features::FeatureSet;
use riskd_scorecard::{ModelError, ModelSpec, Scorecard};

fn features() -> Arc<FeatureSet> {
    static SET: OnceLock<Arc<FeatureSet>> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../features");
        Arc::new(FeatureSet::load(&dir).unwrap())
    })
    .clone()
}

/// Model text of a small binary model on `width` inputs, trained with the
/// given feature names (LightGBM's default `Column_<i>` when `None`).
fn model_text(width: usize, names: Option<&[&str]>) -> String {
    model_text_with(width, names, serde_json::json!({"objective": "binary"}))
}

/// As [`model_text`], with other LightGBM parameters merged in.
fn model_text_with(width: usize, names: Option<&[&str]>, extra: serde_json::Value) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(width as u64);
    let n = 400;
    let rows: Vec<f64> = (0..n * width).map(|_| rng.gen_range(0.0..100.0)).collect();
    let labels: Vec<f32> =
        (0..n).map(|i| if rows[i * width] + rng.gen_range(0.0..40.0) > 80.0 { 1.0 } else { 0.0 }).collect();
    let mut ds = Dataset::from_slice(&rows, &labels, width as i32, true).unwrap();
    if let Some(names) = names {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        ds.set_feature_names(&names).unwrap();
    }
    let mut params = serde_json::json!({
        "num_iterations": 5, "num_leaves": 4, "min_data_in_leaf": 20,
        "seed": 3, "deterministic": true, "num_threads": 1, "verbosity": -1
    });
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    Booster::train(ds, &params).unwrap().save_string().unwrap()
}

const GOOD_HEAD: &str = r#"name = "t_card"
version = "1"
card = "application"
events = ["loan_application"]
model_file = "model.txt"

[scaling]
base_score = 600
base_odds = 20
pdo = 40
"#;

/// `[[input]]` blocks for (name, source) pairs; extra lines go into the last.
fn inputs(list: &[(&str, &str)], extra: &str) -> String {
    let mut s = String::new();
    for (i, (name, source)) in list.iter().enumerate() {
        s += &format!(
            "\n[[input]]\nname = \"{name}\"\nsource = \"{source}\"\nlabel = \"{name}\"\nreason_code = \"R{:02}\"\n",
            i + 1
        );
    }
    s + extra
}

const THREE: &[(&str, &str)] =
    &[("amount", "event.amount"), ("term", "event.term_months"), ("shared_device", "device.distinct_users_24h")];
const THREE_NAMES: &[&str] = &["amount", "term", "shared_device"];

/// Writes a model dir and loads it; returns the error and the manifest path as shown.
fn load(manifest: &str, model: &str) -> Result<ModelSpec, (ModelError, String)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    std::fs::write(dir.path().join("model.txt"), model).unwrap();
    let shown = dir.path().join("manifest.toml").display().to_string();
    ModelSpec::load(dir.path(), &features()).map_err(|e| (e, shown))
}

fn refused(manifest: &str, model: &str) -> (ModelError, String) {
    match load(manifest, model) {
        Ok(spec) => panic!("manifest accepted: {:?}", spec.manifest),
        Err(e) => e,
    }
}

fn named_model() -> String {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| model_text(3, Some(THREE_NAMES))).clone()
}

#[test]
fn a_matching_manifest_loads() {
    let spec = load(&(GOOD_HEAD.to_string() + &inputs(THREE, "")), &named_model()).map_err(|(e, _)| e).unwrap();
    assert_eq!(spec.manifest.inputs.len(), 3);
    assert!(spec.version.starts_with("sha256:"), "content hash: {}", spec.version);
    // The version is a content hash of manifest and model: stable on reload,
    // different when the model changes.
    let again = load(&(GOOD_HEAD.to_string() + &inputs(THREE, "")), &named_model()).map_err(|(e, _)| e).unwrap();
    assert_eq!(again.version, spec.version);
    let other_model = model_text(3, Some(THREE_NAMES)).replace("[seed: 3]", "[seed: 4]");
    let other = load(&(GOOD_HEAD.to_string() + &inputs(THREE, "")), &other_model).map_err(|(e, _)| e).unwrap();
    assert_ne!(other.version, spec.version);
    let mut card = Scorecard::new(Arc::new(spec)).unwrap();
    let p = card.predict_row(&[50.0, 12.0, f64::NAN]).unwrap();
    assert!((0.0..=1.0).contains(&p));
}

#[test]
fn wrong_input_count_is_refused() {
    let model = named_model();
    let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(&THREE[..2], "")), &model);
    assert!(matches!(e, ModelError::Mismatch { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("{path}: the model takes 3 inputs but the manifest lists 2"));

    let four = [THREE, &[("income", "event.stated_monthly_income")]].concat();
    let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(&four, "")), &model);
    assert_eq!(e.to_string(), format!("{path}: the model takes 3 inputs but the manifest lists 4"));
}

#[test]
fn wrong_input_name_or_order_is_refused() {
    let model = named_model();
    // Two inputs swapped: the first difference is reported.
    let swapped = [THREE[0], THREE[2], THREE[1]];
    let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(&swapped, "")), &model);
    assert!(matches!(e, ModelError::Mismatch { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{path}: model input 2 is named `term` but the manifest says `shared_device` (inputs must be in model column order)"
        )
    );
    // A renamed input.
    let renamed = [("loan_amount", "event.amount"), THREE[1], THREE[2]];
    let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(&renamed, "")), &model);
    assert_eq!(
        e.to_string(),
        format!(
            "{path}: model input 1 is named `amount` but the manifest says `loan_amount` (inputs must be in model column order)"
        )
    );
    // A model trained without feature names has LightGBM's `Column_<i>`.
    let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(THREE, "")), &model_text(3, None));
    assert_eq!(
        e.to_string(),
        format!(
            "{path}: model input 1 is named `Column_0` but the manifest says `amount` (inputs must be in model column order)"
        )
    );
}

#[test]
fn unknown_source_names_the_input_and_suggests_the_closest_name() {
    let model = named_model();
    let cases: &[(&str, usize, &str, &str)] = &[
        // (bad source, input number, input name, hint)
        ("event.amout", 1, "amount", " (did you mean `event.amount`?)"),
        ("event.term_month", 2, "term", " (did you mean `event.term_months`?)"),
        ("device.distinct_users_42h", 3, "shared_device", " (did you mean `device.distinct_users_24h`?)"),
        // A forgotten entity prefix.
        ("applications_1h", 3, "shared_device", " (did you mean `device.applications_1h`?)"),
        ("credit.score", 3, "shared_device", ""),
    ];
    for &(source, at, name, hint) in cases {
        let mut list = THREE.to_vec();
        list[at - 1].1 = source;
        let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(&list, "")), &model);
        assert!(matches!(e, ModelError::Mismatch { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "{path}: input {at} (`{name}`) reads `{source}`, which is neither an event field nor a feature in the feature set{hint}"
            )
        );
    }
}

#[test]
fn unknown_event_type_is_refused() {
    let head =
        GOOD_HEAD.replace(r#"events = ["loan_application"]"#, r#"events = ["loan_application", "loan_aplication"]"#);
    let (e, path) = refused(&(head + &inputs(THREE, "")), &named_model());
    assert!(matches!(e, ModelError::Manifest { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("{path}: invalid manifest: unknown event type `loan_aplication` in `events`"));
}

#[test]
fn bad_missing_value_is_refused() {
    let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(THREE, "missing = \"mean\"\n")), &named_model());
    assert!(matches!(e, ModelError::Manifest { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{path}: invalid manifest: input `shared_device`: missing = `mean` must be \"nan\" or \"zero\"")
    );
    // Both documented values load.
    for ok in ["nan", "zero"] {
        load(&(GOOD_HEAD.to_string() + &inputs(THREE, &format!("missing = \"{ok}\"\n"))), &named_model())
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

#[test]
fn bad_card_type_is_refused() {
    for bad in ["a_card", "Application", "behavior", ""] {
        let head = GOOD_HEAD.replace(r#"card = "application""#, &format!("card = \"{bad}\""));
        let (e, path) = refused(&(head + &inputs(THREE, "")), &named_model());
        assert!(matches!(e, ModelError::Manifest { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("{path}: invalid manifest: card `{bad}` must be application, behaviour or collection")
        );
    }
    for good in ["behaviour", "collection"] {
        let head = GOOD_HEAD.replace(r#"card = "application""#, &format!("card = \"{good}\""));
        load(&(head + &inputs(THREE, "")), &named_model()).map_err(|(e, _)| e).unwrap();
    }
}

#[test]
fn bad_scaling_is_refused() {
    let scalings = [
        "base_score = 600\nbase_odds = 20\npdo = 0",
        "base_score = 600\nbase_odds = 20\npdo = -40",
        "base_score = 600\nbase_odds = 0\npdo = 40",
        "base_score = 600\nbase_odds = -20\npdo = 40",
        "base_score = 600\nbase_odds = nan\npdo = 40",
        "base_score = nan\nbase_odds = 20\npdo = 40",
        "base_score = inf\nbase_odds = 20\npdo = 40",
    ];
    for s in scalings {
        let head = GOOD_HEAD.replace("base_score = 600\nbase_odds = 20\npdo = 40", s);
        assert_ne!(head, GOOD_HEAD);
        let (e, path) = refused(&(head + &inputs(THREE, "")), &named_model());
        assert!(matches!(e, ModelError::Manifest { .. }), "{s}: {e:?}");
        assert_eq!(e.to_string(), format!("{path}: invalid manifest: scaling needs base_odds > 0 and pdo > 0"), "{s}");
    }
}

/// An infinite `base_odds` or `pdo` passes the scaling check (`inf > 0`), and
/// every score of the model then comes out as -inf, +inf or NaN points.
#[test]
fn infinite_scaling_is_refused() {
    for s in ["base_score = 600\nbase_odds = inf\npdo = 40", "base_score = 600\nbase_odds = 20\npdo = inf"] {
        let head = GOOD_HEAD.replace("base_score = 600\nbase_odds = 20\npdo = 40", s);
        match load(&(head + &inputs(THREE, "")), &named_model()) {
            Err((e, path)) => {
                assert_eq!(e.to_string(), format!("{path}: invalid manifest: scaling needs base_odds > 0 and pdo > 0"))
            }
            Ok(spec) => {
                panic!("{}: accepted; points at p = 0.1: {}", s.replace('\n', ", "), spec.manifest.scaling.points(0.1))
            }
        }
    }
}

#[test]
fn malformed_manifest_is_refused_at_its_line() {
    // An unknown key in an input (deny_unknown_fields), with line and column.
    let text = GOOD_HEAD.to_string() + &inputs(THREE, "reasoncode = \"X\"\n");
    let (e, path) = refused(&text, &named_model());
    assert!(matches!(e, ModelError::Manifest { .. }), "{e:?}");
    let line = text.lines().position(|l| l.starts_with("reasoncode")).unwrap() + 1;
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{path}: invalid manifest: line {line} column 1: unknown field `reasoncode`")),
        "{msg}"
    );
    // A missing key.
    let text = GOOD_HEAD.replace("model_file = \"model.txt\"\n", "") + &inputs(THREE, "");
    let (e, path) = refused(&text, &named_model());
    assert!(e.to_string().starts_with(&format!("{path}: invalid manifest: ")), "{e}");
    assert!(e.to_string().contains("missing field `model_file`"), "{e}");
}

#[test]
fn unreadable_or_broken_model_file_is_refused() {
    let manifest = GOOD_HEAD.replace("model.txt", "missing.txt") + &inputs(THREE, "");
    let (e, path) = refused(&manifest, &named_model());
    let model_path = path.replace("manifest.toml", "missing.txt");
    assert!(matches!(e, ModelError::Read { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("{model_path}: cannot read: ")), "{e}");

    let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(THREE, "")), "this is not a model\n");
    let model_path = path.replace("manifest.toml", "model.txt");
    assert!(matches!(e, ModelError::Lightgbm { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("{model_path}: LightGBM refused the model: ")), "{e}");
}

/// String fields (`event.purpose`, `event.channel`, ...) resolve like numeric
/// ones, but `Value::num_or_nan` turns every string into NaN: such an input is
/// always "missing" at serving and in training, silently. It should be
/// refused (or mapped to categories; see the categorical gap in the report).
#[test]
fn string_field_input_is_refused() {
    let list = [THREE[0], THREE[1], ("purpose", "event.purpose")];
    let names = ["amount", "term", "purpose"];
    match load(&(GOOD_HEAD.to_string() + &inputs(&list, "")), &model_text(3, Some(&names))) {
        Err((e, _)) => assert!(e.to_string().contains("`event.purpose`"), "{e}"),
        Ok(_) => panic!("`event.purpose` (a string) accepted as a numeric model input"),
    }
}

/// A field the scored event types never carry (`event.days_late` is on
/// repayments only) is always missing for an application card. Rules refuse
/// such reads at load; model inputs do not.
#[test]
fn field_absent_from_scored_events_is_refused() {
    let list = [THREE[0], THREE[1], ("days_late", "event.days_late")];
    let names = ["amount", "term", "days_late"];
    match load(&(GOOD_HEAD.to_string() + &inputs(&list, "")), &model_text(3, Some(&names))) {
        Err((e, _)) => assert!(e.to_string().contains("`event.days_late`"), "{e}"),
        Ok(_) => panic!("`event.days_late` accepted as an input of a loan_application model"),
    }
}

/// `lightgbm3::Booster::feature_name` reads names into 64-byte buffers, so a
/// model whose input names are longer comes back with truncated names and a
/// correct manifest is refused with a confusing "is named" message.
#[test]
fn long_input_names_load() {
    let long = "amount_applied_for_relative_to_the_stated_monthly_income_of_the_applicant";
    assert!(long.len() > 64);
    let names = [long, "term", "shared_device"];
    let list = [(long, "event.amount"), THREE[1], THREE[2]];
    load(&(GOOD_HEAD.to_string() + &inputs(&list, "")), &model_text(3, Some(&names))).map_err(|(e, _)| e).unwrap();
}

/// The manifest never says what the model predicts, and the loader does not
/// look: a regression or multiclass model loads, and its raw output (or the
/// first class's probability) is served as the probability of "bad", with
/// reason codes from the wrong contributions.
#[test]
fn non_binary_models_are_refused() {
    let manifest = GOOD_HEAD.to_string() + &inputs(THREE, "");
    for extra in
        [serde_json::json!({"objective": "regression"}), serde_json::json!({"objective": "multiclass", "num_class": 3})]
    {
        match load(&manifest, &model_text_with(3, Some(THREE_NAMES), extra.clone())) {
            Err((e, _)) => assert!(e.to_string().contains("binary"), "{e}"),
            Ok(spec) => {
                let mut card = Scorecard::new(Arc::new(spec)).unwrap();
                let p = card.predict_row(&[90.0, 1.0, 1.0]).unwrap();
                panic!("{extra} model accepted; it serves {p} as a probability");
            }
        }
    }
}

/// A model that scores no event type is almost certainly a mistake.
#[test]
fn empty_events_are_refused() {
    let head = GOOD_HEAD.replace(r#"events = ["loan_application"]"#, "events = []");
    match load(&(head + &inputs(THREE, "")), &named_model()) {
        Err((e, _)) => assert!(e.to_string().contains("`events`"), "{e}"),
        Ok(spec) => panic!("accepted; scores kinds mask {:#b}", spec.kinds),
    }
}

/// A model on (amount, term, purpose) trained with the listed columns as
/// categorical; purpose takes codes 0 to 5.
fn categorical_model(categorical: &str) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let n = 600;
    let mut rows = Vec::with_capacity(n * 3);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let (amount, term, purpose) =
            (rng.gen_range(1000.0..60000.0), [3.0, 6.0, 12.0][rng.gen_range(0..3)], rng.gen_range(0..6) as f64);
        rows.extend([amount, term, purpose]);
        let z = if purpose == 3.0 || purpose == 5.0 { 1.5 } else { -1.0 } + if term == 6.0 { 1.0 } else { 0.0 };
        labels.push(if rng.gen_bool(1.0 / (1.0 + f64::exp(-z))) { 1.0 } else { 0.0 });
    }
    let names: Vec<String> = ["amount", "term", "purpose"].map(String::from).into();
    let params = serde_json::json!({
        "objective": "binary", "num_iterations": 10, "num_leaves": 4, "min_data_in_leaf": 10,
        "min_data_per_group": 10, "cat_smooth": 1, "categorical_feature": categorical,
        "seed": 3, "deterministic": true, "num_threads": 1, "verbosity": -1
    });
    riskd_scorecard::lgbm::train(&rows, &labels, &names, params.as_object().unwrap()).unwrap()
}

const CAT_INPUTS: &str = r#"
[[input]]
name = "amount"
source = "event.amount"
label = "Amount"
reason_code = "R01"

[[input]]
name = "term"
source = "event.term_months"
label = "Term"
reason_code = "R02"
kind = "categorical"

[[input]]
name = "purpose"
source = "event.purpose"
label = "Purpose"
reason_code = "R03"
kind = "categorical"
categories = ["consumption", "education", "medical", "business", "home", "travel"]
"#;

#[test]
fn categorical_inputs_load_when_they_match_the_model() {
    let spec = load(&(GOOD_HEAD.to_string() + CAT_INPUTS), &categorical_model("1,2")).map_err(|(e, _)| e).unwrap();
    assert_eq!(spec.manifest.inputs[2].categories.len(), 6);
    let mut card = Scorecard::new(Arc::new(spec)).unwrap();
    let risky = card.predict_row(&[20000.0, 6.0, 3.0]).unwrap();
    let safe = card.predict_row(&[20000.0, 12.0, 0.0]).unwrap();
    assert!(risky > safe, "{risky} vs {safe}");
}

#[test]
fn categorical_manifest_mistakes_are_refused_by_input() {
    let model = categorical_model("1,2");
    let manifest = |inputs: &str| GOOD_HEAD.to_string() + inputs;
    let cases: &[(String, &str)] = &[
        (
            CAT_INPUTS.replace(
                "categories = [\"consumption\", \"education\", \"medical\", \"business\", \"home\", \"travel\"]\n",
                "",
            ),
            "invalid manifest: input `purpose`: a categorical input on a string field needs `categories` (its values in code order)",
        ),
        (
            CAT_INPUTS.replace("\"home\", \"travel\"", "\"home\", \"medical\""),
            "invalid manifest: input `purpose`: category `medical` is listed twice",
        ),
        (
            CAT_INPUTS.replacen("kind = \"categorical\"\n", "kind = \"categorical\"\ncategories = [\"3\", \"6\"]\n", 1),
            "input 2 (`term`) reads `event.term_months`, a number, which is passed as the category code itself; `categories` maps strings and must be left out",
        ),
        (
            CAT_INPUTS.replacen("kind = \"categorical\"\n", "categories = [\"3\", \"6\"]\n", 1),
            "invalid manifest: input `term`: `categories` needs kind = \"categorical\"",
        ),
        (
            CAT_INPUTS.replace("source = \"event.purpose\"", "source = \"entity.ip\""),
            "input 3 (`purpose`) is categorical but reads `entity.ip`, a ip field; categorical inputs read string fields (with `categories`) or numeric codes",
        ),
        (
            CAT_INPUTS.replace("kind = \"categorical\"\ncategories = [\"consumption\", \"education\", \"medical\", \"business\", \"home\", \"travel\"]\n", ""),
            "input 3 (`purpose`) reads `event.purpose`, a string field, as a number; declare it kind = \"categorical\" with its `categories`",
        ),
        (
            CAT_INPUTS.replacen("kind = \"categorical\"\n", "", 1),
            "input 2 (`term`) is categorical in the model but numeric in the manifest; declare kind = \"categorical\" with its `categories`",
        ),
        (
            CAT_INPUTS.replace("\"business\", \"home\", \"travel\"", "\"business\""),
            "input 3 (`purpose`): the model was trained with category code 5, but the manifest lists 4 categories (codes 0 to 3)",
        ),
    ];
    for (inputs, want) in cases {
        let (e, path) = refused(&manifest(inputs), &model);
        assert_eq!(e.to_string(), format!("{path}: {want}"));
    }
    // Categorical in the manifest, numerical in the model.
    let (e, path) = refused(&manifest(CAT_INPUTS), &categorical_model("2"));
    assert_eq!(
        e.to_string(),
        format!(
            "{path}: input 2 (`term`) is categorical in the manifest but the model was trained with it as numerical"
        )
    );
}

#[test]
fn duplicate_or_no_inputs_are_refused() {
    let list = [THREE[0], THREE[1], ("amount", "event.stated_monthly_income")];
    let (e, path) = refused(&(GOOD_HEAD.to_string() + &inputs(&list, "")), &named_model());
    assert_eq!(e.to_string(), format!("{path}: invalid manifest: input `amount` is listed twice"));
    let head = GOOD_HEAD.replace("model_file = \"model.txt\"\n", "model_file = \"model.txt\"\ninput = []\n");
    let (e, path) = refused(&head, &named_model());
    assert_eq!(e.to_string(), format!("{path}: invalid manifest: no `[[input]]`: a model needs at least one input"));
}
