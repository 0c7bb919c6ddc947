//! Compiler: constant folding of typed expressions, and the checks that need
//! the whole rule set (duplicate ids, unreachable rules, rules that can never
//! fire, actions that do not fit the rule's events).

use riskd_core::event::{EventKind, KindMask};
use riskd_core::fields::kinds_text;
use riskd_core::Action;

use crate::diag::{AuthorError, Severity};
use crate::eval::{AprArgs, BoolExpr, IpExpr, NoValues, NumExpr, StrExpr, Typed};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CompileError {
    #[error("rule id `{id}` is already used at {first}")]
    DuplicateId { id: String, first: String },
    #[error("rule `{id}` can never be reached: `{by}` above it in this first_match stage always fires first")]
    Unreachable { id: String, by: String },
    #[error("rule `{id}` can never fire: its condition is always {value}")]
    NeverFires { id: String, value: &'static str },
    #[error("`{action}` is an action for loan applications, but this rule also applies to {others}")]
    ApplicationAction { action: &'static str, others: String },
    #[error(
        "`{action}` is an action for events other than loan applications, but this rule applies to loan_application"
    )]
    EventAction { action: &'static str, all_events: bool },
}

impl AuthorError for CompileError {
    fn code(&self) -> &'static str {
        match self {
            CompileError::DuplicateId { .. } => "E-DUPLICATE-ID",
            CompileError::Unreachable { .. } => "E-UNREACHABLE",
            CompileError::NeverFires { .. } => "W-NEVER-FIRES",
            CompileError::ApplicationAction { .. } | CompileError::EventAction { .. } => "E-ACTION-EVENTS",
        }
    }

    fn severity(&self) -> Severity {
        match self {
            CompileError::NeverFires { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            CompileError::DuplicateId { .. } => Some("every rule needs an id of its own".into()),
            CompileError::Unreachable { by, .. } => {
                Some(format!("move this rule above `{by}`, narrow `{by}`, or make this rule `mode = \"shadow\"`"))
            }
            CompileError::NeverFires { .. } => Some("a rule fires only when its condition is true".into()),
            CompileError::ApplicationAction { .. } => Some(
                "add `events = [\"loan_application\"]`; for other events use `alert` (or `pass`) in a separate rule"
                    .into(),
            ),
            CompileError::EventAction { all_events: true, .. } => Some(
                "list the other event types in `events`, and write a separate rule with `review` for loan_application"
                    .into(),
            ),
            CompileError::EventAction { .. } => {
                Some("for loan applications use `review` (or `approve`/`reject`) instead".into())
            }
        }
    }
}

/// Checks that an action fits the event kinds a rule applies to: approve /
/// review / reject only on loan applications, pass / alert only elsewhere.
pub(crate) fn check_action(action: Action, events: KindMask) -> Option<CompileError> {
    let app = EventKind::LoanApplication.bit();
    match action {
        Action::Approve | Action::Review | Action::Reject if events & !app != 0 => {
            Some(CompileError::ApplicationAction { action: action.as_str(), others: kinds_text(events & !app) })
        }
        Action::Pass | Action::Alert if events & app != 0 => Some(CompileError::EventAction {
            action: action.as_str(),
            all_events: events == riskd_core::event::ALL_KINDS,
        }),
        _ => None,
    }
}

// ---- constant folding ----------------------------------------------------
//
// A sub-tree that reads no value is evaluated once, here, and replaced by its
// result. `and`/`or` with one constant side are simplified where Kleene logic
// allows it: `false and x` is false, `true and x` is x, `true or x` is true,
// `false or x` is x (whatever x is, missing included).

impl BoolExpr {
    pub(crate) fn reads_values(&self) -> bool {
        match self {
            BoolExpr::Const(_) => false,
            BoolExpr::Load(_) => true,
            BoolExpr::Not(a) => a.reads_values(),
            BoolExpr::And(a, b) | BoolExpr::Or(a, b) | BoolExpr::EqBool(_, a, b) => {
                a.reads_values() || b.reads_values()
            }
            BoolExpr::CmpNum(_, a, b) => a.reads_values() || b.reads_values(),
            BoolExpr::EqStr(_, a, b) | BoolExpr::StrTest(_, a, b) => a.reads_values() || b.reads_values(),
            BoolExpr::EqIp(_, a, b) => a.reads_values() || b.reads_values(),
            BoolExpr::InStr(_, a, _) => a.reads_values(),
            BoolExpr::InNum(_, a, _) => a.reads_values(),
            BoolExpr::InIp(_, a, _) => a.reads_values(),
            BoolExpr::IsMissing(x) => x.reads_values(),
            BoolExpr::Coalesce(xs) => xs.iter().any(BoolExpr::reads_values),
        }
    }

    pub(crate) fn fold(self) -> BoolExpr {
        if !self.reads_values() {
            return BoolExpr::Const(self.eval(&NoValues));
        }
        match self {
            BoolExpr::Not(a) => match a.fold() {
                BoolExpr::Not(inner) => *inner,
                a => BoolExpr::Not(Box::new(a)),
            },
            BoolExpr::And(a, b) => match (a.fold(), b.fold()) {
                (BoolExpr::Const(Some(false)), _) | (_, BoolExpr::Const(Some(false))) => BoolExpr::Const(Some(false)),
                (BoolExpr::Const(Some(true)), x) | (x, BoolExpr::Const(Some(true))) => x,
                (a, b) => BoolExpr::And(Box::new(a), Box::new(b)),
            },
            BoolExpr::Or(a, b) => match (a.fold(), b.fold()) {
                (BoolExpr::Const(Some(true)), _) | (_, BoolExpr::Const(Some(true))) => BoolExpr::Const(Some(true)),
                (BoolExpr::Const(Some(false)), x) | (x, BoolExpr::Const(Some(false))) => x,
                (a, b) => BoolExpr::Or(Box::new(a), Box::new(b)),
            },
            BoolExpr::CmpNum(op, a, b) => BoolExpr::CmpNum(op, Box::new(a.fold()), Box::new(b.fold())),
            BoolExpr::EqBool(n, a, b) => BoolExpr::EqBool(n, Box::new(a.fold()), Box::new(b.fold())),
            BoolExpr::EqStr(n, a, b) => BoolExpr::EqStr(n, Box::new(a.fold()), Box::new(b.fold())),
            BoolExpr::EqIp(n, a, b) => BoolExpr::EqIp(n, Box::new(a.fold()), Box::new(b.fold())),
            BoolExpr::InStr(n, a, s) => BoolExpr::InStr(n, Box::new(a.fold()), s),
            BoolExpr::InNum(n, a, s) => BoolExpr::InNum(n, Box::new(a.fold()), s),
            BoolExpr::InIp(n, a, s) => BoolExpr::InIp(n, Box::new(a.fold()), s),
            BoolExpr::StrTest(t, a, b) => BoolExpr::StrTest(t, Box::new(a.fold()), Box::new(b.fold())),
            BoolExpr::IsMissing(x) => BoolExpr::IsMissing(Box::new(x.fold())),
            BoolExpr::Coalesce(xs) => {
                BoolExpr::Coalesce(fold_coalesce(xs, BoolExpr::fold, |x| matches!(x, BoolExpr::Const(Some(_)))))
            }
            other => other,
        }
    }
}

/// Folds the arguments of `coalesce` and drops those after the first one
/// that is a known, present constant (they can never be reached).
fn fold_coalesce<T>(xs: Box<[T]>, fold: fn(T) -> T, present_const: fn(&T) -> bool) -> Box<[T]> {
    let mut out = Vec::with_capacity(xs.len());
    for x in xs.into_vec() {
        let x = fold(x);
        let stop = present_const(&x);
        out.push(x);
        if stop {
            break;
        }
    }
    out.into_boxed_slice()
}

impl NumExpr {
    pub(crate) fn reads_values(&self) -> bool {
        match self {
            NumExpr::Const(_) => false,
            NumExpr::Load(_) => true,
            NumExpr::Neg(a) | NumExpr::Abs(a) => a.reads_values(),
            NumExpr::Arith(_, a, b) => a.reads_values() || b.reads_values(),
            NumExpr::Min(xs) | NumExpr::Max(xs) | NumExpr::Coalesce(xs) => xs.iter().any(NumExpr::reads_values),
            NumExpr::Len(s) => s.reads_values(),
            NumExpr::Apr(a) => {
                a.amount.reads_values()
                    || a.term_months.reads_values()
                    || a.annual_rate.reads_values()
                    || a.fees.reads_values()
                    || a.method.reads_values()
            }
        }
    }

    pub(crate) fn fold(self) -> NumExpr {
        if !self.reads_values() {
            return NumExpr::Const(self.eval(&NoValues));
        }
        match self {
            NumExpr::Neg(a) => NumExpr::Neg(Box::new(a.fold())),
            NumExpr::Abs(a) => NumExpr::Abs(Box::new(a.fold())),
            NumExpr::Arith(op, a, b) => NumExpr::Arith(op, Box::new(a.fold()), Box::new(b.fold())),
            NumExpr::Min(xs) => NumExpr::Min(xs.into_vec().into_iter().map(NumExpr::fold).collect()),
            NumExpr::Max(xs) => NumExpr::Max(xs.into_vec().into_iter().map(NumExpr::fold).collect()),
            NumExpr::Coalesce(xs) => {
                NumExpr::Coalesce(fold_coalesce(xs, NumExpr::fold, |x| matches!(x, NumExpr::Const(Some(_)))))
            }
            NumExpr::Len(s) => NumExpr::Len(Box::new(s.fold())),
            NumExpr::Apr(a) => {
                let a = *a;
                NumExpr::Apr(Box::new(AprArgs {
                    amount: a.amount.fold(),
                    term_months: a.term_months.fold(),
                    annual_rate: a.annual_rate.fold(),
                    fees: a.fees.fold(),
                    method: a.method.fold(),
                }))
            }
            other => other,
        }
    }
}

impl StrExpr {
    pub(crate) fn reads_values(&self) -> bool {
        match self {
            StrExpr::Const(_) => false,
            StrExpr::Load(_) => true,
            StrExpr::Fold(_, s) => s.reads_values(),
            StrExpr::Coalesce(xs) => xs.iter().any(StrExpr::reads_values),
        }
    }

    pub(crate) fn fold(self) -> StrExpr {
        if !self.reads_values() {
            return StrExpr::Const(self.eval(&NoValues).map(|s| s.to_owned_string().into_boxed_str()));
        }
        match self {
            StrExpr::Fold(case, s) => StrExpr::Fold(case, Box::new(s.fold())),
            StrExpr::Coalesce(xs) => {
                StrExpr::Coalesce(fold_coalesce(xs, StrExpr::fold, |x| matches!(x, StrExpr::Const(Some(_)))))
            }
            other => other,
        }
    }
}

impl IpExpr {
    pub(crate) fn reads_values(&self) -> bool {
        match self {
            IpExpr::Const(_) => false,
            IpExpr::Load(_) => true,
            IpExpr::Coalesce(xs) => xs.iter().any(IpExpr::reads_values),
        }
    }

    pub(crate) fn fold(self) -> IpExpr {
        if !self.reads_values() {
            return IpExpr::Const(self.eval(&NoValues));
        }
        match self {
            IpExpr::Coalesce(xs) => {
                IpExpr::Coalesce(fold_coalesce(xs, IpExpr::fold, |x| matches!(x, IpExpr::Const(Some(_)))))
            }
            other => other,
        }
    }
}

impl Typed {
    pub(crate) fn reads_values(&self) -> bool {
        match self {
            Typed::Num(x) => x.reads_values(),
            Typed::Bool(x) => x.reads_values(),
            Typed::Str(x) => x.reads_values(),
            Typed::Ip(x) => x.reads_values(),
        }
    }

    pub(crate) fn fold(self) -> Typed {
        match self {
            Typed::Num(x) => Typed::Num(x.fold()),
            Typed::Bool(x) => Typed::Bool(x.fold()),
            Typed::Str(x) => Typed::Str(x.fold()),
            Typed::Ip(x) => Typed::Ip(x.fold()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{ArithOp, CmpOp};
    use crate::schema::Slot;

    #[test]
    fn folding() {
        let e = BoolExpr::And(
            Box::new(BoolExpr::CmpNum(
                CmpOp::Gt,
                Box::new(NumExpr::Arith(
                    ArithOp::Mul,
                    Box::new(NumExpr::Const(Some(2.0))),
                    Box::new(NumExpr::Const(Some(3.0))),
                )),
                Box::new(NumExpr::Const(Some(5.0))),
            )),
            Box::new(BoolExpr::Load(Slot(0))),
        );
        assert!(matches!(e.fold(), BoolExpr::Load(Slot(0))));
        let e = BoolExpr::Or(Box::new(BoolExpr::Load(Slot(0))), Box::new(BoolExpr::Const(Some(true))));
        assert!(matches!(e.fold(), BoolExpr::Const(Some(true))));
        let e = BoolExpr::And(Box::new(BoolExpr::Load(Slot(0))), Box::new(BoolExpr::Const(None)));
        assert!(matches!(e.fold(), BoolExpr::And(..)));
        let e = NumExpr::Arith(ArithOp::Div, Box::new(NumExpr::Const(Some(1.0))), Box::new(NumExpr::Const(Some(0.0))));
        assert!(matches!(e.fold(), NumExpr::Const(None)));
    }

    #[test]
    fn actions_fit_events() {
        let app = EventKind::LoanApplication.bit();
        let login = EventKind::Login.bit();
        assert!(check_action(Action::Reject, app).is_none());
        assert!(check_action(Action::Reject, app | login).is_some());
        assert!(check_action(Action::Alert, login).is_none());
        assert!(check_action(Action::Alert, app).is_some());
    }
}
