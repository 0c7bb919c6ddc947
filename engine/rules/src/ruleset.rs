//! Loading a rule set (chain, rule files, lists) and evaluating it.

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;

use riskd_core::event::{EventKind, KindMask, ALL_KINDS};
use riskd_core::version::ContentHasher;
use riskd_core::{Action, FieldType, Value};
use toml::Spanned;

use crate::compile::{check_action, CompileError};
use crate::config::{map_span, parse_document, string_offsets, ConfigError, Entries, Fields, Item};
use crate::diag::{suggest, Diagnostic, Diagnostics, SourceFile, Span};
use crate::eval::{BoolExpr, ExprValue, Typed};
use crate::lists::{self, Lists};
use crate::schema::{Schema, Slot, Source};
use crate::typecheck::{Checker, ConstValue, Constants};
use crate::{lexer, parser};

/// How a stage turns its rules' hits into one outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// The first active rule (file order) that fires decides; later active
    /// rules are not evaluated. Shadow rules are always evaluated.
    FirstMatch,
    /// Every rule is evaluated; the hit with the highest severity decides
    /// (ties: the more severe action, then file order).
    HighestSeverity,
    /// Every rule is evaluated; the `score` of active hits adds up.
    ScoreSum,
}

impl Combine {
    pub fn as_str(self) -> &'static str {
        match self {
            Combine::FirstMatch => "first_match",
            Combine::HighestSeverity => "highest_severity",
            Combine::ScoreSum => "score_sum",
        }
    }

    fn parse(s: &str) -> Option<Combine> {
        match s {
            "first_match" => Some(Combine::FirstMatch),
            "highest_severity" => Some(Combine::HighestSeverity),
            "score_sum" => Some(Combine::ScoreSum),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Active,
    Shadow,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Action(Action),
    Score(f64),
}

struct Rule {
    labels: Arc<HitLabels>,
    severity: u8,
    shadow: bool,
    events: KindMask,
    outcome: Outcome,
    cond: BoolExpr,
}

struct Stage {
    name: Arc<str>,
    combine: Combine,
    rules: Vec<Rule>,
}

/// A loaded, compiled rule set. Immutable; `Send + Sync`; share it behind an
/// `Arc` (or an `ArcSwap` for hot reload).
pub struct RuleSet {
    stages: Vec<Stage>,
    version: String,
    lists_version: String,
    rule_count: usize,
    lists: Lists,
    warnings: Diagnostics,
    /// Every rule id with its stage and mode, disabled rules included.
    catalog: Vec<RuleInfo>,
    /// `[constants]` of chain.toml, for expressions compiled later.
    constants: Constants,
}

/// What a rule set holds, for tools (`riskd rules`), tests and messages.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleInfo {
    pub id: String,
    pub stage: String,
    pub mode: Mode,
    pub reason: String,
    pub severity: u8,
    pub action: Option<Action>,
    pub score: Option<f64>,
}

/// The result of evaluating every stage for one event. Reused across events.
#[derive(Default, Debug, Clone)]
pub struct Verdict {
    /// Most severe action across stages (`Action::severity`); `None` when no
    /// active rule with an action fired.
    pub action: Option<Action>,
    /// Sum of the `score` of active hits in score_sum stages.
    pub score_adjustment: f64,
    /// Active and shadow hits, in stage order; within a stage by descending
    /// severity, then file order.
    pub hits: Vec<Hit>,
}

/// The names a hit reports, shared by every hit of one rule so that
/// recording a hit costs one reference count, not three.
#[derive(Debug, PartialEq, Eq)]
pub struct HitLabels {
    pub rule_id: Box<str>,
    pub stage: Box<str>,
    pub reason: Box<str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub labels: Arc<HitLabels>,
    pub action: Option<Action>,
    pub score: Option<f64>,
    pub shadow: bool,
    pub severity: u8,
}

impl Hit {
    pub fn rule_id(&self) -> &str {
        &self.labels.rule_id
    }
    pub fn stage(&self) -> &str {
        &self.labels.stage
    }
    pub fn reason(&self) -> &str {
        &self.labels.reason
    }
}

/// A compiled stand-alone expression, e.g. for an analyst's ad-hoc query.
/// Evaluating it allocates (it returns owned values): not for the hot path.
pub struct Expression {
    expr: Typed,
}

