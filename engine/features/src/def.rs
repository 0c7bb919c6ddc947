//! Feature definitions: parsing `features/*.toml`, resolving names to slots
//! and field ids, and reporting author errors with file:line:col.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use riskd_core::event::{EventKind, KindMask, ALL_KINDS};
use riskd_core::fields::{FieldId, FieldType};
use riskd_core::timefmt::parse_duration_ms;
use riskd_core::version::ContentHasher;
use serde::Deserialize;
use toml::Spanned;

/// The entity whose history a feature aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    User,
    Device,
    Ip,
    /// The IPv4 /24 (IPv6 /64) network of the client address.
    Ip24,
    Phone,
    IdNumber,
    BankCard,
    /// No history: computed from the current event alone.
    Event,
}

impl EntityKind {
    pub const ALL: [EntityKind; 8] = [
        EntityKind::User,
        EntityKind::Device,
        EntityKind::Ip,
        EntityKind::Ip24,
        EntityKind::Phone,
        EntityKind::IdNumber,
        EntityKind::BankCard,
        EntityKind::Event,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Device => "device",
            EntityKind::Ip => "ip",
            EntityKind::Ip24 => "ip24",
            EntityKind::Phone => "phone",
            EntityKind::IdNumber => "id_number",
            EntityKind::BankCard => "bank_card",
            EntityKind::Event => "event",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Sliding { ms: i64 },
    Lifetime,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Aggregation {
    Count,
    Sum(FieldId),
    Min(FieldId),
    Max(FieldId),
    Mean(FieldId),
    Last(FieldId),
    DistinctCount(FieldId),
    /// numerator / denominator, each an event field or an earlier feature slot.
    Ratio(Operand, Operand),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Field(FieldId),
    Feature(usize),
}

/// A compiled feature: names resolved, window parsed.
#[derive(Clone, Debug)]
pub struct FeatureDef {
    pub name: String,
    pub slot: usize,
    pub entity: EntityKind,
    /// Event kinds this feature counts.
    pub counts: KindMask,
    /// Equality filters an event must pass to be counted.
    pub filters: Vec<(FieldId, FilterValue)>,
    pub agg: Aggregation,
    pub window: Window,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    Bool(bool),
    Num(f64),
    Str(String),
}

/// All features of one deployment, in slot order.
#[derive(Clone, Debug)]
pub struct FeatureSet {
    pub defs: Vec<FeatureDef>,
    pub version: String,
    /// Allowed lateness for out-of-order events, milliseconds.
    pub allowed_lateness_ms: i64,
}

/// An author error in a feature file, located for the author.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct DefError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for DefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}\n --> {}:{}:{}", self.message, self.file, self.line, self.col)?;
        if let Some(h) = &self.hint {
            write!(f, "\n = hint: {h}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    settings: Option<Settings>,
    #[serde(default)]
    feature: Vec<Spanned<RawFeature>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    allowed_lateness: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    entity: Spanned<String>,
    #[serde(default)]
    events: Option<Spanned<Vec<String>>>,
    #[serde(default, rename = "where")]
    filter: Option<Spanned<BTreeMap<String, toml::Value>>>,
    agg: Spanned<String>,
    #[serde(default)]
    of: Option<Spanned<String>>,
    #[serde(default)]
    numerator: Option<Spanned<String>>,
    #[serde(default)]
    denominator: Option<Spanned<String>>,
    #[serde(default)]
    window: Option<Spanned<String>>,
}

/// Closest candidate as a "did you mean" hint.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    riskd_core::text::did_you_mean(name, candidates)
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<DefError>,
}

impl Ctx<'_> {
    fn err(&mut self, span: std::ops::Range<usize>, message: impl Into<String>, hint: Option<String>) {
        let (line, col) = riskd_core::text::line_col(self.text, span.start);
        self.errors.push(DefError { file: self.file.to_string(), line, col, message: message.into(), hint });
    }
}

impl FeatureSet {
    /// Loads every `*.toml` file in `dir` (sorted by name). All errors are
    /// collected and returned together.
    pub fn load(dir: &Path) -> Result<FeatureSet, Vec<DefError>> {
        let mut entries: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) => {
                return Err(vec![DefError {
                    file: dir.display().to_string(),
                    line: 0,
                    col: 0,
                    message: format!("cannot read the feature directory: {e}"),
                    hint: None,
                }])
            }
        };
        entries.sort();
        let mut files = Vec::new();
        for path in entries {
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((path.display().to_string(), text)),
                Err(e) => {
                    return Err(vec![DefError {
                        file: path.display().to_string(),
                        line: 0,
                        col: 0,
                        message: format!("cannot read: {e}"),
                        hint: None,
                    }])
                }
            }
        }
        Self::from_sources(&files)
    }

    /// Compiles feature definitions from (file name, text) pairs.
    pub fn from_sources(files: &[(String, String)]) -> Result<FeatureSet, Vec<DefError>> {
        let mut defs: Vec<FeatureDef> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut errors = Vec::new();
        let mut hasher = ContentHasher::new();
        let mut lateness = 0i64;
        for (file, text) in files {
            hasher.part(file.rsplit('/').next().unwrap_or(file), text.as_bytes());
            let mut cx = Ctx { file, text, errors: Vec::new() };
            match toml::from_str::<File>(text) {
                Err(e) => {
                    let span = e.span().unwrap_or(0..0);
                    cx.err(span, e.message().to_string(), None);
                }
                Ok(parsed) => {
                    if let Some(s) = parsed.settings {
                        match parse_duration_ms(s.allowed_lateness.get_ref()) {
                            Some(ms) => lateness = lateness.max(ms),
                            None => cx.err(
                                s.allowed_lateness.span(),
                                "allowed_lateness is not a duration",
                                Some("write e.g. \"30s\", \"5m\"".into()),
                            ),
                        }
                    }
                    for raw in parsed.feature {
                        let span = raw.span();
                        let raw = raw.into_inner();
                        if let Some(def) = compile(&mut cx, raw, span, defs.len(), &by_name, &defs) {
                            by_name.insert(def.name.clone(), def.slot);
                            defs.push(def);
                        }
                    }
                }
            }
            errors.extend(cx.errors);
        }
        if errors.is_empty() {
            Ok(FeatureSet { defs, version: hasher.finish(), allowed_lateness_ms: lateness })
        } else {
            Err(errors)
        }
    }

    pub fn slot(&self, name: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.name == name)
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }
}

