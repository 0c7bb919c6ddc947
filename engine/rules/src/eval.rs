//! Evaluator: the typed expression tree and its evaluation.
//!
//! The type checker builds one tree per type ([`BoolExpr`], [`NumExpr`],
//! [`StrExpr`], [`IpExpr`]), so evaluation never checks types at run time.
//! Missing values are `None` all the way through: every operation states what
//! it does with a missing operand (see `docs/rules.md`, "Missing values").
//! Evaluation is generic over [`Source`] (monomorphized), recursive and
//! allocation-free: strings are borrowed from the source or from constants,
//! and `lower`/`upper` are lazy case-folded views ([`FStr`]).

use std::net::IpAddr;
use std::sync::Arc;

use riskd_core::event::{EventKind, RepaymentMethod};
use riskd_core::Value;

use crate::lists::{CidrSet, NumSet, StrSet};
use crate::schema::{Slot, Source};

/// A case transformation applied lazily to a borrowed string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Case {
    Keep,
    Lower,
    Upper,
}

/// A borrowed string seen through a case transformation. Equality, prefix,
/// suffix, containment and set membership compare the transformed
/// characters without building the transformed string.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FStr<'a> {
    s: &'a str,
    case: Case,
}

pub(crate) enum FoldIter<'a> {
    Keep(std::str::Chars<'a>),
    Lower(std::iter::FlatMap<std::str::Chars<'a>, std::char::ToLowercase, fn(char) -> std::char::ToLowercase>),
    Upper(std::iter::FlatMap<std::str::Chars<'a>, std::char::ToUppercase, fn(char) -> std::char::ToUppercase>),
}

impl Iterator for FoldIter<'_> {
    type Item = char;
    #[inline]
    fn next(&mut self) -> Option<char> {
        match self {
            FoldIter::Keep(c) => c.next(),
            FoldIter::Lower(c) => c.next(),
            FoldIter::Upper(c) => c.next(),
        }
    }
}

impl<'a> FStr<'a> {
    pub fn plain(s: &'a str) -> Self {
        FStr { s, case: Case::Keep }
    }

    #[cfg(test)]
    pub fn new(s: &'a str, case: Case) -> Self {
        FStr { s, case }
    }

    pub fn is_plain(self) -> bool {
        self.case == Case::Keep
    }

    pub fn raw(self) -> &'a str {
        self.s
    }

    /// Applies an outer `lower`/`upper`. The outermost one wins, which is
    /// exact for every character whose upper and lower forms map back and
    /// forth (all of ASCII).
    pub fn fold(self, case: Case) -> Self {
        FStr { s: self.s, case }
    }

    pub fn chars(self) -> FoldIter<'a> {
        match self.case {
            Case::Keep => FoldIter::Keep(self.s.chars()),
            Case::Lower => {
                FoldIter::Lower(self.s.chars().flat_map(char::to_lowercase as fn(char) -> std::char::ToLowercase))
            }
            Case::Upper => {
                FoldIter::Upper(self.s.chars().flat_map(char::to_uppercase as fn(char) -> std::char::ToUppercase))
            }
        }
    }

    pub fn eq_str(self, other: &str) -> bool {
        if self.is_plain() {
            self.s == other
        } else {
            self.chars().eq(other.chars())
        }
    }

    pub fn eq(self, other: FStr<'_>) -> bool {
        if self.is_plain() && other.is_plain() {
            self.s == other.s
        } else {
            self.chars().eq(other.chars())
        }
    }

    pub fn char_len(self) -> usize {
        match self.case {
            Case::Keep => self.s.chars().count(),
            _ => self.chars().count(),
        }
    }

    pub fn starts_with(self, p: FStr<'_>) -> bool {
        if self.is_plain() && p.is_plain() {
            return self.s.starts_with(p.s);
        }
        let mut it = self.chars();
        p.chars().all(|c| it.next() == Some(c))
    }

    pub fn ends_with(self, p: FStr<'_>) -> bool {
        if self.is_plain() && p.is_plain() {
            return self.s.ends_with(p.s);
        }
        let (n, k) = (self.char_len(), p.char_len());
        k <= n && self.chars().skip(n - k).eq(p.chars())
    }

    pub fn contains(self, p: FStr<'_>) -> bool {
        if self.is_plain() && p.is_plain() {
            return self.s.contains(p.s);
        }
        let (n, k) = (self.char_len(), p.char_len());
        k <= n && (0..=n - k).any(|i| self.chars().skip(i).take(k).eq(p.chars()))
    }

    pub fn to_owned_string(self) -> String {
        self.chars().collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrTest {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug)]