impl Expression {
    pub fn evaluate<S: Source>(&self, src: &S) -> ExprValue {
        self.expr.value(src)
    }

    pub fn ty(&self) -> FieldType {
        self.expr.ty()
    }
}

impl RuleSet {
    /// Loads `dir/chain.toml`, the rule files it names and `dir/lists/*.txt`.
    /// Every error is collected; warnings alone do not fail the load (see
    /// [`RuleSet::warnings`]).
    pub fn load(dir: &Path, schema: &Schema) -> Result<RuleSet, Diagnostics> {
        Loader::new(dir, schema).load()
    }

    /// Content hash of chain.toml and the rule files (in chain order).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Content hash of the list files.
    pub fn lists_version(&self) -> &str {
        &self.lists_version
    }

    /// Rules compiled into the evaluator: active and shadow (not disabled).
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Warnings found while loading (e.g. a condition that is always false).
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    /// Every rule, disabled ones included, in stage and file order.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.catalog
    }

    /// Stage names and combine modes, in chain order.
    pub fn stages(&self) -> impl Iterator<Item = (&str, Combine)> {
        self.stages.iter().map(|s| (&*s.name, s.combine))
    }

    /// Compiles one expression against the schema and this rule set's lists.
    /// Availability per event kind is not checked.
    pub fn expression(&self, text: &str, schema: &Schema) -> Result<Expression, Diagnostics> {
        let src = SourceFile::new("<expression>".into(), text.to_string());
        let mut diags = Vec::new();
        let expr = compile_expr(
            &src,
            text,
            None,
            &(0..text.len()),
            &mut Checker::new(schema, &self.lists, 0).with_constants(&self.constants),
            &mut diags,
            |c, e| c.check(e),
        );
        match expr {
            Some(expr) if diags.is_empty() => Ok(Expression { expr: expr.fold() }),
            _ => Err(Diagnostics(diags)),
        }
    }

    /// Evaluates every stage for one event. `out` is cleared and refilled;
    /// nothing is allocated unless `out.hits` must grow.
    pub fn evaluate<S: Source>(&self, src: &S, out: &mut Verdict) {
        out.action = None;
        out.score_adjustment = 0.0;
        out.hits.clear();
        let bit = src.kind().bit();
        let mut staged = Staged { inner: src, results: [(None, false); MAX_STAGE_RESULTS] };
        for (si, stage) in self.stages.iter().enumerate() {
            let src = &staged;
            let start = out.hits.len();
            // (severity, action) of the hit that decides the stage.
            let mut decided: Option<(u8, Action)> = None;
            let mut matched = false;
            for rule in &stage.rules {
                if rule.events & bit == 0 || (matched && !rule.shadow) {
                    continue;
                }
                if rule.cond.eval(src) != Some(true) {
                    continue;
                }
                let (action, score) = match rule.outcome {
                    Outcome::Action(a) => (Some(a), None),
                    Outcome::Score(s) => (None, Some(s)),
                };
                out.hits.push(Hit {
                    labels: rule.labels.clone(),
                    action,
                    score,
                    shadow: rule.shadow,
                    severity: rule.severity,
                });
                if rule.shadow {
                    continue;
                }
                match (stage.combine, rule.outcome) {
                    (Combine::FirstMatch, Outcome::Action(a)) => {
                        matched = true;
                        decided = Some((rule.severity, a));
                    }
                    (Combine::HighestSeverity, Outcome::Action(a)) => {
                        let better = match decided {
                            None => true,
                            Some((sev, cur)) => {
                                rule.severity > sev || (rule.severity == sev && a.severity() > cur.severity())
                            }
                        };
                        if better {
                            decided = Some((rule.severity, a));
                        }
                    }
                    (_, Outcome::Score(s)) => out.score_adjustment += s,
                    (Combine::ScoreSum, Outcome::Action(_)) => {}
                }
            }
            sort_by_severity(&mut out.hits[start..]);
            if si < MAX_STAGE_RESULTS {
                let fired = out.hits[start..].iter().any(|h| !h.shadow);
                staged.results[si] = (decided.map(|(_, a)| a), fired);
            }
            if let Some((_, a)) = decided {
                if out.action.is_none_or(|cur| a.severity() > cur.severity()) {
                    out.action = Some(a);
                }
            }
        }
    }
}

