//! The starter feature set over `replay-data/events.jsonl`, computed by the
//! engine and by an independent implementation of the same windows in
//! Python polars (`scripts/parity/features_polars.py`, which reads the
//! definitions, the schema and the raw events itself), equal on every
//! feature of every event. Five arrival orders: the file's, a stable sort
//! by event time, the file shuffled within the allowed lateness (the
//! recorded file is already in time order, so only this one has events
//! arriving out of order), and those last two with every time cut to the
//! minute (ties at equal times, points exactly on a window's edge). Once with the starter set, once with
//! `tests/parity/coverage.toml` added, so every aggregation, entity kind
//! and filter type is compared.
//!
//! Needs `python3` with polars, which `scripts/setup.sh` installs into
//! `$HOME/.cache/riskd/tools/python` (`RISKD_TOOLS_ROOT` moves that root;
//! `RISKD_POLARS_PYTHONPATH` names the directory itself, `RISKD_PYTHON` the
//! interpreter). Without them the test fails and says so: it is never
//! skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use riskd_core::event::Event;
use riskd_core::{Decoder, KeyRing, Limits};
use riskd_features::{Aggregation, FeatureDef, FeatureEngine, FeatureSet, FeatureVector, Operand};

/// Relative tolerance for sums and means (and ratios of them): polars may
/// add in another order than the engine's time order. Every other value,
/// ratios of fields and times divided by a unit included, must be equal to
/// the bit.
const SUM_TOLERANCE: f64 = 1e-9;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn decode(text: &str) -> Vec<Event> {
    let keys = KeyRing::from_toml(&KeyRing::generate_file("k1"), "test").unwrap();
    let decoder = Decoder::new(Limits::default(), keys);
    text.lines().filter_map(|l| decoder.decode(l.as_bytes()).ok()).collect()
}

/// The interpreter and the PYTHONPATH that holds polars.
fn python() -> (String, String) {
    let py = std::env::var("RISKD_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = std::env::var("RISKD_POLARS_PYTHONPATH").unwrap_or_else(|_| {
        let root = std::env::var("RISKD_TOOLS_ROOT")
            .unwrap_or_else(|_| format!("{}/.cache/riskd/tools", std::env::var("HOME").unwrap_or_default()));
        format!("{root}/python")
    });
    let path = match std::env::var("PYTHONPATH") {
        Ok(old) if !old.is_empty() => format!("{dir}:{old}"),
        _ => dir.clone(),
    };
    let probe =
        Command::new(&py).args(["-c", "import polars; print(polars.__version__)"]).env("PYTHONPATH", &path).output();
    match probe {
        Err(e) => panic!("cannot run `{py}` ({e}): run scripts/setup.sh, which installs python3 and polars"),
        Ok(o) if !o.status.success() => panic!(
            "`{py}` cannot import polars (looked in {dir}): run scripts/setup.sh to install it\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => (py, path),
    }
}

/// The script's output: the event ids and one row of values per event
/// (NaN: missing), under the feature names of its header.
struct Table {
    names: Vec<String>,
    rows: Vec<(String, Vec<f64>)>,
}

fn polars_features((py, pythonpath): &(String, String), features: &Path, events: &Path, order: &str) -> Table {
    let script = repo().join("scripts/parity/features_polars.py");
    let out = Command::new(py)
        .arg(&script)
        .arg("--features")
        .arg(features)
        .arg("--events")
        .arg(events)
        .args(["--order", order])
        .env("PYTHONPATH", pythonpath)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} --order {order} failed:\n{stderr}", script.display());
    eprint!("{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("a header").split(',').map(String::from).collect();
    assert_eq!(header[0], "event_id");
    let rows = lines
        .map(|l| {
            let mut cells = l.split(',');
            let id = cells.next().unwrap().to_string();
            let values: Vec<f64> = cells
                .map(|c| if c.is_empty() { f64::NAN } else { c.parse().unwrap_or_else(|_| panic!("{id}: {c:?}")) })
                .collect();
            assert_eq!(values.len(), header.len() - 1, "{id}: one value per feature");
            (id, values)
        })
        .collect();
    Table { names: header[1..].to_vec(), rows }
}

/// Sums and means, and ratios that read one, may differ in the last bits.
fn inexact(set: &FeatureSet, d: &FeatureDef) -> bool {
    match d.agg {
        Aggregation::Sum(_) | Aggregation::Mean(_) => true,
        Aggregation::Ratio(n, m) => {
            [n, m].iter().any(|o| matches!(o, Operand::Feature(s) if inexact(set, &set.defs[*s])))
        }
        _ => false,
    }
}

fn equal(a: f64, b: f64, tolerance: bool) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    a.to_bits() == b.to_bits() || (tolerance && (a - b).abs() <= SUM_TOLERANCE * a.abs().max(b.abs()))
}

