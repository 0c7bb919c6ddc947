//! Streaming accumulation of [`Row`]s into the [`Report`]: counts only,
//! except the (score, label) pairs of labelled events that AUC and KS need.
//! Every table is built from ordered maps or in input order, so the same
//! inputs give the same report.

use std::collections::{BTreeMap, BTreeSet};

use riskd_core::{Action, Versions};
use riskd_pipeline::train::{auc, ks};
use riskd_rules::{Mode, RuleInfo};
use serde::Serialize;

use crate::run::{Row, SideOutcome, SIDES};

/// Score buckets are this many points wide.
pub const SCORE_BUCKET: f64 = 20.0;
/// Rules listed in `top_rules`.
pub const TOP_RULES: usize = 20;

/// A count with how many of it were labelled, and bad.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub count: u64,
    pub labelled: u64,
    pub bad: u64,
}

impl Cell {
    fn add(&mut self, label: Option<bool>) {
        self.count += 1;
        if let Some(bad) = label {
            self.labelled += 1;
            self.bad += u64::from(bad);
        }
    }

    pub fn unlabelled(&self) -> u64 {
        self.count - self.labelled
    }

    pub fn bad_rate(&self) -> Option<f64> {
        ratio(self.bad, self.labelled)
    }
}

/// `a / b` rounded to 6 decimals; `None` when `b` is 0.
pub fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| round6(a as f64 / b as f64))
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn opt_round(v: f64) -> Option<f64> {
    v.is_finite().then(|| round6(v))
}

const APPLICATION_ACTIONS: [Action; 3] = [Action::Approve, Action::Review, Action::Reject];
const OTHER_ACTIONS: [Action; 2] = [Action::Pass, Action::Alert];

#[derive(Default)]
struct Day {
    decisions: u64,
    applications: u64,
    actions: [u64; 5],
    approved: Cell,
}

struct SideAcc {
    dead_letters: BTreeMap<&'static str, u64>,
    actions: [Cell; 5],
    applications: Cell,
    others: u64,
    decided: Cell,
    scores: BTreeMap<i64, Cell>,
    /// Per model: probabilities and labels of labelled events it scored.
    models: BTreeMap<String, (Vec<f64>, Vec<f32>)>,
    rules: Vec<Cell>,
    /// `overlap[a * n + b]` (a <= b): events both rules hit.
    overlap: Vec<u64>,
    daily: BTreeMap<String, Day>,
}

impl SideAcc {
    fn new(rules: usize) -> SideAcc {
        SideAcc {
            dead_letters: BTreeMap::new(),
            actions: [Cell::default(); 5],
            applications: Cell::default(),
            others: 0,
            decided: Cell::default(),
            scores: BTreeMap::new(),
            models: BTreeMap::new(),
            rules: vec![Cell::default(); rules],
            overlap: vec![0; rules * rules],
            daily: BTreeMap::new(),
        }
    }
}

/// Collects rows into the report's counts.
pub struct Collector {
    catalogs: [Vec<RuleInfo>; 2],
    sides: [SideAcc; 2],
    inputs: u64,
    labelled_inputs: u64,
    changed: Cell,
    more_severe: u64,
    less_severe: u64,
    swap: BTreeMap<(&'static str, &'static str), Cell>,
    by_rule: BTreeMap<(String, &'static str), Cell>,
    daily_changed: BTreeMap<String, u64>,
}

/// A changed decision, for the list of changes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub line: u64,
    pub event_id: String,
    pub event_type: String,
    pub event_time: String,
    pub baseline_action: &'static str,
    pub candidate_action: &'static str,
    pub baseline_score: Option<f64>,
    pub candidate_score: Option<f64>,
    pub label: &'static str,
    /// Active rules that fired only in the baseline / only in the candidate.
    pub rules_only_in_baseline: Vec<String>,
    pub rules_only_in_candidate: Vec<String>,
}

pub fn label_name(label: Option<bool>) -> &'static str {
    match label {
        Some(true) => "bad",
        Some(false) => "good",
        None => "unlabelled",
    }
}

/// What the rules attribution says when no active rule hit differs.
pub const NO_RULE_DIFFERENCE: &str = "(no rule difference)";

