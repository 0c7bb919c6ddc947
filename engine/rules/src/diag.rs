//! Diagnostics: what an analyst sees when a rule, list or test file is wrong.
//!
//! Every stage of the compiler has its own error enum; each implements
//! [`AuthorError`] (a stable code, an optional hint) and is turned into a
//! [`Diagnostic`] here, with the file, 1-based line and column, the byte span
//! and the source line, so that [`Diagnostics::render`] can print it like a
//! compiler error without reading the file again.

use std::fmt;
use std::ops::Range;

pub(crate) type Span = Range<usize>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The rule set is refused.
    Error,
    /// Reported, but the rule set loads (see [`crate::RuleSet::warnings`]).
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One author error or warning.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Stable code, e.g. `E-UNKNOWN-NAME`; documented in `docs/rules.md`.
    pub code: &'static str,
    pub severity: Severity,
    /// The file as given to the loader (e.g. `rules/velocity.toml`).
    pub file: String,
    /// 1-based line; 0 when the diagnostic is about the file as a whole.
    pub line: usize,
    /// 1-based column, counted in characters; 0 with `line == 0`.
    pub col: usize,
    /// Byte span in the file.
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
    /// The text of line `line`, for rendering.
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(code: &'static str, severity: Severity, file: &SourceFile, span: Span, message: String) -> Self {
        let (line, col) = file.locate(span.start);
        Diagnostic {
            code,
            severity,
            file: file.display.clone(),
            line,
            col,
            span,
            message,
            hint: None,
            source_line: file.line_text(line).map(str::to_string),
        }
    }

    /// A diagnostic about a whole file (e.g. it cannot be read).
    pub(crate) fn for_file(code: &'static str, file: &str, message: String) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            file: file.to_string(),
            line: 0,
            col: 0,
            span: 0..0,
            message,
            hint: None,
            source_line: None,
        }
    }

    pub(crate) fn from_error<E: AuthorError>(file: &SourceFile, span: Span, err: &E) -> Self {
        let mut d = Diagnostic::new(err.code(), err.severity(), file, span, err.to_string());
        d.hint = err.hint();
        d
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn render_into(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "{}[{}]: {}", self.severity, self.code, self.message);
        if self.line == 0 {
            let _ = writeln!(out, " --> {}", self.file);
        } else {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            let _ = writeln!(out, "{pad}--> {}:{}:{}", self.file, self.line, self.col);
            if let Some(text) = &self.source_line {
                // Tabs become one space so that the carets line up.
                let shown: String = text.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
                let line_chars = shown.chars().count();
                let start = self.col.saturating_sub(1).min(line_chars);
                let span_chars = self.span_chars(text);
                let width = span_chars.clamp(1, (line_chars - start).max(1));
                let _ = writeln!(out, "{pad} |");
                let _ = writeln!(out, "{num} | {shown}");
                let _ = writeln!(out, "{pad} | {}{}", " ".repeat(start), "^".repeat(width));
            }
            if let Some(h) = &self.hint {
                let _ = writeln!(out, "{pad} = hint: {h}");
            }
            return;
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "  = hint: {h}");
        }
    }

    /// Number of characters the span covers on its first line.
    fn span_chars(&self, line_text: &str) -> usize {
        let len = self.span.end.saturating_sub(self.span.start);
        // Find the byte offset of `col` in the line, then count chars over `len` bytes.
        let start_byte = line_text.char_indices().nth(self.col.saturating_sub(1)).map_or(line_text.len(), |(i, _)| i);
        let end_byte = (start_byte + len).min(line_text.len());
        line_text.get(start_byte..end_byte).map_or(1, |s| s.chars().count())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.render_into(&mut s);
        f.write_str(s.trim_end())
    }
}

/// All diagnostics of one load or test run, in the order they were found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Compiler-style text: one block per diagnostic, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.0 {
            d.render_into(&mut out);
            out.push('\n');
        }
        let errors = self.error_count();
        let warnings = self.0.len() - errors;
        out.push_str(&format!(
            "{} {}, {} {}\n",
            errors,
            plural(errors, "error"),
            warnings,
            plural(warnings, "warning")
        ));
        out
    }

    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

/// Implemented by every stage's error enum.
pub(crate) trait AuthorError: fmt::Display {
    fn code(&self) -> &'static str;
    fn hint(&self) -> Option<String> {
        None
    }
    fn severity(&self) -> Severity {
        Severity::Error
    }
}

/// A file's text with its line starts, to turn byte offsets into positions.
pub(crate) struct SourceFile {
    pub display: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(display: String, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile { display, text, line_starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1;
        (line, col)
    }

    pub fn line_text(&self, line: usize) -> Option<&str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self.line_starts.get(line).map_or(self.text.len(), |&e| e);
        self.text.get(start..end).map(|s| s.trim_end_matches(['\n', '\r']))
    }
}

pub(crate) use riskd_core::text::suggest;

pub(crate) fn did_you_mean(s: Option<String>) -> Option<String> {
    s.map(|s| format!("did you mean `{s}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let f = SourceFile::new("f".into(), "ab\ncé d\n".into());
        assert_eq!(f.locate(0), (1, 1));
        assert_eq!(f.locate(3), (2, 1));
        assert_eq!(f.locate(7), (2, 4));
        assert_eq!(f.line_text(2), Some("cé d"));
    }

    #[test]
    fn suggestions() {
        let names = ["device.distinct_users_24h", "device.applications_1h", "event.amount"];
        assert_eq!(suggest("device.distinct_user_24h", names).as_deref(), Some("device.distinct_users_24h"));
        assert_eq!(suggest("distinct_users_24h", names).as_deref(), Some("device.distinct_users_24h"));
        assert_eq!(suggest("event.amout", names).as_deref(), Some("event.amount"));
        assert_eq!(suggest("zzz", names), None);
    }
}
