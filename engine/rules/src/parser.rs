//! Parser: tokens to an untyped syntax tree, by recursive descent.
//!
//! Precedence, lowest first:
//!
//! | level | operators | associativity |
//! |---|---|---|
//! | 1 | `or` | left |
//! | 2 | `and` | left |
//! | 3 | `not` (prefix) | right |
//! | 4 | `== != < <= > >= in` `not in` | none: `a < b < c` is an error |
//! | 5 | `+ -` | left |
//! | 6 | `* / %` | left |
//! | 7 | `-` (prefix) | right |
//! | 8 | literals, names, calls `f(..)`, `( .. )`, `[ .. ]` | |

use crate::diag::{AuthorError, Span};
use crate::lexer::{Tok, Token};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ExprKind {
    Num(f64),
    Str(String),
    Bool(bool),
    Name(String),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    In { value: Box<Expr>, set: Box<Expr>, negated: bool },
    Call { name: String, name_span: Span, args: Vec<Expr> },
    Set(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("the expression is empty")]
    Empty,
    #[error("expected {expected}, found {found}")]
    Expected { expected: &'static str, found: String },
    #[error("comparisons cannot be chained")]
    ChainedComparison,
    #[error("unexpected {found} after a complete expression")]
    Trailing { found: String, name_follows: bool },
    #[error("`(` is never closed")]
    Unclosed,
    #[error("the condition nests or chains operators more than {MAX_DEPTH} levels deep")]
    TooDeep,
}

/// How deeply a condition may nest (parentheses, calls, sets, `not`, `-`)
/// plus how long its chains of `or`, `and`, `+ -`, `* / %` may be. Every
/// later stage walks the tree recursively, so its depth must be bounded for
/// any text an author (or an attacker with write access to a rules file)
/// can write; real conditions stay far below this.
pub(crate) const MAX_DEPTH: usize = 128;

impl AuthorError for ParseError {
    fn code(&self) -> &'static str {
        "E-SYNTAX"
    }
    fn hint(&self) -> Option<String> {
        match self {
            ParseError::ChainedComparison => Some("combine two comparisons with `and`: `a < b and b < c`".into()),
            ParseError::Trailing { name_follows: true, .. } => {
                Some("is an operator (`and`, `or`, `==`, ...) missing before it?".into())
            }
            ParseError::Empty => Some("write a condition, or `true` for a rule that always fires".into()),
            ParseError::TooDeep => {
                Some("split the condition into several rules, or test many values at once with `in [...]`".into())
            }
            _ => None,
        }
    }
}

type PResult<T> = Result<T, (Span, ParseError)>;