impl Collector {
    pub fn new(catalogs: [Vec<RuleInfo>; 2]) -> Collector {
        let sides = [SideAcc::new(catalogs[0].len()), SideAcc::new(catalogs[1].len())];
        Collector {
            catalogs,
            sides,
            inputs: 0,
            labelled_inputs: 0,
            changed: Cell::default(),
            more_severe: 0,
            less_severe: 0,
            swap: BTreeMap::new(),
            by_rule: BTreeMap::new(),
            daily_changed: BTreeMap::new(),
        }
    }

    /// Adds one row; returns its change when the two actions differ.
    pub fn add(&mut self, row: &Row) -> Option<Change> {
        self.inputs += 1;
        self.labelled_inputs += u64::from(row.label.is_some());
        let day = row.event_time.as_deref().map(|t| t.get(..10).unwrap_or(t).to_string());
        for (side, acc) in self.sides.iter_mut().enumerate() {
            let d = match &row.sides[side] {
                SideOutcome::DeadLetter(reason) => {
                    *acc.dead_letters.entry(reason.as_str()).or_default() += 1;
                    continue;
                }
                SideOutcome::Decided(d) => d,
            };
            let is_app = row.event_type.is_some_and(|k| k.is_application());
            acc.decided.add(row.label);
            acc.actions[d.action as usize].add(row.label);
            if is_app {
                acc.applications.add(row.label);
            } else {
                acc.others += 1;
            }
            if let Some(score) = d.score {
                let bucket = ((score / SCORE_BUCKET).floor() * SCORE_BUCKET) as i64;
                acc.scores.entry(bucket).or_default().add(row.label);
            }
            if let Some(bad) = row.label {
                for (name, p) in &d.models {
                    let m = acc.models.entry(name.clone()).or_default();
                    m.0.push(*p);
                    m.1.push(if bad { 1.0 } else { 0.0 });
                }
            }
            let n = acc.rules.len();
            for (i, &a) in d.hits.iter().enumerate() {
                acc.rules[a as usize].add(row.label);
                // The diagonal counts each rule's own hits.
                for &b in &d.hits[i..] {
                    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                    acc.overlap[lo as usize * n + hi as usize] += 1;
                }
            }
            if let Some(day) = &day {
                if !acc.daily.contains_key(day) {
                    acc.daily.insert(day.clone(), Day::default());
                }
                let Some(e) = acc.daily.get_mut(day) else { continue };
                e.decisions += 1;
                e.actions[d.action as usize] += 1;
                if is_app {
                    e.applications += 1;
                    if d.action == Action::Approve {
                        e.approved.add(row.label);
                    }
                }
            }
        }
        let (a, b) = (&row.sides[0], &row.sides[1]);
        let names = (a.action_name(), b.action_name());
        self.swap.entry(names).or_default().add(row.label);
        if names.0 == names.1 {
            return None;
        }
        self.changed.add(row.label);
        if let Some(day) = &day {
            match self.daily_changed.get_mut(day) {
                Some(n) => *n += 1,
                None => {
                    self.daily_changed.insert(day.clone(), 1);
                }
            }
        }
        let (mut only_base, mut only_cand) = (Vec::new(), Vec::new());
        if let (Some(x), Some(y)) = (a.decided(), b.decided()) {
            match y.action.severity().cmp(&x.action.severity()) {
                std::cmp::Ordering::Greater => self.more_severe += 1,
                std::cmp::Ordering::Less => self.less_severe += 1,
                std::cmp::Ordering::Equal => {}
            }
            let active = |side: usize, hits: &[u32]| -> BTreeSet<String> {
                hits.iter()
                    .map(|&h| &self.catalogs[side][h as usize])
                    .filter(|r| r.mode == Mode::Active)
                    .map(|r| r.id.clone())
                    .collect()
            };
            let (hx, hy) = (active(0, &x.hits), active(1, &y.hits));
            only_base = hx.difference(&hy).cloned().collect();
            only_cand = hy.difference(&hx).cloned().collect();
        }
        for id in &only_base {
            self.by_rule.entry((id.clone(), SIDES[0])).or_default().add(row.label);
        }
        for id in &only_cand {
            self.by_rule.entry((id.clone(), SIDES[1])).or_default().add(row.label);
        }
        if only_base.is_empty() && only_cand.is_empty() {
            self.by_rule.entry((NO_RULE_DIFFERENCE.to_string(), "neither")).or_default().add(row.label);
        }
        let score = |s: &SideOutcome| s.decided().and_then(|d| d.score);
        Some(Change {
            line: row.line,
            event_id: row.event_id.clone().unwrap_or_default(),
            event_type: row.event_type.map_or("", |k| k.as_str()).to_string(),
            event_time: row.event_time.clone().unwrap_or_default(),
            baseline_action: names.0,
            candidate_action: names.1,
            baseline_score: score(a),
            candidate_score: score(b),
            label: label_name(row.label),
            rules_only_in_baseline: only_base,
            rules_only_in_candidate: only_cand,
        })
    }