/// Stages whose results later stages can read (`stage.<name>.action` / `.fired`).
const MAX_STAGE_RESULTS: usize = 16;
/// Slots of stage results: two per stage, far above any slot the engine uses.
const STAGE_RESULT_BASE: u32 = u32::MAX - 2 * MAX_STAGE_RESULTS as u32;

/// The engine's source plus the outcomes of the stages evaluated so far.
struct Staged<'s, S> {
    inner: &'s S,
    /// Per stage: the action it decided (if any) and whether an active rule fired.
    results: [(Option<Action>, bool); MAX_STAGE_RESULTS],
}

impl<S: Source> Source for Staged<'_, S> {
    fn kind(&self) -> EventKind {
        self.inner.kind()
    }

    #[inline]
    fn get(&self, slot: Slot) -> Value<'_> {
        if slot.0 < STAGE_RESULT_BASE {
            return self.inner.get(slot);
        }
        let i = (slot.0 - STAGE_RESULT_BASE) as usize;
        let (action, fired) = self.results[i / 2];
        if i % 2 == 1 {
            Value::Bool(fired)
        } else {
            action.map_or(Value::Missing, |a| Value::Str(a.as_str()))
        }
    }
}

/// Stable insertion sort by descending severity (a stage has few hits, and
/// the std stable sort may allocate).
fn sort_by_severity(hits: &mut [Hit]) {
    for i in 1..hits.len() {
        let mut j = i;
        while j > 0 && hits[j - 1].severity < hits[j].severity {
            hits.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Lex, parse, type-check one expression held in a TOML string, mapping
/// every error into the file.
fn compile_expr<T>(
    src: &SourceFile,
    text: &str,
    offsets: Option<&[usize]>,
    value_span: &Span,
    checker: &mut Checker<'_>,
    diags: &mut Vec<Diagnostic>,
    check: impl FnOnce(&mut Checker<'_>, &parser::Expr) -> Option<T>,
) -> Option<T> {
    let at = |s: &Span| map_span(offsets, value_span, s);
    let tokens = match lexer::lex(text) {
        Ok(t) => t,
        Err((s, e)) => {
            diags.push(Diagnostic::from_error(src, at(&s), &e));
            return None;
        }
    };
    let ast = match parser::parse(&tokens) {
        Ok(a) => a,
        Err((s, e)) => {
            diags.push(Diagnostic::from_error(src, at(&s), &e));
            return None;
        }
    };
    let out = check(checker, &ast);
    let errors = std::mem::take(&mut checker.errors);
    let failed = !errors.is_empty();
    for (s, e) in errors {
        diags.push(Diagnostic::from_error(src, at(&s), &e));
    }
    if failed {
        None
    } else {
        out
    }
}

struct StageDraft {
    name: String,
    combine: Option<Combine>,
    files: Vec<(String, Span)>,
}

struct RuleDraft {
    file: usize,
    id: String,
    id_span: Span,
    mode: Mode,
    events: KindMask,
    outcome: Option<(Outcome, Span)>,
    severity: u8,
    reason: String,
    cond: Option<BoolExpr>,
    when_span: Span,
}

struct Loader<'a> {
    dir: &'a Path,
    display_dir: String,
    schema: &'a Schema,
    diags: Vec<Diagnostic>,
    files: Vec<SourceFile>,
    constants: Constants,
}

impl<'a> Loader<'a> {
    fn new(dir: &'a Path, schema: &'a Schema) -> Self {
        let display_dir = dir.display().to_string().trim_end_matches('/').to_string();
        Loader { dir, display_dir, schema, diags: Vec::new(), files: Vec::new(), constants: Constants::new() }
    }

    fn display(&self, rel: &str) -> String {
        if self.display_dir.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.display_dir)
        }
    }

    fn read(&mut self, rel: &str, missing: Option<(usize, Span)>) -> Option<Vec<u8>> {
        let display = self.display(rel);
        match std::fs::read(self.dir.join(rel)) {
            Ok(b) => Some(b),
            Err(e) => {
                match missing {
                    Some((file, span)) if e.kind() == std::io::ErrorKind::NotFound => {
                        let err = ConfigError::MissingFile(rel.to_string());
                        self.diags.push(Diagnostic::from_error(&self.files[file], span, &err));
                    }
                    _ => self.diags.push(Diagnostic::for_file("E-IO", &display, format!("cannot read {display}: {e}"))),
                }
                None
            }
        }
    }

    fn load(mut self) -> Result<RuleSet, Diagnostics> {
        let mut rules_hash = ContentHasher::new();
        let mut lists_hash = ContentHasher::new();

        let Some(chain_bytes) = self.read("chain.toml", None) else {
            return Err(Diagnostics(self.diags));
        };
        rules_hash.part("chain.toml", &chain_bytes);
        let lists_display = self.display("lists");
        let lists = lists::load_dir(&self.dir.join("lists"), &lists_display, &mut self.diags, &mut |name, bytes| {
            lists_hash.part(name, bytes);
        });
        self.files
            .push(SourceFile::new(self.display("chain.toml"), String::from_utf8_lossy(&chain_bytes).into_owned()));
        let stage_drafts = self.parse_chain();
        let constants = std::mem::take(&mut self.constants);

        // Rule files, stage by stage. A stage's rules may read the outcome of
        // every earlier stage: `stage.<name>.action` and `stage.<name>.fired`.
        let mut drafts: Vec<(usize, Vec<RuleDraft>)> = Vec::new();
        let mut stage_schema = self.schema.clone();
        for (si, st) in stage_drafts.iter().enumerate() {
            if si > 0 {
                let prev = &stage_drafts[si - 1];
                if si - 1 < MAX_STAGE_RESULTS && !prev.name.is_empty() {
                    let slot = STAGE_RESULT_BASE + 2 * (si as u32 - 1);
                    stage_schema.add(&format!("stage.{}.action", prev.name), FieldType::Str, ALL_KINDS, Slot(slot));
                    stage_schema.add(&format!("stage.{}.fired", prev.name), FieldType::Bool, ALL_KINDS, Slot(slot + 1));
                }
            }
            let mut rules = Vec::new();
            for (rel, span) in &st.files {
                let Some(bytes) = self.read(rel, Some((0, span.clone()))) else { continue };
                rules_hash.part(rel, &bytes);
                let fi = self.files.len();
                self.files.push(SourceFile::new(self.display(rel), String::from_utf8_lossy(&bytes).into_owned()));
                rules.extend(self.parse_rule_file(fi, st.combine, &lists, &stage_schema, &constants));
            }
            drafts.push((si, rules));
        }

        self.cross_checks(&stage_drafts, &drafts);

        let has_errors = self.diags.iter().any(Diagnostic::is_error);
        if has_errors {
            return Err(Diagnostics(self.diags));
        }

        let mut stages = Vec::new();
        let mut catalog = Vec::new();
        let mut rule_count = 0;
        for (si, rules) in drafts {
            let st = &stage_drafts[si];
            let Some(combine) = st.combine else { continue };
            let mut compiled = Vec::new();
            for r in rules {
                let (outcome, _) = match r.outcome {
                    Some(o) => o,
                    None => continue,
                };
                catalog.push(RuleInfo {
                    id: r.id.clone(),
                    stage: st.name.clone(),
                    mode: r.mode,
                    reason: r.reason.clone(),
                    severity: r.severity,
                    action: match outcome {
                        Outcome::Action(a) => Some(a),
                        Outcome::Score(_) => None,
                    },
                    score: match outcome {
                        Outcome::Score(s) => Some(s),
                        Outcome::Action(_) => None,
                    },
                });
                if r.mode == Mode::Disabled {
                    continue;
                }
                let Some(cond) = r.cond else { continue };
                rule_count += 1;
                compiled.push(Rule {
                    labels: Arc::new(HitLabels {
                        rule_id: r.id.into(),
                        stage: st.name.as_str().into(),
                        reason: r.reason.into(),
                    }),
                    severity: r.severity,
                    shadow: r.mode == Mode::Shadow,
                    events: r.events,
                    outcome,
                    cond,
                });
            }
            stages.push(Stage { name: st.name.as_str().into(), combine, rules: compiled });
        }
        Ok(RuleSet {
            stages,
            version: rules_hash.finish(),
            lists_version: lists_hash.finish(),
            rule_count,
            lists,
            warnings: Diagnostics(self.diags),
            catalog,
            constants,
        })
    }

    fn parse_chain(&mut self) -> Vec<StageDraft> {
        let src = &self.files[0];
        let mut diags = Vec::new();
        let mut out = Vec::new();
        let Some(doc) = parse_document(src, &mut diags) else {
            self.diags.extend(diags);
            return out;
        };
        let mut top = Fields::new(src, 0..0, "chain.toml", doc, &["stage", "constants"]);
        let stages = top.take("stage");
        let constants = top.opt_table("constants");
        top.finish(&mut diags);
        if let Some((entries, _)) = constants {
            self.constants = parse_constants(src, entries, &mut diags);
        }
        let tables = match stages.map(|s| (s.span(), s.into_inner())) {
            Some((_, Item::Array(items))) => items,
            Some((span, other)) => {
                let e = ConfigError::WrongType {
                    key: "stage".into(),
                    expected: "a list of [[stage]] tables",
                    found: other.type_name(),
                };
                diags.push(Diagnostic::from_error(src, span, &e));
                Vec::new()
            }
            None => Vec::new(),
        };
        if tables.is_empty() && diags.is_empty() {
            diags.push(Diagnostic::from_error(src, 0..0, &ConfigError::NoStages));
        }
        let mut seen_names: HashMap<String, ()> = HashMap::new();
        let mut seen_files: HashMap<String, ()> = HashMap::new();
        for t in tables {
            let span = t.span();
            let Item::Table(entries) = t.into_inner() else { continue };
            let mut f =
                Fields::new(src, span.clone(), "a [[stage]]", entries, &["name", "combine", "files", "description"]);
            let name = f.str("name");
            let combine = f.str("combine");
            let files = f.opt_str_array("files");
            let _ = f.opt_str("description");
            let combine = combine.and_then(|(c, cspan)| {
                let parsed = Combine::parse(&c);
                if parsed.is_none() {
                    f.error(cspan, ConfigError::BadCombine(c));
                }
                parsed
            });
            let files = match files {
                None => {
                    f.missing("files");
                    Vec::new()
                }
                Some((files, fspan)) => {
                    if files.is_empty() {
                        f.error(fspan, ConfigError::NoFiles(name.as_ref().map(|n| n.0.clone()).unwrap_or_default()));
                    }
                    let mut ok = Vec::new();
                    for (file, span) in files {
                        let p = Path::new(&file);
                        if file.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
                            f.error(span, ConfigError::BadPath(file));
                        } else if seen_files.insert(file.clone(), ()).is_some() {
                            f.error(span, ConfigError::DuplicateFile(file));
                        } else {
                            ok.push((file, span));
                        }
                    }
                    ok
                }
            };
            if let Some((n, nspan)) = &name {
                if seen_names.insert(n.clone(), ()).is_some() {
                    f.error(nspan.clone(), ConfigError::DuplicateStage(n.clone()));
                }
            }
            f.finish(&mut diags);
            out.push(StageDraft { name: name.map(|n| n.0).unwrap_or_default(), combine, files });
        }
        self.diags.extend(diags);
        out
    }

    fn parse_rule_file(
        &mut self,
        fi: usize,
        combine: Option<Combine>,
        lists: &Lists,
        schema: &Schema,
        constants: &Constants,
    ) -> Vec<RuleDraft> {
        let src = &self.files[fi];
        let mut diags = Vec::new();
        let mut out = Vec::new();
        let Some(doc) = parse_document(src, &mut diags) else {
            self.diags.extend(diags);
            return out;
        };
        let mut top = Fields::new(src, 0..0, "a rule file", doc, &["rule"]);
        let rules = top.take("rule");
        top.finish(&mut diags);
        let tables = match rules.map(|s| (s.span(), s.into_inner())) {
            Some((_, Item::Array(items))) => items,
            Some((span, other)) => {
                let e = ConfigError::WrongType {
                    key: "rule".into(),
                    expected: "a list of [[rule]] tables",
                    found: other.type_name(),
                };
                diags.push(Diagnostic::from_error(src, span, &e));
                Vec::new()
            }
            None => Vec::new(),
        };
        for t in tables {
            // One rule's diagnostics in the order they appear in the file.
            let mut local = Vec::new();
            let names = Names { schema, lists, constants };
            if let Some(d) = parse_rule(src, fi, t, combine, &names, &mut local) {
                out.push(d);
            }
            local.sort_by_key(|d| d.span.start);
            diags.extend(local);
        }
        self.diags.extend(diags);
        out
    }

    /// Duplicate ids, unreachable rules and rules that never fire.
    fn cross_checks(&mut self, stages: &[StageDraft], drafts: &[(usize, Vec<RuleDraft>)]) {
        let mut first_seen: HashMap<&str, (usize, Span)> = HashMap::new();
        for (si, rules) in drafts {
            let first_match = stages[*si].combine == Some(Combine::FirstMatch);
            // Event kinds already taken by an unconditional active rule above.
            let mut covered: KindMask = 0;
            let mut coverer = String::new();
            for r in rules {
                let src = &self.files[r.file];
                if let Some((ffile, fspan)) = first_seen.get(r.id.as_str()) {
                    let (line, col) = self.files[*ffile].locate(fspan.start);
                    let first = format!("{}:{line}:{col}", self.files[*ffile].display);
                    self.diags.push(Diagnostic::from_error(
                        src,
                        r.id_span.clone(),
                        &CompileError::DuplicateId { id: r.id.clone(), first },
                    ));
                } else {
                    first_seen.insert(&r.id, (r.file, r.id_span.clone()));
                }
                if r.mode == Mode::Disabled {
                    continue;
                }
                let always = match &r.cond {
                    Some(BoolExpr::Const(v)) => Some(*v),
                    _ => None,
                };
                if let Some(v @ (Some(false) | None)) = always {
                    let value = if v.is_none() { "missing" } else { "false" };
                    let e = CompileError::NeverFires { id: r.id.clone(), value };
                    self.diags.push(Diagnostic::from_error(src, r.when_span.clone(), &e));
                }
                if !first_match || r.mode == Mode::Shadow {
                    continue;
                }
                if covered != 0 && r.events & !covered == 0 {
                    let e = CompileError::Unreachable { id: r.id.clone(), by: coverer.clone() };
                    self.diags.push(Diagnostic::from_error(src, r.id_span.clone(), &e));
                }
                if always == Some(Some(true)) && r.events & !covered != 0 {
                    covered |= r.events;
                    coverer = r.id.clone();
                }
            }
        }
    }
}

