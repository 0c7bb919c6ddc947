//! Machine-readable tables: one CSV per table (header row, `,`-separated,
//! RFC 4180 quoting, empty cell for "not defined", e.g. a rate of nothing)
//! and `report.json` with all of them.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::run::BacktestError;
use crate::stats::{Change, Report};

/// A CSV cell.
pub trait Cell {
    fn cell(&self) -> String;
}

impl Cell for u64 {
    fn cell(&self) -> String {
        self.to_string()
    }
}

impl Cell for i64 {
    fn cell(&self) -> String {
        self.to_string()
    }
}

impl Cell for Option<f64> {
    fn cell(&self) -> String {
        self.map_or(String::new(), |v| v.to_string())
    }
}

impl Cell for str {
    fn cell(&self) -> String {
        if self.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", self.replace('"', "\"\""))
        } else {
            self.to_string()
        }
    }
}

impl Cell for String {
    fn cell(&self) -> String {
        self.as_str().cell()
    }
}

impl Cell for &str {
    fn cell(&self) -> String {
        (*self).cell()
    }
}

fn line(w: &mut impl Write, cells: &[&dyn Cell]) -> io::Result<()> {
    let text: Vec<String> = cells.iter().map(|c| c.cell()).collect();
    writeln!(w, "{}", text.join(","))
}

fn create(path: &Path) -> Result<BufWriter<File>, BacktestError> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|source| BacktestError::Output { path: path.display().to_string(), source })
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> BacktestError + '_ {
    move |source| BacktestError::Output { path: path.display().to_string(), source }
}

type RateOf = fn(&crate::stats::SideReport) -> Option<f64>;
type CountOf = fn(&crate::stats::SideReport) -> u64;

/// The tables' file names, in the order they are written.
pub const TABLES: &[&str] = &[
    "summary.csv",
    "actions.csv",
    "scores.csv",
    "models.csv",
    "rules.csv",
    "rule_overlap.csv",
    "swap.csv",
    "change_rules.csv",
    "daily.csv",
];

/// Writes every table of `report` and `report.json` into `dir`.
pub fn write_tables(dir: &Path, report: &Report) -> Result<(), BacktestError> {
    let p = |name: &str| dir.join(name);
    let write = |name: &str, f: &dyn Fn(&mut BufWriter<File>) -> io::Result<()>| -> Result<(), BacktestError> {
        let path = p(name);
        let mut w = create(&path)?;
        f(&mut w).and_then(|()| w.flush()).map_err(io_at(&path))
    };
    let sides = &report.configurations;
    write("summary.csv", &|w| {
        line(w, &[&"measure", &"baseline", &"candidate", &"change"])?;
        let rows: [(&str, RateOf, Option<f64>); 5] = [
            ("approval_rate", |s| s.approval_rate, report.difference.approval_rate_change),
            ("review_rate", |s| s.review_rate, report.difference.review_rate_change),
            ("reject_rate", |s| s.reject_rate, report.difference.reject_rate_change),
            ("alert_rate", |s| s.alert_rate, report.difference.alert_rate_change),
            ("bad_rate_approved", |s| s.bad_rate_approved, report.difference.bad_rate_approved_change),
        ];
        for (name, f, change) in rows {
            line(w, &[&name, &f(&sides[0]), &f(&sides[1]), &change])?;
        }
        let counts: [(&str, CountOf); 2] = [("decisions", |s| s.decisions), ("applications", |s| s.applications)];
        for (name, f) in counts {
            let (a, b) = (f(&sides[0]), f(&sides[1]));
            line(w, &[&name, &a, &b, &(b as i64 - a as i64)])?;
        }
        let d = &report.difference;
        for (name, v) in
            [("changed_decisions", d.changed), ("changed_labelled", d.changed_labelled), ("changed_bad", d.changed_bad)]
        {
            line(w, &[&name, &"", &"", &v])?;
        }
        Ok(())
    })?;
    write("actions.csv", &|w| {
        line(
            w,
            &[
                &"configuration",
                &"group",
                &"action",
                &"count",
                &"rate",
                &"labelled",
                &"bad",
                &"unlabelled",
                &"bad_rate",
            ],
        )?;
        for s in sides {
            for r in &s.actions {
                line(
                    w,
                    &[
                        &s.configuration,
                        &r.group,
                        &r.action,
                        &r.count,
                        &r.rate,
                        &r.labelled,
                        &r.bad,
                        &r.unlabelled,
                        &r.bad_rate,
                    ],
                )?;
            }
        }
        Ok(())
    })?;
    write("scores.csv", &|w| {
        line(w, &[&"configuration", &"score_from", &"score_below", &"count", &"labelled", &"bad", &"bad_rate"])?;
        for s in sides {
            for r in &s.scores {
                line(w, &[&s.configuration, &r.low, &r.high, &r.count, &r.labelled, &r.bad, &r.bad_rate])?;
            }
        }
        Ok(())
    })?;
    write("models.csv", &|w| {
        line(w, &[&"configuration", &"model", &"labelled", &"bad", &"auc", &"ks", &"gini"])?;
        for s in sides {
            for r in &s.models {
                line(w, &[&s.configuration, &r.model, &r.labelled, &r.bad, &r.auc, &r.ks, &r.gini])?;
            }
        }
        Ok(())
    })?;
    write("rules.csv", &|w| {
        line(
            w,
            &[
                &"configuration",
                &"rule_id",
                &"stage",
                &"mode",
                &"hits",
                &"hit_rate",
                &"labelled_hits",
                &"bad_hits",
                &"precision",
                &"lift",
            ],
        )?;
        for s in sides {
            for r in &s.rules {
                line(
                    w,
                    &[
                        &s.configuration,
                        &r.rule_id,
                        &r.stage,
                        &r.mode,
                        &r.hits,
                        &r.hit_rate,
                        &r.labelled_hits,
                        &r.bad_hits,
                        &r.precision,
                        &r.lift,
                    ],
                )?;
            }
        }
        Ok(())
    })?;
    write("rule_overlap.csv", &|w| {
        line(w, &[&"configuration", &"rule_a", &"rule_b", &"both"])?;
        for s in sides {
            for r in &s.overlap {
                line(w, &[&s.configuration, &r.rule_a, &r.rule_b, &r.both])?;
            }
        }
        Ok(())
    })?;
    write("swap.csv", &|w| {
        line(w, &[&"baseline_action", &"candidate_action", &"count", &"labelled", &"bad", &"unlabelled"])?;
        for r in &report.difference.swap {
            line(w, &[&r.baseline, &r.candidate, &r.count, &r.labelled, &r.bad, &r.unlabelled])?;
        }
        Ok(())
    })?;
    write("change_rules.csv", &|w| {
        line(w, &[&"rule_id", &"fired_only_in", &"changed", &"labelled", &"bad"])?;
        for r in &report.difference.top_rules {
            line(w, &[&r.rule_id, &r.fired_only_in, &r.changed, &r.labelled, &r.bad])?;
        }
        Ok(())
    })?;
    write("daily.csv", &|w| {
        line(
            w,
            &[
                &"day",
                &"configuration",
                &"decisions",
                &"applications",
                &"approval_rate",
                &"review_rate",
                &"reject_rate",
                &"alert_rate",
                &"approved_labelled",
                &"bad_rate_approved",
                &"changed",
            ],
        )?;
        for r in &report.daily {
            line(
                w,
                &[
                    &r.day,
                    &r.configuration,
                    &r.decisions,
                    &r.applications,
                    &r.approval_rate,
                    &r.review_rate,
                    &r.reject_rate,
                    &r.alert_rate,
                    &r.approved_labelled,
                    &r.bad_rate_approved,
                    &r.changed,
                ],
            )?;
        }
        Ok(())
    })?;
    let path = p("report.json");
    let mut w = create(&path)?;
    serde_json::to_writer_pretty(&mut w, report).map_err(|e| io_at(&path)(e.into()))?;
    w.write_all(b"\n").and_then(|()| w.flush()).map_err(io_at(&path))?;
    Ok(())
}