    /// The report; `labels_read` is the size of the labels file.
    pub fn finish(self, input: &str, labels_read: usize, versions: [Versions; 2], shared_intake: bool) -> Report {
        let configurations = [0, 1].map(|i| side_report(SIDES[i], &self.sides[i], &self.catalogs[i], &versions[i]));
        let c = &configurations;
        let diff = |f: fn(&SideReport) -> Option<f64>| match (f(&c[0]), f(&c[1])) {
            (Some(a), Some(b)) => Some(round6(b - a)),
            _ => None,
        };
        let mut top_rules: Vec<RuleChange> = self
            .by_rule
            .iter()
            .map(|((id, side), cell)| RuleChange {
                rule_id: id.clone(),
                fired_only_in: side,
                changed: cell.count,
                labelled: cell.labelled,
                bad: cell.bad,
            })
            .collect();
        top_rules.sort_by(|a, b| b.changed.cmp(&a.changed).then_with(|| a.rule_id.cmp(&b.rule_id)));
        top_rules.truncate(TOP_RULES);
        let difference = Difference {
            changed: self.changed.count,
            changed_labelled: self.changed.labelled,
            changed_bad: self.changed.bad,
            more_severe: self.more_severe,
            less_severe: self.less_severe,
            approval_rate_change: diff(|s| s.approval_rate),
            review_rate_change: diff(|s| s.review_rate),
            reject_rate_change: diff(|s| s.reject_rate),
            alert_rate_change: diff(|s| s.alert_rate),
            bad_rate_approved_change: diff(|s| s.bad_rate_approved),
            swap: self
                .swap
                .iter()
                .map(|(&(b, c), cell)| SwapRow {
                    baseline: b,
                    candidate: c,
                    count: cell.count,
                    labelled: cell.labelled,
                    bad: cell.bad,
                    unlabelled: cell.unlabelled(),
                })
                .collect(),
            top_rules,
        };
        let mut days: BTreeSet<&String> = self.sides[0].daily.keys().collect();
        days.extend(self.sides[1].daily.keys());
        let mut daily = Vec::new();
        for day in days {
            for (i, acc) in self.sides.iter().enumerate() {
                let d = acc.daily.get(day);
                let get = |f: fn(&Day) -> u64| d.map_or(0, f);
                let apps = get(|d| d.applications);
                let others = get(|d| d.decisions - d.applications);
                daily.push(DayRow {
                    day: day.clone(),
                    configuration: SIDES[i],
                    decisions: get(|d| d.decisions),
                    applications: apps,
                    approval_rate: ratio(get(|d| d.actions[Action::Approve as usize]), apps),
                    review_rate: ratio(get(|d| d.actions[Action::Review as usize]), apps),
                    reject_rate: ratio(get(|d| d.actions[Action::Reject as usize]), apps),
                    alert_rate: ratio(get(|d| d.actions[Action::Alert as usize]), others),
                    approved_labelled: get(|d| d.approved.labelled),
                    bad_rate_approved: d.and_then(|d| d.approved.bad_rate()),
                    changed: self.daily_changed.get(day).copied().unwrap_or(0),
                });
            }
        }
        let apps_labelled = self.sides[0].applications.labelled;
        Report {
            input: input.to_string(),
            inputs: self.inputs,
            shared_intake,
            labels: LabelSummary {
                labels_read: labels_read as u64,
                inputs_labelled: self.labelled_inputs,
                labels_without_input: (labels_read as u64).saturating_sub(self.labelled_inputs),
                applications_labelled: apps_labelled,
                applications_unlabelled: self.sides[0].applications.unlabelled(),
            },
            configurations,
            difference,
            daily,
        }
    }
}