/// `[constants]` of chain.toml: `name = value`, read in rules as
/// `const.name`. Numbers, strings and booleans.
fn parse_constants(src: &SourceFile, entries: Entries, diags: &mut Vec<Diagnostic>) -> Constants {
    let mut out = Constants::new();
    for (key, value) in entries {
        let name = key.get_ref();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            diags.push(Diagnostic::from_error(src, key.span(), &ConfigError::BadConstant(name.clone())));
            continue;
        }
        let v = match value.get_ref() {
            Item::Int(i) => ConstValue::Num(*i as f64),
            Item::Float(f) if f.is_finite() => ConstValue::Num(*f),
            Item::Str(s) => ConstValue::Str(s.clone()),
            Item::Bool(b) => ConstValue::Bool(*b),
            other => {
                let e = ConfigError::WrongType {
                    key: name.clone(),
                    expected: "a finite number, a string or a boolean",
                    found: other.type_name(),
                };
                diags.push(Diagnostic::from_error(src, value.span(), &e));
                continue;
            }
        };
        out.insert(name.clone(), v);
    }
    out
}

const RULE_KEYS: &[&str] =
    &["id", "description", "owner", "severity", "mode", "events", "when", "action", "reason", "score"];

/// What a rule's condition may refer to.
struct Names<'a> {
    schema: &'a Schema,
    lists: &'a Lists,
    constants: &'a Constants,
}