pub(crate) enum NumExpr {
    Const(Option<f64>),
    Load(Slot),
    Neg(Box<NumExpr>),
    Arith(ArithOp, Box<NumExpr>, Box<NumExpr>),
    Abs(Box<NumExpr>),
    Min(Box<[NumExpr]>),
    Max(Box<[NumExpr]>),
    Coalesce(Box<[NumExpr]>),
    Len(Box<StrExpr>),
    Apr(Box<AprArgs>),
}

/// The arguments of `apr(amount, term_months, annual_rate, fees, method)`.
#[derive(Debug)]
pub(crate) struct AprArgs {
    pub amount: NumExpr,
    pub term_months: NumExpr,
    pub annual_rate: NumExpr,
    pub fees: NumExpr,
    pub method: StrExpr,
}

impl AprArgs {
    #[inline]
    fn eval<S: Source>(&self, src: &S) -> Option<f64> {
        let method = self.method.eval(src)?;
        // Compared through the case view: no string is built per event.
        let method = RepaymentMethod::ALL.iter().copied().find(|m| method.eq_str(m.as_str()))?;
        let args =
            [self.amount.eval(src)?, self.term_months.eval(src)?, self.annual_rate.eval(src)?, self.fees.eval(src)?];
        let key = (args.map(f64::to_bits), method);
        // Several rules (a reject cap, a review cap, ...) ask for the APR of
        // the same offer; the solve (a few hundred ns) is done once per
        // offer and thread. The key is every input, so a hit is exact.
        if let Some((k, v)) = LAST_APR.get() {
            if k == key {
                return v;
            }
        }
        let v = crate::apr::apr(args[0], args[1], args[2], args[3], method);
        LAST_APR.set(Some((key, v)));
        v
    }
}

type AprKey = ([u64; 4], RepaymentMethod);

thread_local! {
    /// The last APR computed on this thread, with its inputs.
    static LAST_APR: std::cell::Cell<Option<(AprKey, Option<f64>)>> = const { std::cell::Cell::new(None) };
}

#[derive(Debug)]
pub(crate) enum StrExpr {
    Const(Option<Box<str>>),
    Load(Slot),
    Fold(Case, Box<StrExpr>),
    Coalesce(Box<[StrExpr]>),
}

#[derive(Debug)]
pub(crate) enum IpExpr {
    Const(Option<IpAddr>),
    Load(Slot),
    Coalesce(Box<[IpExpr]>),
}

#[derive(Debug)]
pub(crate) enum BoolExpr {
    Const(Option<bool>),
    Load(Slot),
    Not(Box<BoolExpr>),
    And(Box<BoolExpr>, Box<BoolExpr>),
    Or(Box<BoolExpr>, Box<BoolExpr>),
    CmpNum(CmpOp, Box<NumExpr>, Box<NumExpr>),
    /// `negated` first: `!=` rather than `==`.
    EqBool(bool, Box<BoolExpr>, Box<BoolExpr>),
    EqStr(bool, Box<StrExpr>, Box<StrExpr>),
    EqIp(bool, Box<IpExpr>, Box<IpExpr>),
    /// `negated` first: `not in` rather than `in`.
    InStr(bool, Box<StrExpr>, Arc<StrSet>),
    InNum(bool, Box<NumExpr>, Arc<NumSet>),
    InIp(bool, Box<IpExpr>, Arc<CidrSet>),
    StrTest(StrTest, Box<StrExpr>, Box<StrExpr>),
    IsMissing(Box<Typed>),
    Coalesce(Box<[BoolExpr]>),
}

