//! Lexer: the text of a `when` expression to tokens with byte spans.
//!
//! Dotted names (`device.distinct_users_24h`) are one token; keywords are
//! recognised only as whole undotted words. Durations (`10m`, `24h`, `7d`)
//! become numbers of milliseconds here, so the rest of the compiler only sees
//! numbers.

use crate::diag::{AuthorError, Span};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Num(f64),
    Str(String),
    Name(String),
    True,
    False,
    And,
    Or,
    Not,
    In,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

impl Tok {
    /// How the token is named in messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Num(n) => format!("number `{n}`"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Name(n) => format!("`{n}`"),
            Tok::Eof => "the end of the expression".to_string(),
            other => format!("`{}`", other.text()),
        }
    }

    fn text(&self) -> &'static str {
        match self {
            Tok::True => "true",
            Tok::False => "false",
            Tok::And => "and",
            Tok::Or => "or",
            Tok::Not => "not",
            Tok::In => "in",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrack => "[",
            Tok::RBrack => "]",
            Tok::Comma => ",",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Num(_) | Tok::Str(_) | Tok::Name(_) | Tok::Eof => "",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum LexError {
    #[error("unexpected character `{0}`")]
    UnexpectedChar(char),
    #[error("`{found}` is not an operator of the rule language")]
    ForeignOperator { found: &'static str, instead: &'static str },
    #[error("unterminated string")]
    UnterminatedString,
    #[error("unknown escape `\\{0}` in a string")]
    BadEscape(char),
    #[error("invalid number `{0}`")]
    BadNumber(String),
    #[error("unknown unit `{0}` after a number")]
    BadUnit(String),
}

impl AuthorError for LexError {
    fn code(&self) -> &'static str {
        "E-SYNTAX"
    }
    fn hint(&self) -> Option<String> {
        match self {
            LexError::ForeignOperator { instead, .. } => Some(format!("write `{instead}`")),
            LexError::UnterminatedString => Some("close the string with the quote it was opened with".into()),
            LexError::BadEscape(_) => Some("allowed escapes: \\\\ \\' \\\" \\n \\t".into()),
            LexError::BadUnit(_) => Some("durations are written 500ms, 30s, 10m, 24h or 7d".into()),
            LexError::UnexpectedChar('"') => Some("inside a TOML \"...\" string, quote text with '...'".into()),
            _ => None,
        }
    }
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, (Span, LexError)> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let single = |tok: Tok| Token { tok, span: start..start + 1 };
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => out.push(single(Tok::LParen)),
            b')' => out.push(single(Tok::RParen)),
            b'[' => out.push(single(Tok::LBrack)),
            b']' => out.push(single(Tok::RBrack)),
            b',' => out.push(single(Tok::Comma)),
            b'+' => out.push(single(Tok::Plus)),
            b'-' => out.push(single(Tok::Minus)),
            b'*' => out.push(single(Tok::Star)),
            b'/' => out.push(single(Tok::Slash)),
            b'%' => out.push(single(Tok::Percent)),
            b'=' | b'!' | b'<' | b'>' | b'&' | b'|' => {
                let next = bytes.get(i + 1).copied();
                let (tok, len) = match (c, next) {
                    (b'=', Some(b'=')) => (Tok::Eq, 2),
                    (b'!', Some(b'=')) => (Tok::Ne, 2),
                    (b'<', Some(b'=')) => (Tok::Le, 2),
                    (b'>', Some(b'=')) => (Tok::Ge, 2),
                    (b'<', Some(b'>')) => {
                        return Err((start..start + 2, LexError::ForeignOperator { found: "<>", instead: "!=" }))
                    }
                    (b'<', _) => (Tok::Lt, 1),
                    (b'>', _) => (Tok::Gt, 1),
                    (b'=', _) => {
                        return Err((start..start + 1, LexError::ForeignOperator { found: "=", instead: "==" }))
                    }
                    (b'!', _) => {
                        return Err((start..start + 1, LexError::ForeignOperator { found: "!", instead: "not" }))
                    }
                    (b'&', Some(b'&')) => {
                        return Err((start..start + 2, LexError::ForeignOperator { found: "&&", instead: "and" }))
                    }
                    (b'|', Some(b'|')) => {
                        return Err((start..start + 2, LexError::ForeignOperator { found: "||", instead: "or" }))
                    }
                    (b'&', _) => {
                        return Err((start..start + 1, LexError::ForeignOperator { found: "&", instead: "and" }))
                    }
                    _ => return Err((start..start + 1, LexError::ForeignOperator { found: "|", instead: "or" })),
                };
                out.push(Token { tok, span: start..start + len });
                i += len;
                continue;
            }
            b'\'' | b'"' => {
                let (s, end) = lex_string(src, i)?;
                out.push(Token { tok: Tok::Str(s), span: start..end });
                i = end;
                continue;
            }
            b'0'..=b'9' | b'.' if c != b'.' || bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let (n, end) = lex_number(src, i)?;
                out.push(Token { tok: Tok::Num(n), span: start..end });
                i = end;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = i;
                loop {
                    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                        end += 1;
                    }
                    // A dot continues the name only when a word follows it.
                    if end + 1 < bytes.len()
                        && bytes[end] == b'.'
                        && (bytes[end + 1].is_ascii_alphanumeric() || bytes[end + 1] == b'_')
                    {
                        end += 1;
                        continue;
                    }
                    break;
                }
                let word = &src[i..end];
                let tok = match word {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    "in" => Tok::In,
                    "true" => Tok::True,
                    "false" => Tok::False,
                    _ => Tok::Name(word.to_string()),
                };
                out.push(Token { tok, span: start..end });
                i = end;
                continue;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err((start..start + ch.len_utf8(), LexError::UnexpectedChar(ch)));
            }
        }
        i += 1;
    }
    out.push(Token { tok: Tok::Eof, span: src.len()..src.len() });
    Ok(out)
}