fn side_report(name: &'static str, acc: &SideAcc, catalog: &[RuleInfo], versions: &Versions) -> SideReport {
    let apps = acc.applications.count;
    let mut actions = Vec::new();
    for (group, list, total) in
        [("application", &APPLICATION_ACTIONS[..], apps), ("other", &OTHER_ACTIONS[..], acc.others)]
    {
        for &a in list {
            let c = acc.actions[a as usize];
            actions.push(ActionRow {
                group,
                action: a.as_str(),
                count: c.count,
                rate: ratio(c.count, total),
                labelled: c.labelled,
                bad: c.bad,
                unlabelled: c.unlabelled(),
                bad_rate: c.bad_rate(),
            });
        }
    }
    let scores = acc
        .scores
        .iter()
        .map(|(&low, c)| ScoreRow {
            low,
            high: low + SCORE_BUCKET as i64,
            count: c.count,
            labelled: c.labelled,
            bad: c.bad,
            bad_rate: c.bad_rate(),
        })
        .collect();
    let models = acc
        .models
        .iter()
        .map(|(m, (p, l))| {
            let a = auc(p, l);
            let bad = l.iter().filter(|&&x| x > 0.5).count() as u64;
            let has_both = bad > 0 && bad < l.len() as u64;
            ModelRow {
                model: m.clone(),
                labelled: l.len() as u64,
                bad,
                auc: opt_round(a),
                ks: if has_both { opt_round(ks(p, l)) } else { None },
                gini: opt_round(2.0 * a - 1.0),
            }
        })
        .collect();
    let base_bad_rate = acc.decided.bad_rate();
    let rules = catalog
        .iter()
        .zip(&acc.rules)
        .map(|(r, c)| {
            let precision = c.bad_rate();
            RuleRow {
                rule_id: r.id.clone(),
                stage: r.stage.clone(),
                mode: match r.mode {
                    Mode::Active => "active",
                    Mode::Shadow => "shadow",
                    Mode::Disabled => "disabled",
                },
                hits: c.count,
                hit_rate: ratio(c.count, acc.decided.count),
                labelled_hits: c.labelled,
                bad_hits: c.bad,
                precision,
                lift: match (precision, base_bad_rate) {
                    (Some(p), Some(b)) if b > 0.0 => Some(round6(p / b)),
                    _ => None,
                },
            }
        })
        .collect();
    let n = catalog.len();
    let mut overlap = Vec::new();
    for a in 0..n {
        for b in a..n {
            let both = acc.overlap[a * n + b];
            if both > 0 {
                overlap.push(OverlapRow { rule_a: catalog[a].id.clone(), rule_b: catalog[b].id.clone(), both });
            }
        }
    }
    let rate = |a: Action, total: u64| ratio(acc.actions[a as usize].count, total);
    SideReport {
        configuration: name,
        versions: versions.clone(),
        decisions: acc.decided.count,
        dead_letters: acc.dead_letters.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        applications: apps,
        approval_rate: rate(Action::Approve, apps),
        review_rate: rate(Action::Review, apps),
        reject_rate: rate(Action::Reject, apps),
        alert_rate: rate(Action::Alert, acc.others),
        bad_rate_labelled: acc.applications.bad_rate(),
        bad_rate_approved: acc.actions[Action::Approve as usize].bad_rate(),
        actions,
        scores,
        models,
        rules,
        overlap,
    }
}

