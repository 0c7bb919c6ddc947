//! Analyst tests: `rules/tests/*.toml`, each a list of `[[case]]` tables
//! giving an event type, input values and the expected outcome.
//!
//! A case is evaluated exactly as the engine would: the inputs become a
//! [`Source`], the rule set is evaluated, and the effective action (the
//! verdict's, or the default for the event type when nothing fired) is
//! compared with `expect_action`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use riskd_core::event::EventKind;
use riskd_core::fields::kinds_text;
use riskd_core::{Action, FieldType, Value};
use toml::Spanned;

use crate::config::{parse_document, ConfigError, Fields, Item};
use crate::diag::{did_you_mean, suggest, AuthorError, Diagnostic, Diagnostics, SourceFile, Span};
use crate::ruleset::{Hit, RuleSet, Verdict};
use crate::schema::{Schema, Slot, Source};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum TestError {
    #[error("unknown name `{name}`")]
    UnknownName { name: String, suggestion: Option<String> },
    #[error("`{name}` is {}, but the value given is {found}", article(*.ty))]
    InputType { name: String, ty: FieldType, found: &'static str },
    #[error("`{name}` has no value on {kind} events")]
    NotOnKind { name: String, kind: &'static str, kinds: String },
    #[error("unknown rule `{id}`")]
    UnknownRule { id: String, suggestion: Option<String> },
    #[error(
        "a case needs at least one of `expect_action`, `expect_hits`, `expect_no_hits`, `expect_score_adjustment`"
    )]
    NoExpectation,
}

fn article(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Num => "a number",
        FieldType::Bool => "a bool",
        FieldType::Str => "a string",
        FieldType::Ip => "an ip (a quoted address)",
    }
}

impl AuthorError for TestError {
    fn code(&self) -> &'static str {
        match self {
            TestError::UnknownName { .. } => "E-UNKNOWN-NAME",
            TestError::InputType { .. } => "E-TEST-INPUT",
            TestError::NotOnKind { .. } => "E-NOT-AVAILABLE",
            TestError::UnknownRule { .. } => "E-UNKNOWN-RULE",
            TestError::NoExpectation => "E-MISSING-KEY",
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            TestError::UnknownName { suggestion, .. } | TestError::UnknownRule { suggestion, .. } => {
                did_you_mean(suggestion.clone())
            }
            TestError::NotOnKind { kinds, .. } => Some(format!("it has a value on: {kinds}")),
            TestError::InputType { ty: FieldType::Ip, .. } => Some("e.g. \"entity.ip\" = \"10.66.1.2\"".into()),
            _ => None,
        }
    }
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The test file as given (e.g. `rules/tests/velocity.toml`).
    pub file: String,
    pub line: usize,
    pub name: String,
    pub event_type: EventKind,
    /// What went wrong, one line per unmet expectation; empty when passed.
    pub failures: Vec<String>,
    /// The effective action: the verdict's, or the default for the event type.
    pub action: Action,
    pub score_adjustment: f64,
    pub hits: Vec<Hit>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The result of running every analyst test file.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    pub cases: Vec<CaseResult>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    pub fn all_passed(&self) -> bool {
        self.failed() == 0
    }

    /// One line per failure with expected vs actual and the hits, then a
    /// closing `N passed, N failed` line.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for c in &self.cases {
            if c.passed() {
                let _ = writeln!(out, "ok     {}:{}  {}", c.file, c.line, c.name);
                continue;
            }
            let _ = writeln!(out, "FAILED {}:{}  {}", c.file, c.line, c.name);
            for f in &c.failures {
                let _ = writeln!(out, "         {f}");
            }
            let _ = writeln!(
                out,
                "         event_type: {}, action: {}, score adjustment: {}",
                c.event_type,
                c.action.as_str(),
                c.score_adjustment
            );
            if c.hits.is_empty() {
                let _ = writeln!(out, "         hits: none");
            } else {
                let _ = writeln!(out, "         hits:");
                for h in &c.hits {
                    let what = match (h.action, h.score) {
                        (Some(a), _) => a.as_str().to_string(),
                        (None, Some(s)) => format!("score {s:+}"),
                        (None, None) => String::new(),
                    };
                    let shadow = if h.shadow { " (shadow)" } else { "" };
                    let _ = writeln!(
                        out,
                        "           {} [{}] {} {} severity {}{shadow}",
                        h.rule_id(),
                        h.stage(),
                        h.reason(),
                        what,
                        h.severity
                    );
                }
            }
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed(), self.failed());
        out
    }
}