fn field(cx: &mut Ctx<'_>, name: &Spanned<String>) -> Option<FieldId> {
    let id = FieldId::lookup(name.get_ref());
    if id.is_none() {
        let hint = suggest(name.get_ref(), riskd_core::fields::FIELDS.iter().map(|f| f.name));
        cx.err(name.span(), format!("unknown event field `{}`", name.get_ref()), hint);
    }
    id
}

fn compile(
    cx: &mut Ctx<'_>,
    raw: RawFeature,
    span: std::ops::Range<usize>,
    slot: usize,
    by_name: &HashMap<String, usize>,
    defs: &[FeatureDef],
) -> Option<FeatureDef> {
    let before = cx.errors.len();
    let name = raw.name.get_ref().clone();
    let name_ok = !name.is_empty()
        && name.split('.').count() == 2
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !name_ok {
        cx.err(raw.name.span(), format!("feature name `{name}` is not of the form `entity.snake_case_name`"), None);
    }
    if by_name.contains_key(&name) {
        cx.err(raw.name.span(), format!("feature `{name}` is defined twice"), None);
    }
    let entity = EntityKind::parse(raw.entity.get_ref());
    if entity.is_none() {
        let all = EntityKind::ALL.map(|e| e.as_str());
        cx.err(
            raw.entity.span(),
            format!("unknown entity `{}`", raw.entity.get_ref()),
            suggest(raw.entity.get_ref(), all).or(Some(format!("entities: {}", all.join(", ")))),
        );
    }
    let mut counts = ALL_KINDS;
    if let Some(events) = &raw.events {
        counts = 0;
        for e in events.get_ref() {
            match EventKind::parse(e) {
                Some(k) => counts |= k.bit(),
                None => {
                    let hint = suggest(e, EventKind::ALL.iter().map(|k| k.as_str()));
                    cx.err(events.span(), format!("unknown event type `{e}`"), hint);
                }
            }
        }
    }
    let mut filters = Vec::new();
    if let Some(w) = &raw.filter {
        for (fname, v) in w.get_ref() {
            let Some(id) = FieldId::lookup(fname) else {
                let hint = suggest(fname, riskd_core::fields::FIELDS.iter().map(|f| f.name));
                cx.err(w.span(), format!("unknown event field `{fname}` in `where`"), hint);
                continue;
            };
            let fv = match (id.spec().ty, v) {
                (FieldType::Bool, toml::Value::Boolean(b)) => FilterValue::Bool(*b),
                (FieldType::Num, toml::Value::Integer(i)) => FilterValue::Num(*i as f64),
                (FieldType::Num, toml::Value::Float(f)) => FilterValue::Num(*f),
                (FieldType::Str, toml::Value::String(s)) => FilterValue::Str(s.clone()),
                (ty, _) => {
                    cx.err(w.span(), format!("`where` compares `{fname}` ({ty}) with a {}", v.type_str()), None);
                    continue;
                }
            };
            filters.push((id, fv));
        }
    }
    let agg_name = raw.agg.get_ref().as_str();
    let needs_of = |cx: &mut Ctx<'_>| -> Option<FieldId> {
        match &raw.of {
            Some(of) => field(cx, of),
            None => {
                cx.err(raw.agg.span(), format!("aggregation `{agg_name}` needs `of = \"event.<field>\"`"), None);
                None
            }
        }
    };
    let operand = |cx: &mut Ctx<'_>, o: &Option<Spanned<String>>, what: &str| -> Option<Operand> {
        let Some(o) = o else {
            cx.err(span.clone(), format!("ratio needs `{what}`"), None);
            return None;
        };
        if let Some(&s) = by_name.get(o.get_ref()) {
            return Some(Operand::Feature(s));
        }
        if let Some(id) = FieldId::lookup(o.get_ref()) {
            return Some(Operand::Field(id));
        }
        let names = defs.iter().map(|d| d.name.as_str()).chain(riskd_core::fields::FIELDS.iter().map(|f| f.name));
        cx.err(
            o.span(),
            format!("`{}` is neither an event field nor a feature defined above", o.get_ref()),
            suggest(o.get_ref(), names).or(Some("a ratio may only use features defined before it (no cycles)".into())),
        );
        None
    };
    let agg = match agg_name {
        "count" => Some(Aggregation::Count),
        "sum" => needs_of(cx).map(Aggregation::Sum),
        "min" => needs_of(cx).map(Aggregation::Min),
        "max" => needs_of(cx).map(Aggregation::Max),
        "mean" => needs_of(cx).map(Aggregation::Mean),
        "last" => needs_of(cx).map(Aggregation::Last),
        "distinct_count" => needs_of(cx).map(Aggregation::DistinctCount),
        "ratio" => {
            let n = operand(cx, &raw.numerator, "numerator");
            let d = operand(cx, &raw.denominator, "denominator");
            n.zip(d).map(|(n, d)| Aggregation::Ratio(n, d))
        }
        other => {
            let all = ["count", "sum", "min", "max", "mean", "last", "distinct_count", "ratio"];
            cx.err(
                raw.agg.span(),
                format!("unknown aggregation `{other}`"),
                suggest(other, all).or(Some(format!("aggregations: {}", all.join(", ")))),
            );
            None
        }
    };
    if let (Some(agg), Some(of)) = (&agg, &raw.of) {
        if let Aggregation::Sum(id) | Aggregation::Min(id) | Aggregation::Max(id) | Aggregation::Mean(id) = agg {
            if !matches!(id.spec().ty, FieldType::Num | FieldType::Bool) {
                cx.err(
                    of.span(),
                    format!("`{agg_name}` needs a numeric field; `{}` is a {}", of.get_ref(), id.spec().ty),
                    None,
                );
            }
        }
    }
    let window = match (&raw.window, agg_name) {
        (None, "ratio") => Some(Window::Lifetime),
        (Some(w), "ratio") => {
            cx.err(w.span(), "a ratio is computed per event and takes no window", None);
            None
        }
        (None, _) => {
            cx.err(raw.agg.span(), "missing `window` (e.g. \"10m\", \"24h\", \"30d\" or \"lifetime\")", None);
            None
        }
        (Some(w), _) if w.get_ref() == "lifetime" => Some(Window::Lifetime),
        (Some(w), _) => match parse_duration_ms(w.get_ref()) {
            Some(ms) => Some(Window::Sliding { ms }),
            None => {
                cx.err(
                    w.span(),
                    format!("window `{}` is not a duration", w.get_ref()),
                    Some("use a number and a unit: ms, s, m, h, d, w (e.g. \"24h\"), or \"lifetime\"".into()),
                );
                None
            }
        },
    };
    match (entity, agg_name) {
        (Some(EntityKind::Event), a) if a != "ratio" => {
            cx.err(raw.entity.span(), "entity `event` is only for per-event features (agg = \"ratio\")", None)
        }
        (Some(e), "ratio") if e != EntityKind::Event => {
            cx.err(raw.entity.span(), "a ratio is computed per event: use entity = \"event\"", None)
        }
        _ => {}
    }
    if cx.errors.len() > before {
        return None;
    }
    Some(FeatureDef {
        name,
        slot,
        entity: entity?,
        counts,
        filters,
        agg: agg?,
        window: window?,
        description: raw.description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<FeatureSet, Vec<DefError>> {
        FeatureSet::from_sources(&[("features/f.toml".into(), text.into())])
    }

    #[test]
    fn bad_definitions_are_located_with_hints() {
        let cases = [
            ("[[feature]]\nname = \"device.x\"\nentity = \"devise\"\nagg = \"count\"\nwindow = \"1h\"\n", 3, 10, "unknown entity `devise`", Some("did you mean `device`?")),
            ("[[feature]]\nname = \"device.x\"\nentity = \"device\"\nagg = \"count\"\nwindow = \"1 hour\"\n", 5, 10, "window `1 hour` is not a duration", None),
            ("[[feature]]\nname = \"user.s\"\nentity = \"user\"\nagg = \"sum\"\nof = \"event.amout\"\nwindow = \"1h\"\n", 5, 6, "unknown event field `event.amout`", Some("did you mean `event.amount`?")),
            ("[[feature]]\nname = \"event.r\"\nentity = \"event\"\nagg = \"ratio\"\nnumerator = \"event.amount\"\ndenominator = \"event.later\"\n", 6, 15, "`event.later` is neither", None),
            ("[[feature]]\nname = \"user.c\"\nentity = \"user\"\nagg = \"count\"\nwindow = \"1h\"\ncolour = 1\n", 6, 1, "unknown field `colour`", None),
        ];
        for (text, line, col, msg, hint) in cases {
            let errs = load(text).expect_err(text);
            let e = &errs[0];
            assert!(e.message.contains(msg), "{e}");
            assert_eq!((e.line, e.col), (line, col), "{e}");
            if let Some(h) = hint {
                assert_eq!(e.hint.as_deref(), Some(h), "{e}");
            }
        }
    }

    #[test]
    fn a_ratio_cannot_refer_to_itself_or_later_features() {
        let text = "[[feature]]\nname = \"event.r\"\nentity = \"event\"\nagg = \"ratio\"\nnumerator = \"event.r\"\ndenominator = \"event.amount\"\n";
        let errs = load(text).unwrap_err();
        assert!(
            errs[0].hint.as_deref().unwrap_or("").contains("no cycles") || errs[0].message.contains("neither"),
            "{}",
            errs[0]
        );
    }
}