pub(crate) fn parse(tokens: &[Token]) -> PResult<Expr> {
    let mut p = Parser { tokens, pos: 0, depth: 0 };
    if p.peek() == &Tok::Eof {
        return Err((p.span(), ParseError::Empty));
    }
    let e = p.or()?;
    if p.peek() != &Tok::Eof {
        let tok = p.peek().clone();
        let name_follows = matches!(tok, Tok::Name(_) | Tok::Num(_) | Tok::Str(_) | Tok::True | Tok::False);
        if tok == Tok::RParen {
            return Err((
                p.span(),
                ParseError::Expected { expected: "an operator", found: "`)` without a matching `(`".into() },
            ));
        }
        return Err((p.span(), ParseError::Trailing { found: tok.describe(), name_follows }));
    }
    Ok(e)
}

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    /// Nesting plus chain length so far on the current path (see MAX_DEPTH).
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek2(&self) -> &Tok {
        self.tokens.get(self.pos + 1).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn span(&self) -> Span {
        match self.tokens.get(self.pos) {
            Some(t) => t.span.clone(),
            None => self.tokens.last().map_or(0..0, |t| t.span.end..t.span.end),
        }
    }

    fn bump(&mut self) -> Token {
        let t = self.tokens.get(self.pos).cloned().unwrap_or(Token { tok: Tok::Eof, span: self.span() });
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn expected(&self, expected: &'static str) -> (Span, ParseError) {
        (self.span(), ParseError::Expected { expected, found: self.peek().describe() })
    }

    /// One level deeper; an error past [`MAX_DEPTH`].
    fn deeper(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((self.span(), ParseError::TooDeep));
        }
        Ok(())
    }

    fn or(&mut self) -> PResult<Expr> {
        self.deeper()?;
        let base = self.depth;
        let mut left = self.and()?;
        while self.peek() == &Tok::Or {
            self.bump();
            self.deeper()?;
            let right = self.and()?;
            left = binary(BinOp::Or, left, right);
        }
        self.depth = base - 1;
        Ok(left)
    }

    fn and(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let mut left = self.not()?;
        while self.peek() == &Tok::And {
            self.bump();
            self.deeper()?;
            let right = self.not()?;
            left = binary(BinOp::And, left, right);
        }
        self.depth = base;
        Ok(left)
    }

    fn not(&mut self) -> PResult<Expr> {
        if self.peek() == &Tok::Not {
            let start = self.bump().span.start;
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            let span = start..inner.span.end;
            return Ok(Expr { kind: ExprKind::Not(Box::new(inner)), span });
        }
        self.comparison()
    }

    fn comparison_op(&self) -> Option<(BinOp, bool)> {
        // (operator, is `in` / `not in` when the op is unused)
        Some(match self.peek() {
            Tok::Eq => (BinOp::Eq, false),
            Tok::Ne => (BinOp::Ne, false),
            Tok::Lt => (BinOp::Lt, false),
            Tok::Le => (BinOp::Le, false),
            Tok::Gt => (BinOp::Gt, false),
            Tok::Ge => (BinOp::Ge, false),
            Tok::In => (BinOp::Eq, true),
            Tok::Not if self.peek2() == &Tok::In => (BinOp::Ne, true),
            _ => return None,
        })
    }

    fn comparison(&mut self) -> PResult<Expr> {
        let left = self.additive()?;
        let Some((op, is_in)) = self.comparison_op() else {
            return Ok(left);
        };
        if is_in {
            let negated = op == BinOp::Ne;
            if negated {
                self.bump();
            }
            self.bump();
            let set = self.additive()?;
            let span = left.span.start..set.span.end;
            let e = Expr { kind: ExprKind::In { value: Box::new(left), set: Box::new(set), negated }, span };
            return self.no_chain(e);
        }
        self.bump();
        let right = self.additive()?;
        self.no_chain(binary(op, left, right))
    }

    fn no_chain(&self, e: Expr) -> PResult<Expr> {
        if self.comparison_op().is_some() {
            return Err((self.span(), ParseError::ChainedComparison));
        }
        Ok(e)
    }

    fn additive(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => {
                    self.depth = base;
                    return Ok(left);
                }
            };
            self.bump();
            self.deeper()?;
            let right = self.multiplicative()?;
            left = binary(op, left, right);
        }
    }

    fn multiplicative(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                Tok::Percent => BinOp::Rem,
                _ => {
                    self.depth = base;
                    return Ok(left);
                }
            };
            self.bump();
            self.deeper()?;
            let right = self.unary()?;
            left = binary(op, left, right);
        }
    }

    fn unary(&mut self) -> PResult<Expr> {
        if self.peek() == &Tok::Minus {
            let start = self.bump().span.start;
            self.deeper()?;
            let inner = self.unary()?;
            self.depth -= 1;
            let span = start..inner.span.end;
            return Ok(Expr { kind: ExprKind::Neg(Box::new(inner)), span });
        }
        self.primary()
    }

    fn primary(&mut self) -> PResult<Expr> {
        let span = self.span();
        let kind = match self.peek().clone() {
            Tok::Num(n) => ExprKind::Num(n),
            Tok::Str(s) => ExprKind::Str(s),
            Tok::True => ExprKind::Bool(true),
            Tok::False => ExprKind::Bool(false),
            Tok::Name(name) => {
                self.bump();
                if self.peek() != &Tok::LParen {
                    return Ok(Expr { kind: ExprKind::Name(name), span });
                }
                self.bump();
                let (args, end) = self.items(Tok::RParen, "`)` or `,`")?;
                return Ok(Expr {
                    kind: ExprKind::Call { name, name_span: span.clone(), args },
                    span: span.start..end,
                });
            }
            Tok::LParen => {
                self.bump();
                let inner = self.or()?;
                if self.peek() != &Tok::RParen {
                    if self.peek() == &Tok::Eof {
                        return Err((span, ParseError::Unclosed));
                    }
                    return Err(self.expected("`)`"));
                }
                let end = self.bump().span.end;
                return Ok(Expr { kind: inner.kind, span: span.start..end });
            }
            Tok::LBrack => {
                self.bump();
                let (items, end) = self.items(Tok::RBrack, "`]` or `,`")?;
                return Ok(Expr { kind: ExprKind::Set(items), span: span.start..end });
            }
            _ => return Err(self.expected("a value, a name or `(`")),
        };
        self.bump();
        Ok(Expr { kind, span })
    }

    /// Comma-separated expressions up to `close` (a trailing comma is allowed).
    fn items(&mut self, close: Tok, expected: &'static str) -> PResult<(Vec<Expr>, usize)> {
        let mut items = Vec::new();
        loop {
            if *self.peek() == close {
                return Ok((items, self.bump().span.end));
            }
            items.push(self.or()?);
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                }
                t if *t == close => {}
                _ => return Err(self.expected(expected)),
            }
        }
    }
}

