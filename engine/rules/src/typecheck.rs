//! Type checker: the syntax tree to a typed evaluator tree.
//!
//! Names are resolved to slots here (unknown names get an edit-distance
//! suggestion), each name's availability is checked against the event kinds
//! the rule applies to, lists are resolved to their sets, inline sets are
//! built, and every operator's operand types are checked. Errors are
//! collected: one expression can report several.

use std::net::IpAddr;
use std::sync::Arc;

use riskd_core::event::{EventKind, KindMask, RepaymentMethod};
use riskd_core::fields::kinds_text;
use riskd_core::FieldType;

use crate::diag::{did_you_mean, suggest, AuthorError, Span};
use crate::eval::{AprArgs, ArithOp, BoolExpr, Case, CmpOp, IpExpr, NumExpr, StrExpr, StrTest, Typed};
use crate::lists::{parse_cidr, CidrSet, ListData, ListKind, Lists, NumSet, StrSet};
use crate::parser::{BinOp, Expr, ExprKind};
use crate::schema::Schema;

/// Functions of the language: name, arity text (for messages).
pub(crate) const FUNCTIONS: &[(&str, &str)] = &[
    ("is_missing", "1 argument"),
    ("is_present", "1 argument"),
    ("coalesce", "2 or more arguments"),
    ("lower", "1 argument"),
    ("upper", "1 argument"),
    ("len", "1 argument"),
    ("starts_with", "2 arguments"),
    ("ends_with", "2 arguments"),
    ("contains", "2 arguments"),
    ("abs", "1 argument"),
    ("min", "2 or more arguments"),
    ("max", "2 or more arguments"),
    ("list", "1 argument"),
    ("apr", "no arguments, or 5: apr(amount, term_months, annual_rate, fees, repayment_method)"),
];

/// The application's own values `apr()` reads, in argument order.
const APR_NAMES: [&str; 5] =
    ["event.amount", "event.term_months", "event.annual_rate", "event.fees", "event.repayment_method"];

/// A named constant from `chain.toml`'s `[constants]` table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ConstValue {
    Num(f64),
    Str(String),
    Bool(bool),
}

/// Constants by name (without the `const.` prefix).
pub(crate) type Constants = std::collections::BTreeMap<String, ConstValue>;

