//! `riskd loadtest` at a low rate against a real local broker: both workers
//! answer every input exactly once and the report holds its own measurements.
//! (No timing is asserted: figures depend on the machine.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[test]
fn loadtest_answers_every_input_once_for_both_workers() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("loadtest.json");
    let out = Command::new(env!("CARGO_BIN_EXE_riskd"))
        .current_dir(repo())
        .env("RISKD_LOG", "warn")
        .env_remove("RISKD_KAFKA_BROKERS")
        .args(["loadtest", "--rates", "200", "--duration", "2", "--warmup", "1", "--json"])
        .arg(&json)
        .output()
        .expect("run riskd loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| pass-through | 200 |") && stdout.contains("| engine | 200 |"), "{stdout}");
    assert!(stdout.contains("Engine latency added over the pass-through"), "{stdout}");

    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        let n = |k: &str| r[k].as_u64().unwrap();
        assert_eq!(n("sent"), 600, "{r}");
        assert_eq!(n("lost"), 0, "{r}");
        assert_eq!(n("duplicates"), 0, "{r}");
        assert_eq!(n("produce_failures"), 0, "{r}");
        // Every input (plus the readiness probe) came back once.
        assert_eq!(n("decisions") + n("dead_letters"), 601, "{r}");
        // The measured window excludes the warm-up second and the probe.
        assert_eq!(r["end_to_end"]["samples"].as_u64().unwrap(), 400, "{r}");
        assert_eq!(r["one_hop"]["samples"].as_u64().unwrap(), 400, "{r}");
        assert!(r["end_to_end"]["p50_ms"].as_f64().unwrap() > 0.0);
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 1.0);
    }
}