fn binary(op: BinOp, left: Expr, right: Expr) -> Expr {
    let span = left.span.start..right.span.end;
    Expr { kind: ExprKind::Binary(op, Box::new(left), Box::new(right)), span }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::lex;

    fn show(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Num(n) => n.to_string(),
            ExprKind::Str(s) => format!("'{s}'"),
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Name(n) => n.clone(),
            ExprKind::Neg(x) => format!("(-{})", show(x)),
            ExprKind::Not(x) => format!("(not {})", show(x)),
            ExprKind::Binary(op, a, b) => format!("({} {} {})", show(a), op.symbol(), show(b)),
            ExprKind::In { value, set, negated } => {
                format!("({} {}in {})", show(value), if *negated { "not " } else { "" }, show(set))
            }
            ExprKind::Call { name, args, .. } => {
                format!("{name}({})", args.iter().map(show).collect::<Vec<_>>().join(", "))
            }
            ExprKind::Set(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
        }
    }

    fn p(s: &str) -> String {
        match lex(s) {
            Ok(t) => match parse(&t) {
                Ok(e) => show(&e),
                Err((sp, e)) => format!("error {sp:?}: {e}"),
            },
            Err((sp, e)) => format!("lex error {sp:?}: {e}"),
        }
    }

    #[test]
    fn precedence() {
        assert_eq!(p("1 + 2 * 3"), "(1 + (2 * 3))");
        assert_eq!(p("1 - 2 - 3"), "((1 - 2) - 3)");
        assert_eq!(p("a or b and c"), "(a or (b and c))");
        assert_eq!(p("not a == b"), "(not (a == b))");
        assert_eq!(p("-a * b"), "((-a) * b)");
        assert_eq!(p("x not in ['a', 'b',]"), "(x not in ['a', 'b'])");
        assert_eq!(p("f(a, g(b))"), "f(a, g(b))");
        assert_eq!(p("(a or b) and c"), "((a or b) and c)");
    }

    #[test]
    fn errors() {
        assert_eq!(p("a < b < c"), "error 6..7: comparisons cannot be chained");
        assert_eq!(p("a b"), "error 2..3: unexpected `b` after a complete expression");
        assert_eq!(p("(a"), "error 0..1: `(` is never closed");
        assert_eq!(p("a +"), "error 3..3: expected a value, a name or `(`, found the end of the expression");
        assert_eq!(p(""), "error 0..0: the expression is empty");
    }
}