fn lex_string(src: &str, start: usize) -> Result<(String, usize), (Span, LexError)> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        if c == quote {
            return Ok((out, at + 1));
        }
        if c == '\\' {
            match chars.next() {
                Some((_, e @ ('\\' | '\'' | '"'))) => out.push(e),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e)) => return Err((at..at + 1 + e.len_utf8(), LexError::BadEscape(e))),
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    Err((start..src.len(), LexError::UnterminatedString))
}

fn lex_number(src: &str, start: usize) -> Result<(f64, usize), (Span, LexError)> {
    let bytes = src.as_bytes();
    let mut end = start;
    let mut seen_dot = false;
    while end < bytes.len() {
        match bytes[end] {
            b'0'..=b'9' | b'_' => end += 1,
            b'.' if !seen_dot && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) => {
                seen_dot = true;
                end += 1;
            }
            _ => break,
        }
    }
    // Optional exponent: 1e6, 2.5E-3.
    if end < bytes.len() && (bytes[end] == b'e' || bytes[end] == b'E') {
        let mut e = end + 1;
        if e < bytes.len() && (bytes[e] == b'+' || bytes[e] == b'-') {
            e += 1;
        }
        if e < bytes.len() && bytes[e].is_ascii_digit() {
            while e < bytes.len() && bytes[e].is_ascii_digit() {
                e += 1;
            }
            end = e;
        }
    }
    let digits = &src[start..end];
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    let bad = || (start..end, LexError::BadNumber(digits.to_string()));
    if digits.ends_with('_') || digits.contains("__") {
        return Err(bad());
    }
    let value: f64 = clean.parse().map_err(|_| bad())?;
    // A unit glued to the number makes it a duration in milliseconds.
    let mut unit_end = end;
    while unit_end < bytes.len() && (bytes[unit_end].is_ascii_alphanumeric() || bytes[unit_end] == b'_') {
        unit_end += 1;
    }
    if unit_end == end {
        return Ok((value, end));
    }
    let unit = &src[end..unit_end];
    let factor = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err((start..unit_end, LexError::BadUnit(unit.to_string()))),
    };
    Ok((value * factor, unit_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap_or_default().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn names_keywords_numbers() {
        assert_eq!(
            toks("device.distinct_users_24h >= 3 and not x in list('a')"),
            vec![
                Tok::Name("device.distinct_users_24h".into()),
                Tok::Ge,
                Tok::Num(3.0),
                Tok::And,
                Tok::Not,
                Tok::Name("x".into()),
                Tok::In,
                Tok::Name("list".into()),
                Tok::LParen,
                Tok::Str("a".into()),
                Tok::RParen,
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("10m 1_000 2.5 24h 1e3"),
            vec![
                Tok::Num(600_000.0),
                Tok::Num(1000.0),
                Tok::Num(2.5),
                Tok::Num(86_400_000.0),
                Tok::Num(1000.0),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn errors_have_spans() {
        assert_eq!(lex("a && b").err().map(|e| e.0), Some(2..4));
        assert_eq!(lex("x == 'abc").err().map(|e| e.1), Some(LexError::UnterminatedString));
        assert!(lex("5 km").is_ok());
        assert_eq!(lex("5km").err().map(|e| e.1), Some(LexError::BadUnit("km".into())));
    }
}