/// Runs the analyst tests. `dir` is either the rules directory (then its
/// `tests/` folder is used) or a folder of test files; every `*.toml` file
/// in it is read, in name order (a missing folder is an empty report). Mistakes in the test files (unknown names,
/// wrong value types, unknown rule ids) are diagnostics, all collected.
pub fn run_tests(ruleset: &RuleSet, schema: &Schema, dir: &Path) -> Result<TestReport, Diagnostics> {
    let tests_dir = if dir.join("chain.toml").is_file() { dir.join("tests") } else { dir.to_path_buf() };
    let display_dir = tests_dir.display().to_string().trim_end_matches('/').to_string();
    let mut diags = Vec::new();
    let mut paths: Vec<_> = match std::fs::read_dir(&tests_dir) {
        Ok(rd) => {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect()
        }
        // No tests folder: nothing to run.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TestReport::default()),
        Err(e) => {
            diags.push(Diagnostic::for_file("E-IO", &display_dir, format!("cannot read the tests folder: {e}")));
            return Err(Diagnostics(diags));
        }
    };
    paths.sort();
    let rule_ids: Vec<&str> = ruleset.rules().iter().map(|r| r.id.as_str()).collect();
    let mut cases = Vec::new();
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let display = format!("{display_dir}/{name}");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::for_file("E-IO", &display, format!("cannot read {display}: {e}")));
                continue;
            }
        };
        let src = SourceFile::new(display, text);
        cases.extend(parse_cases(&src, schema, &rule_ids, &mut diags));
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics(diags));
    }
    let mut verdict = Verdict::default();
    let results = cases.into_iter().map(|c| run_case(ruleset, c, &mut verdict)).collect();
    Ok(TestReport { cases: results })
}

struct Case {
    file: String,
    line: usize,
    name: String,
    kind: EventKind,
    values: HashMap<Slot, Owned>,
    expect_action: Option<Action>,
    expect_hits: Vec<String>,
    expect_no_hits: Vec<String>,
    expect_score: Option<f64>,
}

#[derive(Debug, Clone)]
enum Owned {
    Num(f64),
    Bool(bool),
    Str(String),
    Ip(IpAddr),
}

struct CaseSource<'c> {
    kind: EventKind,
    values: &'c HashMap<Slot, Owned>,
}

impl Source for CaseSource<'_> {
    fn kind(&self) -> EventKind {
        self.kind
    }
    fn get(&self, slot: Slot) -> Value<'_> {
        match self.values.get(&slot) {
            None => Value::Missing,
            Some(Owned::Num(n)) => Value::Num(*n),
            Some(Owned::Bool(b)) => Value::Bool(*b),
            Some(Owned::Str(s)) => Value::Str(s),
            Some(Owned::Ip(ip)) => Value::Ip(*ip),
        }
    }
}

const CASE_KEYS: &[&str] = &[
    "name",
    "description",
    "event_type",
    "inputs",
    "expect_action",
    "expect_hits",
    "expect_no_hits",
    "expect_score_adjustment",
];

