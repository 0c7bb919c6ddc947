//! Backtesting (`riskd backtest`): what a candidate rule set, list, feature
//! set or model would have decided on past traffic, next to what the
//! baseline decided, measured against outcome labels.
//!
//! ```text
//! events.jsonl(.gz) --> intake (decode, features) --+--> baseline decider  --+--> Row --> Collector --> Report --> tables, report.html
//!                       (one per config when their  +--> candidate decider --+        \-> changed.csv / changed.jsonl
//!                        feature sets differ)                                 labels.csv (event id -> bad)
//! ```
//!
//! The input is read once, in file order (the order `serve` and `replay`
//! decide in), through the serving pipeline's own halves
//! ([`riskd_pipeline::pipeline::Intake`] and
//! [`riskd_pipeline::pipeline::Decider`]), so the baseline's decisions are
//! the ones `riskd replay` makes. Labels come from a separate file; events
//! without one are counted as unlabelled, never dropped. Outputs contain
//! event ids, actions, scores and rule ids, never entity values.
//!
//! This crate sits at the edge: no serving crate depends on it.

pub mod html;
pub mod run;
pub mod stats;
pub mod tables;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riskd_core::KeyRing;
use riskd_pipeline::config::EngineConfig;

pub use run::{Backtest, BacktestError, Row, SideOutcome, SIDES};
pub use stats::{Change, Collector, Report};

/// Changed decisions listed in the HTML page (all of them are in `changed.csv`).
pub const CHANGES_SHOWN: usize = 200;

pub struct Options {
    /// Recorded events (JSONL, optionally gzip).
    pub input: PathBuf,
    /// `event_id,bad` labels; without them every event is unlabelled.
    pub labels: Option<PathBuf>,
    /// Where the tables, `report.json` and `report.html` go (created if missing).
    pub out_dir: PathBuf,
    /// Also write both configurations' decision records
    /// (`baseline.decisions.jsonl`, `candidate.decisions.jsonl`, timing fields zeroed).
    pub decisions: bool,
    /// Compute model reason codes (`engine.reason_codes` of each config).
    /// They explain a score and never change an action, a score or a rule
    /// hit, so the report does not need them; without them an application
    /// costs a score instead of a score plus per-input contributions. The
    /// decision records written by `decisions` carry them only when this is set.
    pub reason_codes: bool,
}

/// A finished backtest.
pub struct Finished {
    pub report: Report,
    pub elapsed: Duration,
    /// The first [`CHANGES_SHOWN`] changed decisions.
    pub sample: Vec<Change>,
}

impl Finished {
    pub fn events_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.report.inputs as f64 / s
        } else {
            0.0
        }
    }
}

/// Runs a backtest of `configs` (baseline, candidate) over `opts.input`
/// and writes its outputs to `opts.out_dir`. `progress` is called about
/// every second with (inputs so far, time since the start).
pub fn backtest(
    configs: [&EngineConfig; 2],
    keys: &KeyRing,
    opts: &Options,
    progress: impl FnMut(u64, Duration) + Send,
) -> Result<Finished, BacktestError> {
    let started = Instant::now();
    let labels = match &opts.labels {
        Some(path) => riskd_pipeline::train::read_labels(path).map_err(|e| BacktestError::Labels(e.to_string()))?,
        None => HashMap::new(),
    };
    if !opts.input.is_file() {
        return Err(BacktestError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: no such input file", opts.input.display()),
        )));
    }
    let without_reasons = configs.map(|c| EngineConfig { reason_codes: 0, ..c.clone() });
    let configs = if opts.reason_codes { configs } else { [&without_reasons[0], &without_reasons[1]] };
    let mut bt = Backtest::new(configs, keys)?;
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir).map_err(|source| BacktestError::Output { path: dir.display().to_string(), source })?;
    let mut changes = tables::ChangeWriter::create(dir)?;
    let mut records = if opts.decisions {
        let open = |side: &str| {
            let path = dir.join(format!("{side}.decisions.jsonl"));
            std::fs::File::create(&path)
                .map(|f| (path.clone(), std::io::BufWriter::new(f)))
                .map_err(|source| BacktestError::Output { path: path.display().to_string(), source })
        };
        Some([open(SIDES[0])?, open(SIDES[1])?])
    } else {
        None
    };
    let mut collector = Collector::new([bt.catalog(0).to_vec(), bt.catalog(1).to_vec()]);
    let mut sample = Vec::new();
    bt.run(
        &opts.input,
        &labels,
        records.is_some(),
        |row| {
            if let Some(rec) = records.as_mut() {
                for (side, (_, w)) in rec.iter_mut().enumerate() {
                    if let Some(json) = &row.records[side] {
                        w.write_all(json)?;
                    }
                }
            }
            if let Some(change) = collector.add(&row) {
                changes.write(&change)?;
                if sample.len() < CHANGES_SHOWN {
                    sample.push(change);
                }
            }
            Ok(())
        },
        progress,
    )?;
    changes.finish()?;
    if let Some(rec) = records.as_mut() {
        for (path, w) in rec.iter_mut() {
            w.flush().map_err(|source| BacktestError::Output { path: path.display().to_string(), source })?;
        }
    }
    let versions = [bt.deployment(0).versions(), bt.deployment(1).versions()];
    let report = collector.finish(&shown(&opts.input), labels.len(), versions, bt.shares_intake());
    tables::write_tables(dir, &report)?;
    html::write(&dir.join("report.html"), &report, &sample)?;
    Ok(Finished { report, elapsed: started.elapsed(), sample })
}