/// Streams the changed decisions to `changed.csv` and `changed.jsonl` in input order.
pub struct ChangeWriter {
    csv: (PathBuf, BufWriter<File>),
    jsonl: (PathBuf, BufWriter<File>),
}

impl ChangeWriter {
    pub fn create(dir: &Path) -> Result<ChangeWriter, BacktestError> {
        let (c, j) = (dir.join("changed.csv"), dir.join("changed.jsonl"));
        let mut csv = create(&c)?;
        line(
            &mut csv,
            &[
                &"line",
                &"event_id",
                &"event_type",
                &"event_time",
                &"baseline_action",
                &"candidate_action",
                &"baseline_score",
                &"candidate_score",
                &"label",
                &"rules_only_in_baseline",
                &"rules_only_in_candidate",
            ],
        )
        .map_err(io_at(&c))?;
        let jsonl = create(&j)?;
        Ok(ChangeWriter { csv: (c, csv), jsonl: (j, jsonl) })
    }

    pub fn write(&mut self, c: &Change) -> io::Result<()> {
        line(
            &mut self.csv.1,
            &[
                &c.line,
                &c.event_id,
                &c.event_type,
                &c.event_time,
                &c.baseline_action,
                &c.candidate_action,
                &c.baseline_score,
                &c.candidate_score,
                &c.label,
                &c.rules_only_in_baseline.join(";"),
                &c.rules_only_in_candidate.join(";"),
            ],
        )?;
        serde_json::to_writer(&mut self.jsonl.1, c)?;
        self.jsonl.1.write_all(b"\n")
    }

    pub fn finish(mut self) -> Result<(), BacktestError> {
        self.csv.1.flush().map_err(io_at(&self.csv.0))?;
        self.jsonl.1.flush().map_err(io_at(&self.jsonl.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        let rate: Option<f64> = None;
        line(&mut out, &[&"plain", &"a,b", &"say \"hi\"", &7u64, &-3i64, &Some(0.25), &rate]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "plain,\"a,b\",\"say \"\"hi\"\"\",7,-3,0.25,\n");
    }
}