/// An expression of any type.
#[derive(Debug)]
pub(crate) enum Typed {
    Num(NumExpr),
    Bool(BoolExpr),
    Str(StrExpr),
    Ip(IpExpr),
}

impl NumExpr {
    #[inline]
    pub fn eval<S: Source>(&self, src: &S) -> Option<f64> {
        match self {
            NumExpr::Const(v) => *v,
            NumExpr::Load(slot) => match src.get(*slot) {
                Value::Num(v) if v.is_finite() => Some(v),
                _ => None,
            },
            NumExpr::Neg(a) => a.eval(src).map(|v| -v),
            NumExpr::Arith(op, a, b) => {
                let (a, b) = (a.eval(src)?, b.eval(src)?);
                let r = match op {
                    ArithOp::Add => a + b,
                    ArithOp::Sub => a - b,
                    ArithOp::Mul => a * b,
                    ArithOp::Div => a / b,
                    ArithOp::Rem => a % b,
                };
                // x / 0, x % 0 and overflow are missing, never inf or NaN.
                r.is_finite().then_some(r)
            }
            NumExpr::Abs(a) => a.eval(src).map(f64::abs),
            NumExpr::Min(xs) => fold_all(xs, src, f64::min),
            NumExpr::Max(xs) => fold_all(xs, src, f64::max),
            NumExpr::Coalesce(xs) => xs.iter().find_map(|x| x.eval(src)),
            NumExpr::Len(s) => s.eval(src).map(|s| s.char_len() as f64),
            NumExpr::Apr(args) => args.eval(src),
        }
    }
}

/// min/max: missing when any argument is missing.
#[inline]
fn fold_all<S: Source>(xs: &[NumExpr], src: &S, f: fn(f64, f64) -> f64) -> Option<f64> {
    let mut acc: Option<f64> = None;
    for x in xs {
        let v = x.eval(src)?;
        acc = Some(acc.map_or(v, |a| f(a, v)));
    }
    acc
}

impl StrExpr {
    #[inline]
    pub fn eval<'a, S: Source>(&'a self, src: &'a S) -> Option<FStr<'a>> {
        match self {
            StrExpr::Const(v) => v.as_deref().map(FStr::plain),
            StrExpr::Load(slot) => match src.get(*slot) {
                Value::Str(s) => Some(FStr::plain(s)),
                _ => None,
            },
            StrExpr::Fold(case, s) => s.eval(src).map(|s| s.fold(*case)),
            StrExpr::Coalesce(xs) => xs.iter().find_map(|x| x.eval(src)),
        }
    }
}

impl IpExpr {
    #[inline]
    pub fn eval<S: Source>(&self, src: &S) -> Option<IpAddr> {
        match self {
            IpExpr::Const(v) => *v,
            IpExpr::Load(slot) => match src.get(*slot) {
                Value::Ip(ip) => Some(ip),
                _ => None,
            },
            IpExpr::Coalesce(xs) => xs.iter().find_map(|x| x.eval(src)),
        }
    }
}

