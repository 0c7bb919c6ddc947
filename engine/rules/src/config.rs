//! Reading the TOML files (chain, rule files, analyst tests) with a span on
//! every key and value, so that each mistake is reported at its own place
//! and all of them are reported, not just the first.
//!
//! The files are parsed into [`Item`] trees (TOML values with spans) and
//! fields are then taken out one by one; leftover keys are `E-UNKNOWN-KEY`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::diag::{did_you_mean, suggest, AuthorError, Diagnostic, SourceFile, Span};

/// A TOML table's entries, in file order, with spans.
pub(crate) type Entries = Vec<(Spanned<String>, Spanned<Item>)>;

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Spanned<Item>>),
    Table(Entries),
}

impl Item {
    pub fn type_name(&self) -> &'static str {
        match self {
            Item::Str(_) => "a string",
            Item::Int(_) => "an integer",
            Item::Float(_) => "a number",
            Item::Bool(_) => "a boolean",
            Item::Array(_) => "an array",
            Item::Table(_) => "a table",
        }
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value (dates are not supported)")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Item, E> {
        Ok(Item::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Item, E> {
        Ok(Item::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item, E> {
        i64::try_from(v).map(Item::Int).map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Item, E> {
        Ok(Item::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
        Ok(Item::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Item, E> {
        Ok(Item::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Spanned<Item>>()? {
            items.push(v);
        }
        Ok(Item::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Spanned<String>>()? {
            let v = map.next_value::<Spanned<Item>>()?;
            entries.push((k, v));
        }
        Ok(Item::Table(entries))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("invalid TOML: {0}")]
    Toml(String),
    #[error("unknown key `{key}` in {table}")]
    UnknownKey { key: String, table: &'static str, suggestion: Option<String> },
    #[error("{table} needs `{key}`")]
    MissingKey { key: &'static str, table: &'static str },
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType { key: String, expected: &'static str, found: &'static str },
    #[error("unknown combine mode `{0}`")]
    BadCombine(String),
    #[error("unknown mode `{0}`")]
    BadMode(String),
    #[error("unknown action `{0}`")]
    BadAction(String),
    #[error("reason code `{0}` is not UPPER_SNAKE_CASE")]
    BadReason(String),
    #[error("rule id `{0}` may only hold letters, digits, `_` and `-`")]
    BadId(String),
    #[error("severity {0} is outside 0 to 100")]
    BadSeverity(i64),
    #[error("unknown event type `{name}`")]
    UnknownEvent { name: String, suggestion: Option<String> },
    #[error("`events` is empty")]
    NoEvents,
    #[error("a rule in a `{combine}` stage needs {needs}")]
    Outcome { combine: &'static str, needs: &'static str, has_other: bool },
    #[error("a rule has both `action` and `score`")]
    BothOutcomes,
    #[error("score {0} is not a finite number")]
    BadScore(f64),
    #[error("stage `{0}` is defined twice")]
    DuplicateStage(String),
    #[error("`{0}` is listed in more than one stage")]
    DuplicateFile(String),
    #[error("rule file `{0}` not found")]
    MissingFile(String),
    #[error("`{0}` is not a file name inside the rules directory")]
    BadPath(String),
    #[error("the chain has no stages")]
    NoStages,
    #[error("stage `{0}` has no rule files")]
    NoFiles(String),
    #[error("constant name `{0}` may only hold letters, digits and `_`")]
    BadConstant(String),
}

impl AuthorError for ConfigError {
    fn code(&self) -> &'static str {
        match self {
            ConfigError::Toml(_) => "E-TOML",
            ConfigError::UnknownKey { .. } => "E-UNKNOWN-KEY",
            ConfigError::MissingKey { .. } => "E-MISSING-KEY",
            ConfigError::WrongType { .. } => "E-FIELD-TYPE",
            ConfigError::BadCombine(_) => "E-BAD-COMBINE",
            ConfigError::BadMode(_) => "E-BAD-MODE",
            ConfigError::BadAction(_) => "E-BAD-ACTION",
            ConfigError::BadReason(_) => "E-BAD-REASON",
            ConfigError::BadId(_) | ConfigError::BadConstant(_) => "E-BAD-ID",
            ConfigError::BadSeverity(_) => "E-BAD-SEVERITY",
            ConfigError::UnknownEvent { .. } | ConfigError::NoEvents => "E-UNKNOWN-EVENT",
            ConfigError::Outcome { .. } | ConfigError::BothOutcomes | ConfigError::BadScore(_) => "E-BAD-OUTCOME",
            ConfigError::DuplicateStage(_) => "E-DUPLICATE-STAGE",
            ConfigError::DuplicateFile(_) => "E-DUPLICATE-FILE",
            ConfigError::MissingFile(_) | ConfigError::BadPath(_) => "E-MISSING-FILE",
            ConfigError::NoStages | ConfigError::NoFiles(_) => "E-NO-STAGES",
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ConfigError::UnknownKey { suggestion, .. } => did_you_mean(suggestion.clone()),
            ConfigError::BadCombine(s) => did_you_mean(suggest(s, COMBINES))
                .or_else(|| Some("combine is one of: first_match, highest_severity, score_sum".into())),
            ConfigError::BadMode(s) => {
                did_you_mean(suggest(s, MODES)).or_else(|| Some("mode is one of: active, shadow, disabled".into()))
            }
            ConfigError::BadAction(s) => did_you_mean(suggest(s, ACTIONS))
                .or_else(|| Some("action is one of: reject, review, approve, alert, pass".into())),
            ConfigError::BadReason(s) => {
                Some(format!("e.g. `{}`", s.trim().replace([' ', '-', '.'], "_").to_ascii_uppercase()))
            }
            ConfigError::UnknownEvent { suggestion, .. } => did_you_mean(suggestion.clone()).or_else(|| {
                let all: Vec<&str> = riskd_core::EventKind::ALL.iter().map(|k| k.as_str()).collect();
                Some(format!("event types are: {}", all.join(", ")))
            }),
            ConfigError::NoEvents => Some("leave `events` out to apply the rule to every event type".into()),
            ConfigError::Outcome { combine: "score_sum", has_other: true, .. } => {
                Some("score_sum stages add up points: replace `action` with e.g. `score = -40`".into())
            }
            ConfigError::Outcome { has_other: true, .. } => {
                Some("only score_sum stages use `score`; use `action = \"review\"` (or another action)".into())
            }
            ConfigError::MissingFile(_) => Some("file names in `files` are relative to the rules directory".into()),
            ConfigError::Toml(_) => Some("check the quoting and brackets around this place".into()),
            _ => None,
        }
    }
}

pub(crate) const COMBINES: [&str; 3] = ["first_match", "highest_severity", "score_sum"];
pub(crate) const MODES: [&str; 3] = ["active", "shadow", "disabled"];
pub(crate) const ACTIONS: [&str; 5] = ["reject", "review", "approve", "alert", "pass"];

/// Parses a TOML document; a syntax error becomes one diagnostic.
pub(crate) fn parse_document(src: &SourceFile, diags: &mut Vec<Diagnostic>) -> Option<Entries> {
    match toml::from_str::<Item>(&src.text) {
        Ok(Item::Table(t)) => Some(t),
        Ok(_) => None,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_string();
            diags.push(Diagnostic::from_error(src, span, &ConfigError::Toml(msg)));
            None
        }
    }
}

/// A table whose fields are taken out one by one; what is left over is
/// reported as unknown keys.
pub(crate) struct Fields<'f> {
    pub src: &'f SourceFile,
    /// Where the table starts, for "missing key" errors.
    pub at: Span,
    table: &'static str,
    entries: Entries,
    allowed: &'static [&'static str],
    pub errors: Vec<(Span, ConfigError)>,
}

impl<'f> Fields<'f> {
    pub fn new(
        src: &'f SourceFile,
        at: Span,
        table: &'static str,
        entries: Entries,
        allowed: &'static [&'static str],
    ) -> Self {
        Fields { src, at, table, entries, allowed, errors: Vec::new() }
    }

    pub fn error(&mut self, span: Span, e: ConfigError) {
        self.errors.push((span, e));
    }

    pub fn take(&mut self, key: &str) -> Option<Spanned<Item>> {
        let i = self.entries.iter().position(|(k, _)| k.get_ref() == key)?;
        Some(self.entries.remove(i).1)
    }

    pub fn missing(&mut self, key: &'static str) {
        let table = self.table;
        self.errors.push((self.at.clone(), ConfigError::MissingKey { key, table }));
    }

    fn wrong(&mut self, key: &str, expected: &'static str, item: &Spanned<Item>) {
        self.errors.push((
            item.span(),
            ConfigError::WrongType { key: key.to_string(), expected, found: item.get_ref().type_name() },
        ));
    }

    pub fn opt_str(&mut self, key: &str) -> Option<(String, Span)> {
        let item = self.take(key)?;
        match item.get_ref() {
            Item::Str(s) => Some((s.clone(), item.span())),
            _ => {
                self.wrong(key, "a string", &item);
                None
            }
        }
    }

    /// A required string; `Err(())` when missing or wrong (already reported).
    pub fn str(&mut self, key: &'static str) -> Option<(String, Span)> {
        if !self.entries.iter().any(|(k, _)| k.get_ref() == key) {
            self.missing(key);
            return None;
        }
        self.opt_str(key)
    }

    pub fn opt_int(&mut self, key: &str) -> Option<(i64, Span)> {
        let item = self.take(key)?;
        match item.get_ref() {
            Item::Int(i) => Some((*i, item.span())),
            _ => {
                self.wrong(key, "an integer", &item);
                None
            }
        }
    }

    pub fn opt_num(&mut self, key: &str) -> Option<(f64, Span)> {
        let item = self.take(key)?;
        match item.get_ref() {
            Item::Int(i) => Some((*i as f64, item.span())),
            Item::Float(f) => Some((*f, item.span())),
            _ => {
                self.wrong(key, "a number", &item);
                None
            }
        }
    }

    pub fn opt_str_array(&mut self, key: &str) -> Option<(Vec<(String, Span)>, Span)> {
        let item = self.take(key)?;
        let span = item.span();
        if !matches!(item.get_ref(), Item::Array(_)) {
            self.wrong(key, "an array of strings", &item);
            return None;
        }
        let Item::Array(items) = item.into_inner() else { return None };
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            match it.get_ref() {
                Item::Str(s) => out.push((s.clone(), it.span())),
                _ => self.wrong(key, "an array of strings", &it),
            }
        }
        Some((out, span))
    }

    pub fn opt_table(&mut self, key: &str) -> Option<(Entries, Span)> {
        let item = self.take(key)?;
        let span = item.span();
        match item.into_inner() {
            Item::Table(t) => Some((t, span)),
            other => {
                let item = spanned(other, span);
                self.wrong(key, "a table", &item);
                None
            }
        }
    }

    /// Reports leftover keys and hands back every error as diagnostics.
    pub fn finish(mut self, diags: &mut Vec<Diagnostic>) {
        let table = self.table;
        for (k, _) in std::mem::take(&mut self.entries) {
            let suggestion = suggest(k.get_ref(), self.allowed.iter().copied());
            self.errors.push((k.span(), ConfigError::UnknownKey { key: k.get_ref().clone(), table, suggestion }));
        }
        self.errors.sort_by_key(|(s, _)| s.start);
        for (span, e) in &self.errors {
            diags.push(Diagnostic::from_error(self.src, span.clone(), e));
        }
    }
}

pub(crate) fn spanned<T>(v: T, span: Span) -> Spanned<T> {
    Spanned::new(span, v)
}

/// Maps each byte offset of a decoded TOML string value to its offset in the
/// file, so expression errors point into the file. `None` when the raw text
/// cannot be mapped (then errors point at the string's start).
pub(crate) fn string_offsets(file_text: &str, span: &Span, decoded: &str) -> Option<Vec<usize>> {
    let raw = file_text.get(span.clone())?;
    let base = span.start;
    let (quote, multi) = if raw.starts_with("\"\"\"") {
        ('"', true)
    } else if raw.starts_with("'''") {
        ('\'', true)
    } else if raw.starts_with('"') {
        ('"', false)
    } else if raw.starts_with('\'') {
        ('\'', false)
    } else {
        return None;
    };
    let open = if multi { 3 } else { 1 };
    let close = open;
    let body_end = raw.len().checked_sub(close)?;
    let mut i = open;
    // A newline right after an opening triple quote is not part of the string.
    if multi {
        if raw[i..].starts_with("\r\n") {
            i += 2;
        } else if raw[i..].starts_with('\n') {
            i += 1;
        }
    }
    let mut out = String::with_capacity(decoded.len());
    let mut map = Vec::with_capacity(decoded.len() + 1);
    let bytes = raw.as_bytes();
    while i < body_end {
        let c = raw[i..].chars().next()?;
        if quote == '"' && c == '\\' {
            let e = raw[i + 1..].chars().next()?;
            let (ch, len) = match e {
                'b' => (Some('\u{8}'), 2),
                't' => (Some('\t'), 2),
                'n' => (Some('\n'), 2),
                'f' => (Some('\u{c}'), 2),
                'r' => (Some('\r'), 2),
                'e' => (Some('\u{1b}'), 2),
                '"' => (Some('"'), 2),
                '\\' => (Some('\\'), 2),
                'x' => (char::from_u32(u32::from_str_radix(raw.get(i + 2..i + 4)?, 16).ok()?), 4),
                'u' => (char::from_u32(u32::from_str_radix(raw.get(i + 2..i + 6)?, 16).ok()?), 6),
                'U' => (char::from_u32(u32::from_str_radix(raw.get(i + 2..i + 10)?, 16).ok()?), 10),
                ' ' | '\t' | '\r' | '\n' if multi => {
                    // Line-ending backslash: skip all whitespace up to the next text.
                    let mut j = i + 1;
                    while j < body_end && matches!(bytes[j], b' ' | b'\t' | b'\r' | b'\n') {
                        j += 1;
                    }
                    i = j;
                    continue;
                }
                _ => return None,
            };
            let ch = ch?;
            for _ in 0..ch.len_utf8() {
                map.push(base + i);
            }
            out.push(ch);
            i += len;
            continue;
        }
        for k in 0..c.len_utf8() {
            map.push(base + i + k);
        }
        out.push(c);
        i += c.len_utf8();
    }
    map.push(base + i);
    (out == decoded).then_some(map)
}

/// Maps an expression span (offsets in the decoded string) to a file span.
pub(crate) fn map_span(map: Option<&[usize]>, value_span: &Span, s: &Span) -> Span {
    match map {
        Some(m) => {
            let start = m.get(s.start).copied().unwrap_or(value_span.start);
            let end = if s.end > s.start { m.get(s.end - 1).map_or(start, |&e| e + 1) } else { start };
            start..end.max(start)
        }
        None => value_span.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_spans() {
        let text = "a = 1\n[[rule]]\nid = \"R1\"\nwhen = 'x > 1'\n";
        let src = SourceFile::new("t.toml".into(), text.into());
        let mut diags = Vec::new();
        let Some(doc) = parse_document(&src, &mut diags) else { panic!("{diags:?}") };
        let (k, v) = &doc[1];
        assert_eq!(k.get_ref(), "rule");
        let Item::Array(rules) = v.get_ref() else { panic!() };
        let Item::Table(t) = rules[0].get_ref() else { panic!() };
        assert_eq!(&text[t[0].0.span()], "id");
        assert_eq!(&text[t[1].1.span()], "'x > 1'");
    }

    #[test]
    fn string_offsets_follow_escapes() {
        let text = r#"when = "a == \"b\" and c""#;
        let span = 7..text.len();
        let decoded = "a == \"b\" and c";
        let Some(m) = string_offsets(text, &span, decoded) else { panic!() };
        let c = decoded.find('c').unwrap_or(0);
        assert_eq!(&text[m[c]..m[c] + 1], "c");
        let text = "when = '''\nx > 1'''";
        let Some(m) = string_offsets(text, &(7..text.len()), "x > 1") else { panic!() };
        assert_eq!(&text[m[0]..m[0] + 1], "x");
    }

    #[test]
    fn toml_errors_have_positions() {
        let src = SourceFile::new("t.toml".into(), "a = \n".into());
        let mut diags = Vec::new();
        assert!(parse_document(&src, &mut diags).is_none());
        assert_eq!(diags[0].code, "E-TOML");
        assert_eq!(diags[0].line, 1);
    }
}
