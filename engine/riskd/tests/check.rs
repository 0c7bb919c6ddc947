//! `riskd check` refuses broken configuration with precise messages.

use std::path::Path;
use std::process::Command;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_riskd"))
        .current_dir(repo())
        .arg("--config")
        .arg(config)
        .arg("check")
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_shipped_config_checks_clean() {
    let (ok, out) = check(&repo().join("riskd.toml"));
    assert!(ok, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
}

#[test]
fn a_broken_config_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[kafka]\nbrokers = \"127.0.0.1:9092\"\nlinger = 5\n").unwrap();
    let (ok, out) = check(&p);
    assert!(!ok);
    assert!(out.contains("bad.toml:3:1: unknown field `linger`"), "{out}");
}

#[test]
fn a_broken_feature_definition_is_refused_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let features = dir.path().join("features");
    std::fs::create_dir(&features).unwrap();
    std::fs::write(
        features.join("f.toml"),
        "[[feature]]\nname = \"device.x\"\nentity = \"devise\"\nagg = \"count\"\nwindow = \"1h\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("riskd.toml");
    std::fs::write(&cfg, format!("[engine]\nfeatures_dir = \"{}\"\n", features.display())).unwrap();
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(
        out.contains("unknown entity `devise`")
            && out.contains("f.toml:3:10")
            && out.contains("did you mean `device`?"),
        "{out}"
    );
}

#[test]
fn a_model_that_does_not_match_its_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    std::fs::create_dir(&model).unwrap();
    let manifest = std::fs::read_to_string(repo().join("models/a_card/manifest.toml")).unwrap();
    // Drop the last input: the model still takes 15.
    let cut = manifest.rfind("[[input]]").unwrap();
    std::fs::write(model.join("manifest.toml"), &manifest[..cut]).unwrap();
    std::fs::copy(repo().join("models/a_card/model.txt"), model.join("model.txt")).unwrap();
    let cfg = dir.path().join("riskd.toml");
    std::fs::write(&cfg, format!("[engine]\nmodels = [\"{}\"]\n", model.display())).unwrap();
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(out.contains("the model takes 15 inputs but the manifest lists 14"), "{out}");
}

#[test]
fn a_broken_rule_is_refused_with_a_located_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(rules.join("lists")).unwrap();
    std::fs::write(
        rules.join("chain.toml"),
        "[[stage]]\nname = \"velocity\"\ncombine = \"first_match\"\nfiles = [\"v.toml\"]\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("v.toml"),
        "[[rule]]\nid = \"R1\"\ndescription = \"d\"\nowner = \"o\"\nseverity = 50\nevents = [\"loan_application\"]\nwhen = \"device.distinct_user_24h > 3\"\naction = \"reject\"\nreason = \"SHARED\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("riskd.toml");
    std::fs::write(&cfg, format!("[engine]\nrules_dir = \"{}\"\n", rules.display())).unwrap();
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(out.contains("v.toml:7:9"), "{out}");
    assert!(out.contains("did you mean `device.distinct_users_24h`?"), "{out}");
}
