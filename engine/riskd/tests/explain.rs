//! `riskd features explain` on replay-data: values and contributing events,
//! checked against the recorded file itself.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn explain(keys: &Path, event_id: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_riskd"))
        .current_dir(repo())
        .env("RISKD_PII_KEY_FILE", keys)
        .args(["features", "explain", "--input", "replay-data/events.jsonl", "--json", "--event-id", event_id])
        .output()
        .unwrap()
}

#[test]
fn a_device_farm_application_is_explained_by_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, riskd_core::KeyRing::generate_file("k1")).unwrap();
    // The recorded events by id, and the last application from the farm device.
    let text = std::fs::read_to_string(repo().join("replay-data/events.jsonl")).unwrap();
    let events: HashMap<String, serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("event_id")?.as_str()?.to_string(), v)))
        .collect();
    let target = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event_type"] == "loan_application" && v["entities"]["device_id"] == "dev-061ceb8e3046fc2b")
        .expect("the farm device applies in replay-data");
    let id = target["event_id"].as_str().unwrap();

    let out = explain(&keys, id);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ex: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ex["event_id"], id);
    let feature = |name: &str| ex["features"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap().clone();

    // distinct users on the device in 24h = distinct user ids of the events listed.
    let f = feature("device.distinct_users_24h");
    let users: HashSet<&str> = f["contributors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let e = &events[c["event_id"].as_str().unwrap()];
            assert_eq!(e["entities"]["device_id"], "dev-061ceb8e3046fc2b", "only the device's events contribute");
            e["entities"]["user_id"].as_str().unwrap()
        })
        .collect();
    assert!(users.len() > 3, "a device farm: {users:?}");
    assert_eq!(f["value"].as_f64().unwrap(), users.len() as f64);
    assert_eq!(f["value"], f["recomputed"]);

    // applications in the last hour: the listed applications, all within an hour.
    let f = feature("device.applications_1h");
    let listed = f["contributors"].as_array().unwrap();
    assert_eq!(f["value"].as_f64().unwrap(), listed.len() as f64);
    assert!(listed.iter().all(|c| c["event_type"] == "loan_application"));
    assert!(listed.iter().any(|c| c["event_id"] == id), "the application counts itself");
    assert!(ex["features"].as_array().unwrap().iter().all(|f| f["value"] == f["recomputed"]));
}

#[test]
fn an_unknown_event_id_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, riskd_core::KeyRing::generate_file("k1")).unwrap();
    let out = explain(&keys, "ev-does-not-exist");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no event with id `ev-does-not-exist`"), "{err}");
}