/// Everything the tables and the HTML page show.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub input: String,
    pub inputs: u64,
    /// One intake (decode and feature state) fed both configurations.
    pub shared_intake: bool,
    pub labels: LabelSummary,
    pub configurations: [SideReport; 2],
    pub difference: Difference,
    pub daily: Vec<DayRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelSummary {
    pub labels_read: u64,
    pub inputs_labelled: u64,
    /// Labels whose event id is not in the input.
    pub labels_without_input: u64,
    pub applications_labelled: u64,
    pub applications_unlabelled: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SideReport {
    pub configuration: &'static str,
    pub versions: Versions,
    pub decisions: u64,
    pub dead_letters: BTreeMap<String, u64>,
    pub applications: u64,
    /// Of decided applications.
    pub approval_rate: Option<f64>,
    pub review_rate: Option<f64>,
    pub reject_rate: Option<f64>,
    /// Of decided events other than applications.
    pub alert_rate: Option<f64>,
    /// Bad share of labelled applications.
    pub bad_rate_labelled: Option<f64>,
    /// Bad share of labelled approved applications.
    pub bad_rate_approved: Option<f64>,
    pub actions: Vec<ActionRow>,
    pub scores: Vec<ScoreRow>,
    pub models: Vec<ModelRow>,
    pub rules: Vec<RuleRow>,
    pub overlap: Vec<OverlapRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionRow {
    pub group: &'static str,
    pub action: &'static str,
    pub count: u64,
    pub rate: Option<f64>,
    pub labelled: u64,
    pub bad: u64,
    pub unlabelled: u64,
    pub bad_rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreRow {
    pub low: i64,
    pub high: i64,
    pub count: u64,
    pub labelled: u64,
    pub bad: u64,
    pub bad_rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub labelled: u64,
    pub bad: u64,
    pub auc: Option<f64>,
    pub ks: Option<f64>,
    pub gini: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleRow {
    pub rule_id: String,
    pub stage: String,
    pub mode: &'static str,
    pub hits: u64,
    pub hit_rate: Option<f64>,
    pub labelled_hits: u64,
    pub bad_hits: u64,
    /// Bad share of labelled events the rule hit.
    pub precision: Option<f64>,
    /// Precision over the bad share of all labelled events.
    pub lift: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OverlapRow {
    pub rule_a: String,
    pub rule_b: String,
    pub both: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub changed: u64,
    pub changed_labelled: u64,
    pub changed_bad: u64,
    pub more_severe: u64,
    pub less_severe: u64,
    pub approval_rate_change: Option<f64>,
    pub review_rate_change: Option<f64>,
    pub reject_rate_change: Option<f64>,
    pub alert_rate_change: Option<f64>,
    pub bad_rate_approved_change: Option<f64>,
    /// Baseline action x candidate action, unchanged pairs included.
    pub swap: Vec<SwapRow>,
    pub top_rules: Vec<RuleChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SwapRow {
    pub baseline: &'static str,
    pub candidate: &'static str,
    pub count: u64,
    pub labelled: u64,
    pub bad: u64,
    pub unlabelled: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleChange {
    pub rule_id: String,
    /// `baseline` or `candidate`: where the rule fired (as an active rule)
    /// and the other did not; `neither` for changes no rule hit explains.
    pub fired_only_in: &'static str,
    pub changed: u64,
    pub labelled: u64,
    pub bad: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayRow {
    pub day: String,
    pub configuration: &'static str,
    pub decisions: u64,
    pub applications: u64,
    pub approval_rate: Option<f64>,
    pub review_rate: Option<f64>,
    pub reject_rate: Option<f64>,
    pub alert_rate: Option<f64>,
    pub approved_labelled: u64,
    pub bad_rate_approved: Option<f64>,
    /// Decisions whose action differs between the configurations (same for both rows).
    pub changed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Decided;
    use riskd_core::{EventKind, RejectReason};

    fn rule(id: &str, mode: Mode) -> RuleInfo {
        RuleInfo {
            id: id.into(),
            stage: "s".into(),
            mode,
            reason: "R".into(),
            severity: 1,
            action: Some(Action::Review),
            score: None,
        }
    }

    fn decided(action: Action, score: f64, hits: &[u32]) -> SideOutcome {
        SideOutcome::Decided(Decided {
            action,
            score: Some(score),
            models: vec![("m".into(), 1.0 - score / 1000.0)],
            hits: hits.to_vec(),
        })
    }

    fn row(n: u64, label: Option<bool>, a: SideOutcome, b: SideOutcome) -> Row {
        Row {
            line: n,
            event_id: Some(format!("ev-{n}")),
            event_type: Some(EventKind::LoanApplication),
            event_time: Some(format!("2026-10-0{}T00:00:00.000Z", 1 + n % 2)),
            label,
            sides: [a, b],
            records: [None, None],
        }
    }

    #[test]
    fn counts_changes_and_attributions_of_hand_made_rows() {
        // Rules: A active, B active, S shadow (same catalog on both sides).
        let cat = vec![rule("A", Mode::Active), rule("B", Mode::Active), rule("S", Mode::Shadow)];
        let mut c = Collector::new([cat.clone(), cat]);
        use Action::*;
        // 1: unchanged approve, unlabelled.
        assert!(c.add(&row(1, None, decided(Approve, 650.0, &[]), decided(Approve, 650.0, &[]))).is_none());
        // 2: candidate's rule B sends a bad one to review; shadow S fires on both.
        let ch = c.add(&row(2, Some(true), decided(Approve, 560.0, &[2]), decided(Review, 560.0, &[1, 2]))).unwrap();
        assert_eq!((ch.baseline_action, ch.candidate_action, ch.label), ("approve", "review", "bad"));
        assert_eq!((ch.rules_only_in_baseline.len(), ch.rules_only_in_candidate.clone()), (0, vec!["B".to_string()]));
        // 3: a score change alone (same hits) rejects a good one.
        let ch = c.add(&row(3, Some(false), decided(Review, 590.0, &[0]), decided(Reject, 500.0, &[0]))).unwrap();
        assert!(ch.rules_only_in_baseline.is_empty() && ch.rules_only_in_candidate.is_empty());
        // 4: dead-lettered by both; 5: dead-lettered by the candidate only.
        let dead = || SideOutcome::DeadLetter(RejectReason::Oversize);
        assert!(c.add(&row(4, None, dead(), dead())).is_none());
        let ch = c.add(&row(5, None, decided(Approve, 700.0, &[]), dead())).unwrap();
        assert_eq!(ch.candidate_action, "dead_letter");

        let r = c.finish("in.jsonl", 3, [Versions::default(), Versions::default()], true);
        assert_eq!(r.inputs, 5);
        assert_eq!(r.labels.labels_without_input, 1);
        assert_eq!((r.labels.applications_labelled, r.labels.applications_unlabelled), (2, 2));
        let d = &r.difference;
        assert_eq!((d.changed, d.changed_labelled, d.changed_bad), (3, 2, 1));
        assert_eq!((d.more_severe, d.less_severe), (2, 0));
        let swap: Vec<_> = d.swap.iter().map(|s| (s.baseline, s.candidate, s.count, s.bad, s.unlabelled)).collect();
        assert_eq!(
            swap,
            vec![
                ("approve", "approve", 1, 0, 1),
                ("approve", "dead_letter", 1, 0, 1),
                ("approve", "review", 1, 1, 0),
                ("dead_letter", "dead_letter", 1, 0, 1),
                ("review", "reject", 1, 0, 0),
            ]
        );
        let top: Vec<_> = d.top_rules.iter().map(|t| (t.rule_id.as_str(), t.fired_only_in, t.changed)).collect();
        assert_eq!(top, vec![(NO_RULE_DIFFERENCE, "neither", 2), ("B", "candidate", 1)]);

        let [b, cand] = &r.configurations;
        assert_eq!(b.decisions, 4);
        assert_eq!(cand.decisions, 3);
        assert_eq!(cand.dead_letters.get("oversize"), Some(&2));
        // Baseline: approve 3 of 4 applications; the one labelled approved one is bad.
        assert_eq!(b.approval_rate, Some(0.75));
        assert_eq!(b.bad_rate_approved, Some(1.0));
        assert_eq!(cand.approval_rate, Some(round6(1.0 / 3.0)));
        assert_eq!(d.approval_rate_change, Some(round6(round6(1.0 / 3.0) - 0.75)));
        // Rule B: one hit, labelled bad, in the candidate; lift = 1 / (1 of 2 labelled bad).
        let rb = cand.rules.iter().find(|x| x.rule_id == "B").unwrap();
        assert_eq!((rb.hits, rb.precision, rb.lift), (1, Some(1.0), Some(2.0)));
        let overlap: Vec<_> = cand.overlap.iter().map(|o| (o.rule_a.as_str(), o.rule_b.as_str(), o.both)).collect();
        assert_eq!(overlap, vec![("A", "A", 1), ("B", "B", 1), ("B", "S", 1), ("S", "S", 1)]);
        // Two labelled rows, one bad, perfectly ranked by the probability.
        assert_eq!(b.models[0].auc, Some(1.0));
        assert_eq!(r.daily.len(), 4);
        assert_eq!(r.daily.iter().map(|d| d.changed).sum::<u64>(), 2 * 3);
    }
}