/// The input's file name, so that reports do not depend on where the input lives.
fn shown(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// A short summary for the terminal.
pub fn render_summary(f: &Finished) -> String {
    use std::fmt::Write;
    let r = &f.report;
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0));
    let pp = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:+.2} pp", v * 100.0));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "backtest of {}: {} inputs in {:.2}s ({:.0} events/s){}",
        r.input,
        r.inputs,
        f.elapsed.as_secs_f64(),
        f.events_per_second(),
        if r.shared_intake { "" } else { "; feature sets differ, two intakes" }
    );
    let l = &r.labels;
    let _ = writeln!(
        s,
        "labels: {} read, {} applications labelled, {} unlabelled, {} labels match no input",
        l.labels_read, l.applications_labelled, l.applications_unlabelled, l.labels_without_input
    );
    let _ = writeln!(s, "{:<22}{:>12}{:>12}{:>12}", "", "baseline", "candidate", "change");
    let d = &r.difference;
    let [b, c] = &r.configurations;
    for (name, x, y, ch) in [
        ("approval rate", b.approval_rate, c.approval_rate, d.approval_rate_change),
        ("review rate", b.review_rate, c.review_rate, d.review_rate_change),
        ("reject rate", b.reject_rate, c.reject_rate, d.reject_rate_change),
        ("alert rate", b.alert_rate, c.alert_rate, d.alert_rate_change),
        ("bad rate of approved", b.bad_rate_approved, c.bad_rate_approved, d.bad_rate_approved_change),
    ] {
        let _ = writeln!(s, "{name:<22}{:>12}{:>12}{:>12}", pct(x), pct(y), pp(ch));
    }
    for (bm, cm) in b.models.iter().zip(&c.models) {
        let auc = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let _ = writeln!(
            s,
            "AUC {} / {}: {} -> {} (KS {} -> {})",
            bm.model,
            cm.model,
            auc(bm.auc),
            auc(cm.auc),
            auc(bm.ks),
            auc(cm.ks)
        );
    }
    let _ = writeln!(
        s,
        "changed decisions: {} ({} more severe, {} less severe; {} labelled, {} bad)",
        d.changed, d.more_severe, d.less_severe, d.changed_labelled, d.changed_bad
    );
    for sw in d.swap.iter().filter(|sw| sw.baseline != sw.candidate) {
        let _ = writeln!(
            s,
            "  {:>11} -> {:<11} {:>8}  (bad {}, good {}, unlabelled {})",
            sw.baseline,
            sw.candidate,
            sw.count,
            sw.bad,
            sw.labelled - sw.bad,
            sw.unlabelled
        );
    }
    for t in d.top_rules.iter().take(5) {
        let _ = writeln!(s, "  rule {} (fired only in {}): {} changed", t.rule_id, t.fired_only_in, t.changed);
    }
    s
}