fn a(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Num => "a number",
        FieldType::Bool => "a bool",
        FieldType::Str => "a string",
        FieldType::Ip => "an ip",
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum TypeError {
    #[error("unknown name `{name}`")]
    UnknownName { name: String, hint: Option<String> },
    #[error("`{name}` has no value on {missing_on} events, but this rule applies to them")]
    NotAvailable { name: String, missing_on: String, suggested: KindMask },
    #[error("`{op}` cannot compare {} with {}", a(*.left), a(*.right))]
    Mismatch { op: &'static str, left: FieldType, right: FieldType, quoted_number: bool },
    #[error("{what} expects {}, found {}", a(*.expected), a(*.found))]
    Expected { what: String, expected: FieldType, found: FieldType },
    #[error("`{op}` compares numbers, found {}", a(*.found))]
    Ordering { op: &'static str, found: FieldType },
    #[error("a condition must be true or false, but this expression is {}", a(*.found))]
    NotBool { found: FieldType },
    #[error("unknown function `{name}`")]
    UnknownFunction { name: String, suggestion: Option<String> },
    #[error("`{name}` takes {expected}, found {found}")]
    Arity { name: String, expected: &'static str, found: usize },
    #[error("unknown list `{name}`")]
    UnknownList { name: String, suggestion: Option<String>, known: Vec<String> },
    #[error("list `{list}` holds {}, but the value is {}", .kind.describe(), a(*.ty))]
    ListType { list: String, kind: ListKind, ty: FieldType },
    #[error("`list` takes the name of a list in quotes")]
    ListArg,
    #[error("the right side of `{op}` must be a list('name') or a set like ['a', 'b']")]
    BadSet { op: &'static str },
    #[error("set elements must be literal values")]
    SetElement,
    #[error("a set cannot be empty")]
    EmptySet,
    #[error("`{op}` tests {} against a set of {}", a(*.value), a(*.element))]
    SetType { op: &'static str, value: FieldType, element: FieldType },
    #[error("{0} can only be used on the right of `in`")]
    SetOutsideIn(&'static str),
    #[error("`{0}` is not an IP address")]
    BadIp(String),
    #[error("`{0}` is not an IP address or CIDR range")]
    BadCidr(String),
    #[error("unknown repayment method `{0}`")]
    BadMethod(String),
    #[error("unknown constant `const.{name}`")]
    UnknownConst { name: String, suggestion: Option<String>, known: Vec<String> },
}

impl AuthorError for TypeError {
    fn code(&self) -> &'static str {
        match self {
            TypeError::UnknownName { .. } => "E-UNKNOWN-NAME",
            TypeError::NotAvailable { .. } => "E-NOT-AVAILABLE",
            TypeError::Mismatch { .. }
            | TypeError::Expected { .. }
            | TypeError::Ordering { .. }
            | TypeError::ListType { .. }
            | TypeError::SetType { .. } => "E-TYPE-MISMATCH",
            TypeError::NotBool { .. } => "E-NOT-BOOL",
            TypeError::UnknownFunction { .. } => "E-UNKNOWN-FUNCTION",
            TypeError::Arity { .. } => "E-ARITY",
            TypeError::UnknownList { .. } => "E-UNKNOWN-LIST",
            TypeError::ListArg | TypeError::BadMethod(_) => "E-BAD-ARGUMENT",
            TypeError::UnknownConst { .. } => "E-UNKNOWN-NAME",
            TypeError::BadSet { .. } | TypeError::SetElement | TypeError::EmptySet | TypeError::SetOutsideIn(_) => {
                "E-BAD-SET"
            }
            TypeError::BadIp(_) | TypeError::BadCidr(_) => "E-BAD-IP",
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            TypeError::UnknownName { hint, .. } => hint.clone(),
            TypeError::NotAvailable { name, suggested, .. } => Some(if *suggested == 0 {
                format!("none of this rule's events carry `{name}`; use it in a rule for other events")
            } else {
                let list: Vec<String> = EventKind::ALL
                    .iter()
                    .filter(|k| suggested & k.bit() != 0)
                    .map(|k| format!("\"{}\"", k.as_str()))
                    .collect();
                format!("restrict the rule to the events that carry it: events = [{}]", list.join(", "))
            }),
            TypeError::Mismatch { quoted_number: true, .. } => {
                Some("'5' in quotes is a string; write numbers without quotes".into())
            }
            TypeError::Mismatch { left: FieldType::Bool, .. } | TypeError::Mismatch { right: FieldType::Bool, .. } => {
                Some("true and false are written without quotes".into())
            }
            TypeError::NotBool { found: FieldType::Num } => {
                Some("compare the number, e.g. `x > 0`, or test it with is_missing(x)".into())
            }
            TypeError::NotBool { .. } => Some("compare the value, e.g. `x == 'abc'`".into()),
            TypeError::UnknownFunction { suggestion, .. } => did_you_mean(suggestion.clone()).or_else(|| {
                let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.0).collect();
                Some(format!("functions are: {}", names.join(", ")))
            }),
            TypeError::UnknownList { suggestion, known, .. } => did_you_mean(suggestion.clone()).or_else(|| {
                Some(if known.is_empty() {
                    "lists are the .txt files in rules/lists/; there are none".to_string()
                } else {
                    format!("lists are the .txt files in rules/lists/: {}", known.join(", "))
                })
            }),
            TypeError::ListType { kind: ListKind::Str, ty: FieldType::Ip, .. } => {
                Some("a list of addresses needs `# type: cidr` as its first line".into())
            }
            TypeError::ListType { .. } => {
                Some("the first line `# type: string|number|cidr` sets what a list holds".into())
            }
            TypeError::ListArg => Some("e.g. list('blacklist_devices')".into()),
            TypeError::BadMethod(m) => {
                let all: Vec<&str> = RepaymentMethod::ALL.iter().map(|m| m.as_str()).collect();
                did_you_mean(suggest(m, all.iter().copied()))
                    .or_else(|| Some(format!("repayment methods are: {}", all.join(", "))))
            }
            TypeError::UnknownConst { suggestion, known, .. } => {
                did_you_mean(suggestion.as_ref().map(|s| format!("const.{s}"))).or_else(|| {
                    Some(if known.is_empty() {
                        "constants are set in the [constants] table of chain.toml; there are none".to_string()
                    } else {
                        format!("constants (in chain.toml's [constants]) are: {}", known.join(", "))
                    })
                })
            }
            TypeError::SetElement => Some("to compare with a name, use `==` and `or`".into()),
            TypeError::BadIp(_) => Some("to test a range, write `entity.ip in ['10.0.0.0/8']`".into()),
            TypeError::BadCidr(_) => Some("e.g. '10.66.0.0/16', '10.1.2.3' or '2001:db8::/32'".into()),
            _ => None,
        }
    }
}

pub(crate) struct Checker<'a> {
    schema: &'a Schema,
    lists: &'a Lists,
    constants: Option<&'a Constants>,
    /// The event kinds the rule applies to.
    events: KindMask,
    pub errors: Vec<(Span, TypeError)>,
}

impl<'a> Checker<'a> {
    pub fn new(schema: &'a Schema, lists: &'a Lists, events: KindMask) -> Self {
        Checker { schema, lists, constants: None, events, errors: Vec::new() }
    }

    /// Makes `const.<name>` read the rule set's constants.
    pub fn with_constants(mut self, constants: &'a Constants) -> Self {
        self.constants = Some(constants);
        self
    }

    fn err<T>(&mut self, span: &Span, e: TypeError) -> Option<T> {
        self.errors.push((span.clone(), e));
        None
    }

    /// A rule condition: must be a bool.
    pub fn condition(&mut self, e: &Expr) -> Option<BoolExpr> {
        match self.check(e)? {
            Typed::Bool(b) => Some(b),
            other => self.err(&e.span, TypeError::NotBool { found: other.ty() }),
        }
    }

    pub fn check(&mut self, e: &Expr) -> Option<Typed> {
        match &e.kind {
            ExprKind::Num(n) => Some(Typed::Num(NumExpr::Const(Some(*n)))),
            ExprKind::Str(s) => Some(Typed::Str(StrExpr::Const(Some(s.as_str().into())))),
            ExprKind::Bool(b) => Some(Typed::Bool(BoolExpr::Const(Some(*b)))),
            ExprKind::Name(name) => self.name(name, &e.span),
            ExprKind::Neg(x) => {
                let v = self.check(x)?;
                let n = self.want_num(v, &x.span, "unary `-`")?;
                Some(Typed::Num(NumExpr::Neg(Box::new(n))))
            }
            ExprKind::Not(x) => {
                let v = self.check(x)?;
                let b = self.want_bool(v, &x.span, "`not`")?;
                Some(Typed::Bool(BoolExpr::Not(Box::new(b))))
            }
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r),
            ExprKind::In { value, set, negated } => self.membership(value, set, *negated),
            ExprKind::Call { name, name_span, args } => self.call(name, name_span, args, &e.span),
            ExprKind::Set(_) => self.err(&e.span, TypeError::SetOutsideIn("a set [...]")),
        }
    }

    fn name(&mut self, name: &str, span: &Span) -> Option<Typed> {
        if let Some(c) = name.strip_prefix("const.") {
            return self.constant(c, span);
        }
        let Some(info) = self.schema.get(name) else {
            let hint = if FUNCTIONS.iter().any(|f| f.0 == name) {
                Some(format!("`{name}` is a function: write {name}(...)"))
            } else if matches!(name, "missing" | "null" | "none" | "nil" | "None" | "NULL") {
                Some("test for a missing value with is_missing(x)".into())
            } else {
                did_you_mean(suggest(name, self.schema.names()))
            };
            return self.err(span, TypeError::UnknownName { name: name.to_string(), hint });
        };
        if info.kinds & self.events != self.events {
            self.errors.push((
                span.clone(),
                TypeError::NotAvailable {
                    name: name.to_string(),
                    missing_on: kinds_text(self.events & !info.kinds),
                    suggested: self.events & info.kinds,
                },
            ));
        }
        let slot = info.slot;
        Some(match info.ty {
            FieldType::Num => Typed::Num(NumExpr::Load(slot)),
            FieldType::Bool => Typed::Bool(BoolExpr::Load(slot)),
            FieldType::Str => Typed::Str(StrExpr::Load(slot)),
            FieldType::Ip => Typed::Ip(IpExpr::Load(slot)),
        })
    }

    /// `const.<name>`: replaced by its value at load time.
    fn constant(&mut self, name: &str, span: &Span) -> Option<Typed> {
        let empty = Constants::new();
        let constants = self.constants.unwrap_or(&empty);
        match constants.get(name) {
            Some(ConstValue::Num(n)) => Some(Typed::Num(NumExpr::Const(Some(*n)))),
            Some(ConstValue::Str(s)) => Some(Typed::Str(StrExpr::Const(Some(s.as_str().into())))),
            Some(ConstValue::Bool(b)) => Some(Typed::Bool(BoolExpr::Const(Some(*b)))),
            None => {
                let known: Vec<String> = constants.keys().map(|k| format!("const.{k}")).collect();
                let suggestion = suggest(name, constants.keys().map(String::as_str));
                self.err(span, TypeError::UnknownConst { name: name.to_string(), suggestion, known })
            }
        }
    }

    fn want_num(&mut self, v: Typed, span: &Span, what: &str) -> Option<NumExpr> {
        match v {
            Typed::Num(n) => Some(n),
            other => self
                .err(span, TypeError::Expected { what: what.to_string(), expected: FieldType::Num, found: other.ty() }),
        }
    }

    fn want_bool(&mut self, v: Typed, span: &Span, what: &str) -> Option<BoolExpr> {
        match v {
            Typed::Bool(b) => Some(b),
            other => self.err(
                span,
                TypeError::Expected { what: what.to_string(), expected: FieldType::Bool, found: other.ty() },
            ),
        }
    }

    fn want_str(&mut self, v: Typed, span: &Span, what: &str) -> Option<StrExpr> {
        match v {
            Typed::Str(s) => Some(s),
            other => self
                .err(span, TypeError::Expected { what: what.to_string(), expected: FieldType::Str, found: other.ty() }),
        }
    }

    /// Checks both operands, reporting errors in both before giving up.
    fn both(&mut self, l: &Expr, r: &Expr) -> Option<(Typed, Typed)> {
        let lv = self.check(l);
        let rv = self.check(r);
        Some((lv?, rv?))
    }

    fn binary(&mut self, op: BinOp, l: &Expr, r: &Expr) -> Option<Typed> {
        let (lv, rv) = self.both(l, r)?;
        let sym = op.symbol();
        match op {
            BinOp::And | BinOp::Or => {
                let what = format!("`{sym}`");
                let lb = self.want_bool(lv, &l.span, &what);
                let rb = self.want_bool(rv, &r.span, &what);
                let (lb, rb) = (Box::new(lb?), Box::new(rb?));
                Some(Typed::Bool(if op == BinOp::And { BoolExpr::And(lb, rb) } else { BoolExpr::Or(lb, rb) }))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                let what = format!("`{sym}`");
                let ln = self.want_num(lv, &l.span, &what);
                let rn = self.want_num(rv, &r.span, &what);
                let arith = match op {
                    BinOp::Add => ArithOp::Add,
                    BinOp::Sub => ArithOp::Sub,
                    BinOp::Mul => ArithOp::Mul,
                    BinOp::Div => ArithOp::Div,
                    _ => ArithOp::Rem,
                };
                Some(Typed::Num(NumExpr::Arith(arith, Box::new(ln?), Box::new(rn?))))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let cmp = match op {
                    BinOp::Lt => CmpOp::Lt,
                    BinOp::Le => CmpOp::Le,
                    BinOp::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                match (lv, rv) {
                    (Typed::Num(a), Typed::Num(b)) => {
                        Some(Typed::Bool(BoolExpr::CmpNum(cmp, Box::new(a), Box::new(b))))
                    }
                    (Typed::Num(_), other) => self.ordering_error(sym, other.ty(), l, r, &r.span),
                    (other, _) => self.ordering_error(sym, other.ty(), l, r, &l.span),
                }
            }
            BinOp::Eq | BinOp::Ne => {
                let neg = op == BinOp::Ne;
                let b = |x| Box::new(x);
                match (lv, rv) {
                    (Typed::Num(x), Typed::Num(y)) => {
                        Some(Typed::Bool(BoolExpr::CmpNum(if neg { CmpOp::Ne } else { CmpOp::Eq }, b(x), b(y))))
                    }
                    (Typed::Bool(x), Typed::Bool(y)) => {
                        Some(Typed::Bool(BoolExpr::EqBool(neg, Box::new(x), Box::new(y))))
                    }
                    (Typed::Str(x), Typed::Str(y)) => Some(Typed::Bool(BoolExpr::EqStr(neg, Box::new(x), Box::new(y)))),
                    (Typed::Ip(x), Typed::Ip(y)) => Some(Typed::Bool(BoolExpr::EqIp(neg, Box::new(x), Box::new(y)))),
                    (Typed::Ip(x), Typed::Str(_)) => {
                        let y = self.ip_literal(r, sym)?;
                        Some(Typed::Bool(BoolExpr::EqIp(neg, Box::new(x), Box::new(y))))
                    }
                    (Typed::Str(_), Typed::Ip(y)) => {
                        let x = self.ip_literal(l, sym)?;
                        Some(Typed::Bool(BoolExpr::EqIp(neg, Box::new(x), Box::new(y))))
                    }
                    (x, y) => {
                        let quoted_number = [l, r].iter().any(|e| match &e.kind {
                            ExprKind::Str(s) => s.trim().parse::<f64>().is_ok(),
                            _ => false,
                        });
                        let span = l.span.start..r.span.end;
                        self.err(&span, TypeError::Mismatch { op: sym, left: x.ty(), right: y.ty(), quoted_number })
                    }
                }
            }
        }
    }

    fn ordering_error(&mut self, op: &'static str, found: FieldType, l: &Expr, r: &Expr, at: &Span) -> Option<Typed> {
        // A number against a quoted number reads best as a comparison mismatch.
        let quoted = [l, r].iter().any(|e| matches!(&e.kind, ExprKind::Str(s) if s.trim().parse::<f64>().is_ok()));
        if quoted {
            let span = l.span.start..r.span.end;
            let (lt, rt) = if at == &r.span { (FieldType::Num, found) } else { (found, FieldType::Num) };
            return self.err(&span, TypeError::Mismatch { op, left: lt, right: rt, quoted_number: true });
        }
        self.err(at, TypeError::Ordering { op, found })
    }

    /// A string literal where an IP address is expected.
    fn ip_literal(&mut self, e: &Expr, op: &'static str) -> Option<IpExpr> {
        match &e.kind {
            ExprKind::Str(s) => match s.trim().parse::<IpAddr>() {
                Ok(ip) => Some(IpExpr::Const(Some(ip))),
                Err(_) => self.err(&e.span, TypeError::BadIp(s.clone())),
            },
            _ => self.err(
                &e.span,
                TypeError::Mismatch { op, left: FieldType::Ip, right: FieldType::Str, quoted_number: false },
            ),
        }
    }

    fn membership(&mut self, value: &Expr, set: &Expr, negated: bool) -> Option<Typed> {
        let op = if negated { "not in" } else { "in" };
        let v = self.check(value);
        let data = match &set.kind {
            ExprKind::Set(items) => self.inline_set(items, &set.span, v.as_ref().map(Typed::ty), op),
            ExprKind::Call { name, args, .. } if name == "list" => self.list_ref(args, &set.span),
            _ => self.err(&set.span, TypeError::BadSet { op }),
        };
        let (v, data) = (v?, data?);
        let ty = v.ty();
        Some(Typed::Bool(match (v, data) {
            (Typed::Str(s), ListData::Str(set)) => BoolExpr::InStr(negated, Box::new(s), set),
            (Typed::Num(n), ListData::Num(set)) => BoolExpr::InNum(negated, Box::new(n), set),
            (Typed::Ip(ip), ListData::Cidr(set)) => BoolExpr::InIp(negated, Box::new(ip), set),
            (_, data) => {
                let list = match &set.kind {
                    ExprKind::Call { args, .. } => match args.first().map(|a| &a.kind) {
                        Some(ExprKind::Str(n)) => n.clone(),
                        _ => String::new(),
                    },
                    _ => String::new(),
                };
                let span = value.span.start..set.span.end;
                return self.err(&span, TypeError::ListType { list, kind: data.kind(), ty });
            }
        }))
    }

    fn list_ref(&mut self, args: &[Expr], span: &Span) -> Option<ListData> {
        let [arg] = args else {
            return self.err(span, TypeError::Arity { name: "list".into(), expected: "1 argument", found: args.len() });
        };
        let ExprKind::Str(name) = &arg.kind else {
            return self.err(&arg.span, TypeError::ListArg);
        };
        match self.lists.by_name.get(name) {
            Some(d) => Some(d.clone()),
            None => {
                let known: Vec<String> = self.lists.by_name.keys().cloned().collect();
                let suggestion = suggest(name, known.iter().map(String::as_str));
                self.err(&arg.span, TypeError::UnknownList { name: name.clone(), suggestion, known })
            }
        }
    }

    /// `[...]` on the right of `in`: literals of the value's type. For an
    /// ip value the elements are quoted addresses or CIDR ranges.
    fn inline_set(
        &mut self,
        items: &[Expr],
        span: &Span,
        value: Option<FieldType>,
        op: &'static str,
    ) -> Option<ListData> {
        if items.is_empty() {
            return self.err(span, TypeError::EmptySet);
        }
        let mut strs = Vec::new();
        let mut nums = Vec::new();
        let mut nets = Vec::new();
        let mut ok = true;
        let mut element_ty = None;
        for it in items {
            let (ty, lit) = match &it.kind {
                ExprKind::Str(s) => (FieldType::Str, Lit::Str(s)),
                ExprKind::Num(n) => (FieldType::Num, Lit::Num(*n)),
                ExprKind::Neg(x) => match x.kind {
                    ExprKind::Num(n) => (FieldType::Num, Lit::Num(-n)),
                    _ => {
                        ok = false;
                        self.errors.push((it.span.clone(), TypeError::SetElement));
                        continue;
                    }
                },
                ExprKind::Bool(_) => (FieldType::Bool, Lit::Other),
                _ => {
                    ok = false;
                    self.errors.push((it.span.clone(), TypeError::SetElement));
                    continue;
                }
            };
            // The first element sets the set's type when the value's is unknown.
            let want = value.or(element_ty).unwrap_or(ty);
            element_ty.get_or_insert(ty);
            match (want, lit) {
                (FieldType::Str, Lit::Str(s)) => strs.push(s.as_str()),
                (FieldType::Num, Lit::Num(n)) => nums.push(n),
                (FieldType::Ip, Lit::Str(s)) => match parse_cidr(s) {
                    Some(n) => nets.push(n),
                    None => {
                        ok = false;
                        self.errors.push((it.span.clone(), TypeError::BadCidr(s.clone())));
                    }
                },
                (want, _) => {
                    ok = false;
                    self.errors.push((it.span.clone(), TypeError::SetType { op, value: want, element: ty }));
                }
            }
        }
        if !ok {
            return None;
        }
        match value? {
            FieldType::Str => Some(ListData::Str(Arc::new(StrSet::new(strs)))),
            FieldType::Num => Some(ListData::Num(Arc::new(NumSet::new(nums)))),
            FieldType::Ip => Some(ListData::Cidr(Arc::new(CidrSet::new(nets)))),
            FieldType::Bool => {
                self.err(span, TypeError::SetType { op, value: FieldType::Bool, element: FieldType::Bool })
            }
        }
    }

    fn call(&mut self, name: &str, name_span: &Span, args: &[Expr], span: &Span) -> Option<Typed> {
        let Some(&(_, arity)) = FUNCTIONS.iter().find(|f| f.0 == name) else {
            // Check the arguments anyway, to report their errors too.
            for a in args {
                self.check(a);
            }
            let suggestion = suggest(name, FUNCTIONS.iter().map(|f| f.0));
            return self.err(name_span, TypeError::UnknownFunction { name: name.to_string(), suggestion });
        };
        let ok_arity = match name {
            "coalesce" | "min" | "max" => args.len() >= 2,
            "starts_with" | "ends_with" | "contains" => args.len() == 2,
            "apr" => args.is_empty() || args.len() == 5,
            _ => args.len() == 1,
        };
        if !ok_arity {
            return self.err(span, TypeError::Arity { name: name.to_string(), expected: arity, found: args.len() });
        }
        if name == "list" {
            return self.err(span, TypeError::SetOutsideIn("list('...')"));
        }
        let what = format!("`{name}`");
        match name {
            "apr" if args.is_empty() => self.apr_of_event(span),
            "apr" => self.apr(args),
            "is_missing" | "is_present" => {
                let v = self.check(&args[0])?;
                let test = BoolExpr::IsMissing(Box::new(v));
                Some(Typed::Bool(if name == "is_present" { BoolExpr::Not(Box::new(test)) } else { test }))
            }
            "lower" | "upper" => {
                let v = self.check(&args[0])?;
                let s = self.want_str(v, &args[0].span, &what)?;
                let case = if name == "lower" { Case::Lower } else { Case::Upper };
                Some(Typed::Str(StrExpr::Fold(case, Box::new(s))))
            }
            "len" => {
                let v = self.check(&args[0])?;
                let s = self.want_str(v, &args[0].span, &what)?;
                Some(Typed::Num(NumExpr::Len(Box::new(s))))
            }
            "abs" => {
                let v = self.check(&args[0])?;
                let n = self.want_num(v, &args[0].span, &what)?;
                Some(Typed::Num(NumExpr::Abs(Box::new(n))))
            }
            "starts_with" | "ends_with" | "contains" => {
                let (x, y) = self.both(&args[0], &args[1])?;
                let x = self.want_str(x, &args[0].span, &what);
                let y = self.want_str(y, &args[1].span, &what);
                let t = match name {
                    "starts_with" => StrTest::StartsWith,
                    "ends_with" => StrTest::EndsWith,
                    _ => StrTest::Contains,
                };
                Some(Typed::Bool(BoolExpr::StrTest(t, Box::new(x?), Box::new(y?))))
            }
            "min" | "max" => {
                let mut nums = Vec::with_capacity(args.len());
                let mut ok = true;
                for a in args {
                    match self.check(a).and_then(|v| self.want_num(v, &a.span, &what)) {
                        Some(n) => nums.push(n),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                let nums = nums.into_boxed_slice();
                Some(Typed::Num(if name == "min" { NumExpr::Min(nums) } else { NumExpr::Max(nums) }))
            }
            _ => self.coalesce(args, &what),
        }
    }

    /// `apr(amount, term_months, annual_rate, fees, repayment_method)`.
    fn apr(&mut self, args: &[Expr]) -> Option<Typed> {
        let labels = ["amount", "term_months", "annual_rate", "fees"];
        let mut nums = Vec::with_capacity(4);
        for (a, label) in args[..4].iter().zip(labels) {
            let n = self.check(a).and_then(|v| self.want_num(v, &a.span, &format!("`apr` ({label})")));
            nums.push(n);
        }
        let m = &args[4];
        let method = match &m.kind {
            // A method written out is checked now; one read from the event
            // is checked by the decoder, and an unknown one is missing.
            ExprKind::Str(s) if RepaymentMethod::parse(s).is_none() => {
                self.err(&m.span, TypeError::BadMethod(s.clone()))
            }
            _ => self.check(m).and_then(|v| self.want_str(v, &m.span, "`apr` (repayment_method)")),
        };
        let mut nums = nums.into_iter();
        let mut next = || nums.next().flatten();
        let (amount, term_months, annual_rate, fees) = (next(), next(), next(), next());
        Some(Typed::Num(NumExpr::Apr(Box::new(AprArgs {
            amount: amount?,
            term_months: term_months?,
            annual_rate: annual_rate?,
            fees: fees?,
            method: method?,
        }))))
    }

    /// `apr()`: the APR of the application being decided, from its amount,
    /// term, rate, fees (none stated: 0) and repayment method.
    fn apr_of_event(&mut self, span: &Span) -> Option<Typed> {
        let mut slots = Vec::with_capacity(APR_NAMES.len());
        let mut kinds = riskd_core::event::ALL_KINDS;
        for name in APR_NAMES {
            let Some(info) = self.schema.get(name) else {
                let hint = Some(
                    "this rule set has no application values; write apr(amount, term_months, annual_rate, fees, repayment_method)"
                        .to_string(),
                );
                return self.err(span, TypeError::UnknownName { name: name.to_string(), hint });
            };
            let want = if name == "event.repayment_method" { FieldType::Str } else { FieldType::Num };
            if info.ty != want {
                let what = format!("`apr()` reading `{name}`");
                return self.err(span, TypeError::Expected { what, expected: want, found: info.ty });
            }
            kinds &= info.kinds;
            slots.push(info.slot);
        }
        if kinds & self.events != self.events {
            self.errors.push((
                span.clone(),
                TypeError::NotAvailable {
                    name: "apr()".into(),
                    missing_on: kinds_text(self.events & !kinds),
                    suggested: self.events & kinds,
                },
            ));
        }
        let fees = NumExpr::Coalesce(Box::new([NumExpr::Load(slots[3]), NumExpr::Const(Some(0.0))]));
        Some(Typed::Num(NumExpr::Apr(Box::new(AprArgs {
            amount: NumExpr::Load(slots[0]),
            term_months: NumExpr::Load(slots[1]),
            annual_rate: NumExpr::Load(slots[2]),
            fees,
            method: StrExpr::Load(slots[4]),
        }))))
    }

    /// `coalesce(a, b, ...)`: all arguments of the first one's type (a quoted
    /// address counts as an ip when the first argument is an ip).
    fn coalesce(&mut self, args: &[Expr], what: &str) -> Option<Typed> {
        let first = self.check(&args[0])?;
        let ty = first.ty();
        let mut nums = Vec::new();
        let mut bools = Vec::new();
        let mut strs = Vec::new();
        let mut ips = Vec::new();
        let mut push = |v: Typed| match v {
            Typed::Num(x) => nums.push(x),
            Typed::Bool(x) => bools.push(x),
            Typed::Str(x) => strs.push(x),
            Typed::Ip(x) => ips.push(x),
        };
        push(first);
        let mut ok = true;
        for a in &args[1..] {
            let v = if ty == FieldType::Ip && matches!(a.kind, ExprKind::Str(_)) {
                self.ip_literal(a, "coalesce").map(Typed::Ip)
            } else {
                self.check(a)
            };
            match v {
                Some(v) if v.ty() == ty => push(v),
                Some(v) => {
                    ok = false;
                    self.errors.push((
                        a.span.clone(),
                        TypeError::Expected {
                            what: format!("{what} (like its first argument)"),
                            expected: ty,
                            found: v.ty(),
                        },
                    ));
                }
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(match ty {
            FieldType::Num => Typed::Num(NumExpr::Coalesce(nums.into_boxed_slice())),
            FieldType::Bool => Typed::Bool(BoolExpr::Coalesce(bools.into_boxed_slice())),
            FieldType::Str => Typed::Str(StrExpr::Coalesce(strs.into_boxed_slice())),
            FieldType::Ip => Typed::Ip(IpExpr::Coalesce(ips.into_boxed_slice())),
        })
    }
}

enum Lit<'e> {
    Str(&'e String),
    Num(f64),
    Other,
}
