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
    /// Several entities together (e.g. `user+device`): a bit per base kind,
    /// in the order of [`EntityKind::BASE`].
    Composite(u8),
}

impl EntityKind {
    /// The kinds an author can name alone.
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
    /// The kinds a composite can combine.
    pub const BASE: [EntityKind; 7] = [
        EntityKind::User,
        EntityKind::Device,
        EntityKind::Ip,
        EntityKind::Ip24,
        EntityKind::Phone,
        EntityKind::IdNumber,
        EntityKind::BankCard,
    ];

    /// The base kinds of a composite, in canonical order; a base kind alone otherwise.
    pub fn parts(self) -> impl Iterator<Item = EntityKind> {
        let mask = match self {
            EntityKind::Composite(m) => m,
            k => Self::BASE.iter().position(|b| *b == k).map_or(0, |i| 1 << i),
        };
        Self::BASE.into_iter().enumerate().filter(move |(i, _)| mask & (1 << i) != 0).map(|(_, k)| k)
    }

    fn base_str(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Device => "device",
            EntityKind::Ip => "ip",
            EntityKind::Ip24 => "ip24",
            EntityKind::Phone => "phone",
            EntityKind::IdNumber => "id_number",
            EntityKind::BankCard => "bank_card",
            EntityKind::Event => "event",
            EntityKind::Composite(_) => "composite",
        }
    }

    /// A composite is written `user+device`; the parts in any order.
    fn parse(s: &str) -> Result<Self, String> {
        let one = |p: &str| Self::ALL.into_iter().find(|e| e.base_str() == p);
        if !s.contains('+') {
            return one(s).ok_or_else(|| s.to_string());
        }
        let mut mask = 0u8;
        for p in s.split('+') {
            let p = p.trim();
            match Self::BASE.iter().position(|b| b.base_str() == p) {
                Some(i) if mask & (1 << i) == 0 => mask |= 1 << i,
                _ => return Err(p.to_string()),
            }
        }
        Ok(EntityKind::Composite(mask))
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityKind::Composite(_) => {
                let names: Vec<&str> = self.parts().map(|p| p.base_str()).collect();
                f.write_str(&names.join("+"))
            }
            k => f.write_str(k.base_str()),
        }
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
    /// Time since the previous counted event (not the current one) in the
    /// window, in `unit` milliseconds.
    TimeSince {
        unit_ms: i64,
    },
    /// Age of the earliest counted event in the window, in `unit` milliseconds.
    FirstSeen {
        unit_ms: i64,
    },
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
    pub limits: StateLimits,
}

/// Bounds on feature state, from `[settings]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Entities kept per entity kind; beyond it the least recently seen
    /// entity is evicted.
    pub max_entities: usize,
    /// Events kept per entity and windowed feature; beyond it the oldest is
    /// dropped.
    pub max_events_per_window: usize,
    /// Entities whose features include a lifetime window are dropped after
    /// this long without an event; `None` keeps them.
    pub lifetime_idle_expiry_ms: Option<i64>,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits { max_entities: 10_000_000, max_events_per_window: 100_000, lifetime_idle_expiry_ms: None }
    }
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
    #[serde(default)]
    allowed_lateness: Option<Spanned<String>>,
    #[serde(default)]
    max_entities: Option<Spanned<i64>>,
    #[serde(default)]
    max_events_per_window: Option<Spanned<i64>>,
    #[serde(default)]
    lifetime_idle_expiry: Option<Spanned<String>>,
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
    #[serde(default)]
    unit: Option<Spanned<String>>,
}

/// Every aggregation name an author may write.
pub const AGGREGATIONS: [&str; 10] =
    ["count", "sum", "min", "max", "mean", "last", "distinct_count", "time_since", "first_seen", "ratio"];

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
        let mut limits = StateLimits::default();
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
                        settings(&mut cx, s, &mut lateness, &mut limits);
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
            Ok(FeatureSet { defs, version: hasher.finish(), allowed_lateness_ms: lateness, limits })
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

/// Applies one file's `[settings]`. Several files may set them: the largest
/// lateness and the tightest caps win.
fn settings(cx: &mut Ctx<'_>, s: Settings, lateness: &mut i64, limits: &mut StateLimits) {
    if let Some(l) = &s.allowed_lateness {
        match parse_duration_ms(l.get_ref()) {
            Some(ms) => *lateness = (*lateness).max(ms),
            None => cx.err(l.span(), "allowed_lateness is not a duration", Some("write e.g. \"30s\", \"5m\"".into())),
        }
    }
    let positive = |cx: &mut Ctx<'_>, v: &Option<Spanned<i64>>, name: &str, into: &mut usize| {
        if let Some(v) = v {
            if *v.get_ref() < 1 {
                cx.err(v.span(), format!("{name} must be at least 1"), None);
            } else {
                *into = (*into).min(*v.get_ref() as usize);
            }
        }
    };
    positive(cx, &s.max_entities, "max_entities", &mut limits.max_entities);
    positive(cx, &s.max_events_per_window, "max_events_per_window", &mut limits.max_events_per_window);
    if let Some(e) = &s.lifetime_idle_expiry {
        match parse_duration_ms(e.get_ref()) {
            Some(ms) if ms > 0 => {
                limits.lifetime_idle_expiry_ms = Some(limits.lifetime_idle_expiry_ms.map_or(ms, |m| m.min(ms)))
            }
            _ => cx.err(e.span(), "lifetime_idle_expiry is not a positive duration", Some("e.g. \"400d\"".into())),
        }
    }
}