fn parse_cases(src: &SourceFile, schema: &Schema, rule_ids: &[&str], diags: &mut Vec<Diagnostic>) -> Vec<Case> {
    let mut out = Vec::new();
    let Some(doc) = parse_document(src, diags) else { return out };
    let mut top = Fields::new(src, 0..0, "a test file", doc, &["case"]);
    let cases = top.take("case");
    top.finish(diags);
    let tables = match cases.map(|c| (c.span(), c.into_inner())) {
        Some((_, Item::Array(items))) => items,
        Some((span, other)) => {
            let e = ConfigError::WrongType {
                key: "case".into(),
                expected: "a list of [[case]] tables",
                found: other.type_name(),
            };
            diags.push(Diagnostic::from_error(src, span, &e));
            return out;
        }
        None => return out,
    };
    for t in tables {
        let span = t.span();
        let Item::Table(entries) = t.into_inner() else { continue };
        let mut f = Fields::new(src, span.clone(), "a [[case]]", entries, CASE_KEYS);
        let name = f.str("name");
        let _ = f.opt_str("description");
        let kind = f.str("event_type").and_then(|(k, kspan)| match EventKind::parse(&k) {
            Some(kind) => Some(kind),
            None => {
                let suggestion = suggest(&k, EventKind::ALL.iter().map(|k| k.as_str()));
                f.error(kspan, ConfigError::UnknownEvent { name: k, suggestion });
                None
            }
        });
        let inputs = f.opt_table("inputs");
        let expect_action = f.opt_str("expect_action").and_then(|(a, aspan)| match Action::parse(&a) {
            Some(a) => Some((a, aspan)),
            None => {
                f.error(aspan, ConfigError::BadAction(a));
                None
            }
        });
        let expect_hits = f.opt_str_array("expect_hits");
        let expect_no_hits = f.opt_str_array("expect_no_hits");
        let expect_score = f.opt_num("expect_score_adjustment");
        let any_expectation =
            expect_action.is_some() || expect_hits.is_some() || expect_no_hits.is_some() || expect_score.is_some();
        let at = f.at.clone();
        f.finish(diags);
        let mut errors: Vec<(Span, TestError)> = Vec::new();
        if !any_expectation {
            errors.push((at, TestError::NoExpectation));
        }
        for (id, ispan) in expect_hits.iter().chain(expect_no_hits.iter()).flat_map(|(v, _)| v.iter()) {
            if !rule_ids.contains(&id.as_str()) {
                let suggestion = suggest(id, rule_ids.iter().copied());
                errors.push((ispan.clone(), TestError::UnknownRule { id: id.clone(), suggestion }));
            }
        }
        let mut values = HashMap::new();
        if let (Some((entries, _)), Some(kind)) = (inputs, kind) {
            for (k, v) in entries {
                match input_value(schema, kind, &k, &v) {
                    Ok((slot, val)) => {
                        values.insert(slot, val);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        // `event.type` follows from `event_type` unless given.
        if let (Some(info), Some(kind)) = (schema.get("event.type"), kind) {
            values.entry(info.slot).or_insert_with(|| Owned::Str(kind.as_str().to_string()));
        }
        let failed = !errors.is_empty();
        for (s, e) in errors {
            diags.push(Diagnostic::from_error(src, s, &e));
        }
        let (Some((name, _)), Some(kind), false) = (name, kind, failed) else { continue };
        out.push(Case {
            file: src.display.clone(),
            line: src.locate(span.start).0,
            name,
            kind,
            values,
            expect_action: expect_action.map(|a| a.0),
            expect_hits: expect_hits.map(|h| h.0.into_iter().map(|x| x.0).collect()).unwrap_or_default(),
            expect_no_hits: expect_no_hits.map(|h| h.0.into_iter().map(|x| x.0).collect()).unwrap_or_default(),
            expect_score: expect_score.map(|s| s.0),
        });
    }
    out
}

fn input_value(
    schema: &Schema,
    kind: EventKind,
    key: &Spanned<String>,
    v: &Spanned<Item>,
) -> Result<(Slot, Owned), (Span, TestError)> {
    let name = key.get_ref();
    let Some(info) = schema.get(name) else {
        let suggestion = suggest(name, schema.names());
        return Err((key.span(), TestError::UnknownName { name: name.clone(), suggestion }));
    };
    if info.kinds & kind.bit() == 0 {
        return Err((
            key.span(),
            TestError::NotOnKind { name: name.clone(), kind: kind.as_str(), kinds: kinds_text(info.kinds) },
        ));
    }
    let bad = || (v.span(), TestError::InputType { name: name.clone(), ty: info.ty, found: v.get_ref().type_name() });
    let val = match (info.ty, v.get_ref()) {
        (FieldType::Num, Item::Int(i)) => Owned::Num(*i as f64),
        (FieldType::Num, Item::Float(f)) => Owned::Num(*f),
        (FieldType::Bool, Item::Bool(b)) => Owned::Bool(*b),
        (FieldType::Str, Item::Str(s)) => Owned::Str(s.clone()),
        (FieldType::Ip, Item::Str(s)) => Owned::Ip(s.trim().parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    Ok((info.slot, val))
}

fn run_case(ruleset: &RuleSet, c: Case, verdict: &mut Verdict) -> CaseResult {
    let src = CaseSource { kind: c.kind, values: &c.values };
    ruleset.evaluate(&src, verdict);
    let action = verdict.action.unwrap_or_else(|| Action::default_for(c.kind));
    let mut failures = Vec::new();
    if let Some(want) = c.expect_action {
        if want != action {
            failures.push(format!("expected action {}, got {}", want.as_str(), action.as_str()));
        }
    }
    let hit = |id: &str| verdict.hits.iter().any(|h| h.rule_id() == id);
    for id in &c.expect_hits {
        if !hit(id) {
            failures.push(format!("expected {id} to fire, it did not"));
        }
    }
    for id in &c.expect_no_hits {
        if hit(id) {
            failures.push(format!("expected {id} not to fire, it did"));
        }
    }
    if let Some(want) = c.expect_score {
        if (want - verdict.score_adjustment).abs() > 1e-9 {
            failures.push(format!("expected score adjustment {want}, got {}", verdict.score_adjustment));
        }
    }
    CaseResult {
        file: c.file,
        line: c.line,
        name: c.name,
        event_type: c.kind,
        failures,
        action,
        score_adjustment: verdict.score_adjustment,
        hits: verdict.hits.clone(),
    }
}