fn parse_rule(
    src: &SourceFile,
    fi: usize,
    table: Spanned<Item>,
    combine: Option<Combine>,
    names: &Names<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<RuleDraft> {
    let span = table.span();
    let Item::Table(entries) = table.into_inner() else { return None };
    let mut f = Fields::new(src, span.clone(), "a [[rule]]", entries, RULE_KEYS);
    let id = f.str("id");
    let _ = f.str("description");
    let _ = f.str("owner");
    let severity = match f.opt_int("severity") {
        Some((s, _)) if (0..=100).contains(&s) => Some(s as u8),
        Some((s, sspan)) => {
            f.error(sspan, ConfigError::BadSeverity(s));
            None
        }
        None => {
            if !f.errors.iter().any(|(_, e)| matches!(e, ConfigError::WrongType { key, .. } if key == "severity")) {
                f.missing("severity");
            }
            None
        }
    };
    let mode = f.str("mode").and_then(|(m, mspan)| match m.as_str() {
        "active" => Some(Mode::Active),
        "shadow" => Some(Mode::Shadow),
        "disabled" => Some(Mode::Disabled),
        _ => {
            f.error(mspan, ConfigError::BadMode(m));
            None
        }
    });
    let events = match f.opt_str_array("events") {
        None => ALL_KINDS,
        Some((list, espan)) => {
            if list.is_empty() {
                f.error(espan, ConfigError::NoEvents);
            }
            let mut mask = 0;
            for (name, nspan) in list {
                match EventKind::parse(&name) {
                    Some(k) => mask |= k.bit(),
                    None => {
                        let suggestion = suggest(&name, EventKind::ALL.iter().map(|k| k.as_str()));
                        f.error(nspan, ConfigError::UnknownEvent { name, suggestion });
                    }
                }
            }
            if mask == 0 {
                ALL_KINDS
            } else {
                mask
            }
        }
    };
    let reason = f.str("reason").and_then(|(r, rspan)| {
        let ok = r.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && r.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            f.error(rspan, ConfigError::BadReason(r));
            return None;
        }
        Some(r)
    });
    let action = f.opt_str("action");
    let score = f.opt_num("score");
    let mut misfit = Vec::new();
    let outcome = outcome(&mut f, combine, action, score, events, &mut misfit);
    let when = f.str("when");
    let id = id.and_then(|(id, ispan)| {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            f.error(ispan, ConfigError::BadId(id));
            return None;
        }
        Some((id, ispan))
    });
    f.finish(diags);
    for (s, e) in misfit {
        diags.push(Diagnostic::from_error(src, s, &e));
    }

    // The condition is checked even for disabled rules.
    let (cond, when_span) = match when {
        Some((text, wspan)) => {
            let offsets = string_offsets(&src.text, &wspan, &text);
            let mut checker = Checker::new(names.schema, names.lists, events).with_constants(names.constants);
            let cond = compile_expr(src, &text, offsets.as_deref(), &wspan, &mut checker, diags, |c, e| c.condition(e))
                .map(BoolExpr::fold);
            (cond, wspan)
        }
        None => (None, span.clone()),
    };
    let (id, id_span) = id?;
    Some(RuleDraft {
        file: fi,
        id,
        id_span,
        mode: mode?,
        events,
        outcome,
        severity: severity?,
        reason: reason?,
        cond,
        when_span,
    })
}