fn unit_ms(cx: &mut Ctx<'_>, raw: &RawFeature) -> Option<i64> {
    let Some(u) = &raw.unit else { return Some(1000) };
    let units = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
    match units.iter().find(|(n, _)| *n == u.get_ref()) {
        Some(&(_, ms)) => Some(ms),
        None => {
            let names = units.map(|(n, _)| n);
            cx.err(u.span(), format!("unknown unit `{}`", u.get_ref()), Some(format!("units: {}", names.join(", "))));
            None
        }
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
    let entity = match EntityKind::parse(raw.entity.get_ref()) {
        Ok(e) => Some(e),
        Err(bad) => {
            let all = EntityKind::ALL.map(|e| e.base_str());
            let composite = bad != *raw.entity.get_ref();
            cx.err(
                raw.entity.span(),
                if composite {
                    format!("`{bad}` cannot be part of the composite entity `{}`", raw.entity.get_ref())
                } else {
                    format!("unknown entity `{bad}`")
                },
                suggest(&bad, all).or(Some(format!(
                    "entities: {}; a composite joins distinct ones with `+`, e.g. \"user+device\"",
                    all.join(", ")
                ))),
            );
            None
        }
    };
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
    // Sums, extremes, means and last values are of numbers (true/false read as 1/0).
    let needs_number = |cx: &mut Ctx<'_>| -> Option<FieldId> {
        let id = needs_of(cx)?;
        let ty = id.spec().ty;
        if matches!(ty, FieldType::Num | FieldType::Bool) {
            return Some(id);
        }
        let of = raw.of.as_ref().expect("needs_of found it");
        cx.err(
            of.span(),
            format!("`{agg_name}` needs a number, but `{}` is {ty}", of.get_ref()),
            Some("count its distinct values with agg = \"distinct_count\", or filter on it with `where`".into()),
        );
        None
    };
    let agg = match agg_name {
        "count" => Some(Aggregation::Count),
        "sum" => needs_number(cx).map(Aggregation::Sum),
        "min" => needs_number(cx).map(Aggregation::Min),
        "max" => needs_number(cx).map(Aggregation::Max),
        "mean" => needs_number(cx).map(Aggregation::Mean),
        "last" => needs_number(cx).map(Aggregation::Last),
        "distinct_count" => needs_of(cx).map(Aggregation::DistinctCount),
        "time_since" => unit_ms(cx, &raw).map(|unit_ms| Aggregation::TimeSince { unit_ms }),
        "first_seen" => unit_ms(cx, &raw).map(|unit_ms| Aggregation::FirstSeen { unit_ms }),
        "ratio" => {
            let n = operand(cx, &raw.numerator, "numerator");
            let d = operand(cx, &raw.denominator, "denominator");
            n.zip(d).map(|(n, d)| Aggregation::Ratio(n, d))
        }
        other => {
            let all = AGGREGATIONS;
            cx.err(
                raw.agg.span(),
                format!("unknown aggregation `{other}`"),
                suggest(other, all).or(Some(format!("aggregations: {}", all.join(", ")))),
            );
            None
        }
    };
    if let (Some(u), false) = (&raw.unit, matches!(agg_name, "time_since" | "first_seen")) {
        cx.err(u.span(), "`unit` applies only to time_since and first_seen", None);
    }
    if let (Some(of), Some(Aggregation::Count | Aggregation::TimeSince { .. } | Aggregation::FirstSeen { .. })) =
        (&raw.of, &agg)
    {
        cx.err(of.span(), format!("`{agg_name}` takes no `of`"), None);
    }
    if let (
        Some(Aggregation::Sum(id) | Aggregation::Min(id) | Aggregation::Max(id) | Aggregation::Mean(id)),
        Some(of),
    ) = (&agg, &raw.of)
    {
        if !matches!(id.spec().ty, FieldType::Num | FieldType::Bool) {
            cx.err(
                of.span(),
                format!("`{agg_name}` needs a numeric field; `{}` is a {}", of.get_ref(), id.spec().ty),
                None,
            );
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
            ("[[feature]]\nname = \"user.t\"\nentity = \"user\"\nagg = \"time_since\"\nunit = \"hours\"\nwindow = \"lifetime\"\n", 5, 8, "unknown unit `hours`", Some("units: ms, s, m, h, d")),
            ("[[feature]]\nname = \"user.c\"\nentity = \"user\"\nagg = \"count\"\nunit = \"h\"\nwindow = \"1h\"\n", 5, 8, "`unit` applies only to time_since and first_seen", None),
            ("[[feature]]\nname = \"user.c\"\nentity = \"user+devise\"\nagg = \"count\"\nwindow = \"1h\"\n", 3, 10, "`devise` cannot be part of the composite entity `user+devise`", Some("did you mean `device`?")),
            ("[[feature]]\nname = \"user.c\"\nentity = \"user+user\"\nagg = \"count\"\nwindow = \"1h\"\n", 3, 10, "`user` cannot be part of the composite entity `user+user`", None),
            ("[[feature]]\nname = \"user.p\"\nentity = \"user\"\nagg = \"last\"\nof = \"event.purpose\"\nwindow = \"lifetime\"\n", 5, 6, "`last` needs a number, but `event.purpose` is", Some("count its distinct values with agg = \"distinct_count\", or filter on it with `where`")),
            ("[[feature]]\nname = \"user.i\"\nentity = \"user\"\nagg = \"max\"\nof = \"entity.ip\"\nwindow = \"1h\"\n", 5, 6, "`max` needs a number, but `entity.ip` is", None),
            ("[settings]\nmax_entities = 0\n", 2, 16, "max_entities must be at least 1", None),
            ("[settings]\nlifetime_idle_expiry = \"forever\"\n", 2, 24, "lifetime_idle_expiry is not a positive duration", None),
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