impl BoolExpr {
    /// `Some(true)`, `Some(false)` or `None` (missing). A rule fires only on
    /// `Some(true)`.
    #[inline]
    pub fn eval<S: Source>(&self, src: &S) -> Option<bool> {
        match self {
            BoolExpr::Const(v) => *v,
            BoolExpr::Load(slot) => match src.get(*slot) {
                Value::Bool(b) => Some(b),
                _ => None,
            },
            BoolExpr::Not(a) => a.eval(src).map(|b| !b),
            // Kleene logic: false decides `and`, true decides `or`, even
            // when the other side is missing.
            BoolExpr::And(a, b) => match a.eval(src) {
                Some(false) => Some(false),
                l => match b.eval(src) {
                    Some(false) => Some(false),
                    Some(true) => l,
                    None => None,
                },
            },
            BoolExpr::Or(a, b) => match a.eval(src) {
                Some(true) => Some(true),
                l => match b.eval(src) {
                    Some(true) => Some(true),
                    Some(false) => l,
                    None => None,
                },
            },
            BoolExpr::CmpNum(op, a, b) => {
                let (a, b) = (a.eval(src)?, b.eval(src)?);
                Some(match op {
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                    CmpOp::Lt => a < b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    CmpOp::Ge => a >= b,
                })
            }
            BoolExpr::EqBool(neg, a, b) => Some((a.eval(src)? == b.eval(src)?) != *neg),
            BoolExpr::EqStr(neg, a, b) => Some(a.eval(src)?.eq(b.eval(src)?) != *neg),
            BoolExpr::EqIp(neg, a, b) => Some((canonical(a.eval(src)?) == canonical(b.eval(src)?)) != *neg),
            BoolExpr::InStr(neg, a, set) => Some(set.contains(a.eval(src)?) != *neg),
            BoolExpr::InNum(neg, a, set) => Some(set.contains(a.eval(src)?) != *neg),
            BoolExpr::InIp(neg, a, set) => Some(set.contains(a.eval(src)?) != *neg),
            BoolExpr::StrTest(t, a, b) => {
                let (a, b) = (a.eval(src)?, b.eval(src)?);
                Some(match t {
                    StrTest::StartsWith => a.starts_with(b),
                    StrTest::EndsWith => a.ends_with(b),
                    StrTest::Contains => a.contains(b),
                })
            }
            BoolExpr::IsMissing(x) => Some(x.is_missing(src)),
            BoolExpr::Coalesce(xs) => xs.iter().find_map(|x| x.eval(src)),
        }
    }
}

/// IPv4-mapped IPv6 addresses compare equal to their IPv4 form.
#[inline]
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Typed {
    #[inline]
    pub fn is_missing<S: Source>(&self, src: &S) -> bool {
        match self {
            Typed::Num(x) => x.eval(src).is_none(),
            Typed::Bool(x) => x.eval(src).is_none(),
            Typed::Str(x) => x.eval(src).is_none(),
            Typed::Ip(x) => x.eval(src).is_none(),
        }
    }

    pub fn ty(&self) -> riskd_core::FieldType {
        use riskd_core::FieldType;
        match self {
            Typed::Num(_) => FieldType::Num,
            Typed::Bool(_) => FieldType::Bool,
            Typed::Str(_) => FieldType::Str,
            Typed::Ip(_) => FieldType::Ip,
        }
    }

    pub fn value<S: Source>(&self, src: &S) -> ExprValue {
        let v = match self {
            Typed::Num(x) => x.eval(src).map(ExprValue::Num),
            Typed::Bool(x) => x.eval(src).map(ExprValue::Bool),
            Typed::Str(x) => x.eval(src).map(|s| ExprValue::Str(s.to_owned_string())),
            Typed::Ip(x) => x.eval(src).map(ExprValue::Ip),
        };
        v.unwrap_or(ExprValue::Missing)
    }
}

/// The value of an [`crate::Expression`], owned (for tools and tests, not
/// for the hot path).
#[derive(Clone, Debug, PartialEq)]
pub enum ExprValue {
    Missing,
    Num(f64),
    Bool(bool),
    Str(String),
    Ip(IpAddr),
}

impl std::fmt::Display for ExprValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExprValue::Missing => f.write_str("missing"),
            ExprValue::Num(n) => write!(f, "{n}"),
            ExprValue::Bool(b) => write!(f, "{b}"),
            ExprValue::Str(s) => write!(f, "'{s}'"),
            ExprValue::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// A source with no values, for evaluating constant sub-trees at load time.
pub(crate) struct NoValues;

impl Source for NoValues {
    fn kind(&self) -> EventKind {
        EventKind::Registration
    }
    fn get(&self, _: Slot) -> Value<'_> {
        Value::Missing
    }
}