/// Runs the engine over `events` in the given order and compares every
/// value with the script's. Returns, per feature, the values that are
/// neither missing nor zero.
fn compare(what: &str, set: &Arc<FeatureSet>, events: &[Event], polars: &Table) -> Vec<usize> {
    let names: Vec<&str> = set.defs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(polars.names, names, "{what}: the script computed other features than the engine");
    assert_eq!(polars.rows.len(), events.len(), "{what}: the script kept other events than the decoder");
    let mut engine = FeatureEngine::new(set.clone(), [9; 16]);
    let mut fv = FeatureVector::default();
    let mut informative = vec![0; set.defs.len()];
    let mut diffs = Vec::new();
    for (ev, (id, want)) in events.iter().zip(&polars.rows) {
        assert_eq!(ev.id.as_str(), id, "{what}: the script's events arrive in another order");
        engine.update(ev, &mut fv);
        for d in &set.defs {
            let (got, want) = (fv.0[d.slot], want[d.slot]);
            if !equal(got, want, inexact(set, d)) {
                diffs.push(format!("{what}: event {id}, {}: engine {got:?}, polars {want:?}", d.name));
            }
            informative[d.slot] += usize::from(!got.is_nan() && got != 0.0);
        }
    }
    assert_eq!(engine.late_events(), 0, "{what}: late events are outside what the script models");
    assert!(
        diffs.is_empty(),
        "{} values differ; the first ones:\n{}",
        diffs.len(),
        diffs.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    informative
}

/// A deterministic stand-in for random delays.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The file's lines, each delayed by a pseudo-random amount below the
/// allowed lateness: events overtake each other, none arrives late.
/// Malformed lines travel with the event before them.
fn shuffled_within_lateness(text: &str, lateness_ms: i64) -> String {
    assert!(lateness_ms > 0, "the starter set allows some lateness");
    let decoder = Decoder::new(Limits::default(), KeyRing::from_toml(&KeyRing::generate_file("k1"), "t").unwrap());
    let mut time = i64::MIN;
    let mut keyed: Vec<(i64, usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if let Ok(ev) = decoder.decode(l.as_bytes()) {
                time = ev.time_ms;
            }
            let delay = (splitmix(i as u64) % lateness_ms as u64) as i64;
            (time.saturating_add(delay), i, l)
        })
        .collect();
    keyed.sort();
    keyed.iter().map(|&(_, _, l)| format!("{l}\n")).collect()
}

/// The file with every event time cut to the whole minute: many events of
/// an entity then share a time, and many sit exactly on the lower edge of
/// another's window (every window of the starter set is whole minutes).
fn truncated_to_the_minute(text: &str) -> String {
    const KEY: &str = "\"event_time\":\"";
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.find(KEY) {
            Some(at) => {
                let start = at + KEY.len();
                let end = start + line[start..].find('"').expect("a closed string");
                assert!(line[..end].ends_with('Z') && end - start > 17, "UTC with seconds: {line}");
                out.push_str(&line[..start + 16]);
                out.push_str(":00Z");
                out.push_str(&line[end..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Runs the engine and the script with the definitions in `features` over
/// replay-data in five arrival orders and compares every value.
fn check_all_orders(name: &str, features: &Path) {
    let set = Arc::new(FeatureSet::load(features).unwrap());
    let file = repo().join("replay-data/events.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let tmp = |what: &str, content: String| {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("polars_parity_{name}_{what}.jsonl"));
        std::fs::write(&path, content).unwrap();
        path
    };
    let lateness = set.allowed_lateness_ms;
    let truncated = truncated_to_the_minute(&text);
    let streams = [
        ("file order", file.clone(), "file"),
        ("event-time order", file.clone(), "time"),
        ("shuffled within the lateness", tmp("shuffled", shuffled_within_lateness(&text, lateness)), "file"),
        ("times cut to the minute", tmp("minutes", truncated.clone()), "file"),
        (
            "times cut to the minute, shuffled",
            tmp("minutes_shuffled", shuffled_within_lateness(&truncated, lateness)),
            "file",
        ),
    ];
    let py = python();
    for (order, path, py_order) in &streams {
        let what = format!("{name}, {order}");
        let mut events = decode(&std::fs::read_to_string(path).unwrap());
        assert!(events.len() >= 5000, "{what}");
        if *py_order == "time" {
            events.sort_by_key(|e| e.time_ms);
        }
        let overtaken = events.windows(2).filter(|w| w[1].time_ms < w[0].time_ms).count();
        let ties = events.windows(2).filter(|w| w[1].time_ms == w[0].time_ms).count();
        assert!(!order.contains("shuffled") || overtaken > 50, "{what}: only {overtaken} events out of order");
        assert!(!order.contains("minute") || ties > 500, "{what}: only {ties} equal times");
        let polars = polars_features(&py, features, path, py_order);
        let informative = compare(&what, &set, &events, &polars);
        // Not a vacuous comparison: every feature has values that are
        // neither missing nor zero, and most values are.
        for d in &set.defs {
            assert!(informative[d.slot] > 0, "{what}: {} is missing or zero on every event", d.name);
        }
        let total: usize = informative.iter().sum();
        assert!(total > 4 * events.len(), "{what}: only {total} values are neither missing nor zero");
        eprintln!(
            "{what}: {} events x {} features equal, {total} values neither missing nor zero \
             ({overtaken} events arrive right after a later one, {ties} right after one at the same time)",
            events.len(),
            set.defs.len()
        );
    }
}

#[test]
fn starter_features_equal_a_polars_computation_on_replay_data() {
    check_all_orders("starter", &repo().join("features"));
}

/// The starter set and `tests/parity/coverage.toml`, which adds every
/// aggregation, entity kind and filter type the starter set does not use.
#[test]
fn every_aggregation_and_entity_equal_a_polars_computation_on_replay_data() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("polars_parity_features");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("features")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    // Named to sort last: its ratios read starter features.
    let coverage = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parity/coverage.toml");
    std::fs::copy(coverage, dir.join("zz_coverage.toml")).unwrap();
    check_all_orders("with coverage.toml", &dir);
}