fn outcome(
    f: &mut Fields<'_>,
    combine: Option<Combine>,
    action: Option<(String, Span)>,
    score: Option<(f64, Span)>,
    events: KindMask,
    misfit: &mut Vec<(Span, CompileError)>,
) -> Option<(Outcome, Span)> {
    let combine = combine?;
    if let (Some(_), Some((_, sspan))) = (&action, &score) {
        f.error(sspan.clone(), ConfigError::BothOutcomes);
        return None;
    }
    match (combine, action, score) {
        (Combine::ScoreSum, None, Some((s, sspan))) => {
            if !s.is_finite() {
                f.error(sspan, ConfigError::BadScore(s));
                return None;
            }
            Some((Outcome::Score(s), sspan))
        }
        (Combine::ScoreSum, other, _) => {
            let at = other.map_or(f.at.clone(), |(_, s)| s);
            f.error(
                at,
                ConfigError::Outcome { combine: "score_sum", needs: "`score` (points to add)", has_other: true },
            );
            None
        }
        (_, Some((a, aspan)), None) => {
            let Some(action) = Action::parse(&a) else {
                f.error(aspan, ConfigError::BadAction(a));
                return None;
            };
            if let Some(e) = check_action(action, events) {
                misfit.push((aspan, e));
                return None;
            }
            Some((Outcome::Action(action), aspan))
        }
        (c, None, score) => {
            let at = score.map_or(f.at.clone(), |(_, s)| s);
            let has_other = at != f.at;
            f.error(at, ConfigError::Outcome { combine: c.as_str(), needs: "an `action`", has_other });
            None
        }
        (_, Some(_), Some(_)) => None,
    }
}
