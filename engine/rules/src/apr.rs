//! The annual percentage rate (APR) of a loan offer, for compliance rules.
//!
//! A nominal rate alone understates what a loan costs once up-front fees are
//! taken off the amount paid out, so lending regulation caps the rate that
//! makes the borrower's actual cash flows balance: the internal rate of
//! return (IRR). Here the borrower receives `amount - fees` at month 0 and
//! pays the repayment method's schedule at the end of months `1..=n`; the
//! monthly rate `r` solves
//!
//! ```text
//! amount - fees = sum over k = 1..n of payment_k / (1 + r)^k
//! ```
//!
//! and **APR = 12 r**: the monthly IRR annualised without compounding, the
//! convention IRR-based caps such as 24% and 36% are commonly quoted in (and
//! that of the US Regulation Z APR). The compounded figure `(1 + r)^12 - 1`
//! (the EU's APRC) is higher for the same offer; a cap stated in that
//! convention converts with [`effective_to_nominal`].
//!
//! Schedules ([`RepaymentMethod`]):
//! * `equal_installment`: n equal payments `A i / (1 - (1 + i)^-n)` with
//!   `i = annual_rate / 12` (`A / n` when the rate is 0);
//! * `interest_only`: `A i` every month and the principal `A` with the last.
//!
//! The solver is Newton's method kept inside a bracket that always holds the
//! root, falling back to bisection whenever a Newton step would leave it or
//! is not finite. The present value is a convex, strictly decreasing
//! function of `r`, so the root is unique. Inputs outside the domain of a
//! loan (no amount, fees that take all of it, a term that is not a whole
//! number of months, a negative or absurd rate, non-finite values) give
//! `None`, which rules read as missing: never a panic, never a made-up rate.

use riskd_core::event::RepaymentMethod;

/// Longest term accepted, in months (100 years).
pub const MAX_TERM_MONTHS: f64 = 1200.0;
/// Highest nominal annual rate accepted, as a fraction (10,000%).
pub const MAX_ANNUAL_RATE: f64 = 100.0;
/// Highest monthly IRR the solver looks for (an APR of 12,000,000%); an
/// offer beyond it has no meaningful APR.
const MAX_MONTHLY_RATE: f64 = 1e6;
const MAX_ITERATIONS: usize = 200;

/// The payments of a loan: `installment` at the end of every month
/// `1..=months`, plus `balloon` with the last one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub months: u32,
    pub installment: f64,
    pub balloon: f64,
}

impl Schedule {
    /// The schedule of `amount` over `months` at a nominal `annual_rate`
    /// (a fraction, 0.12 for 12%). `None` outside the domain of a loan.
    pub fn new(amount: f64, months: f64, annual_rate: f64, method: RepaymentMethod) -> Option<Schedule> {
        let valid = amount.is_finite()
            && amount > 0.0
            && months.is_finite()
            && (1.0..=MAX_TERM_MONTHS).contains(&months)
            && months.fract() == 0.0
            && annual_rate.is_finite()
            && (0.0..=MAX_ANNUAL_RATE).contains(&annual_rate);
        if !valid {
            return None;
        }
        let i = annual_rate / 12.0;
        let (installment, balloon) = match method {
            RepaymentMethod::EqualInstallment if i == 0.0 => (amount / months, 0.0),
            RepaymentMethod::EqualInstallment => (amount / annuity(i, months), 0.0),
            RepaymentMethod::InterestOnly => (amount * annual_rate / 12.0, amount),
        };
        (installment.is_finite() && balloon.is_finite()).then_some(Schedule {
            months: months as u32,
            installment,
            balloon,
        })
    }

    /// Present value of the payments at monthly rate `r`, and its
    /// derivative in `r`.
    fn present_value(&self, r: f64) -> (f64, f64) {
        let n = f64::from(self.months);
        let discount = (-n * r.ln_1p()).exp(); // (1 + r)^-n
        let pv = self.installment * annuity(r, n) + self.balloon * discount;
        let dpv = self.installment * annuity_slope(r, n) - self.balloon * n * discount / (1.0 + r);
        (pv, dpv)
    }
}

/// Present value of 1 paid at the end of each of `n` months at rate `r`:
/// `(1 - (1 + r)^-n) / r`, computed without cancellation for small `r`.
fn annuity(r: f64, n: f64) -> f64 {
    if r == 0.0 {
        n
    } else {
        -(-n * r.ln_1p()).exp_m1() / r
    }
}

/// Derivative of [`annuity`] in `r`: `-sum k (1 + r)^-(k+1)`.
fn annuity_slope(r: f64, n: f64) -> f64 {
    if r.abs() < 1e-7 {
        // Taylor series at 0; the closed form below cancels badly here.
        -n * (n + 1.0) / 2.0 + r * n * (n + 1.0) * (n + 2.0) / 3.0
    } else {
        let v_n1 = (-(n + 1.0) * r.ln_1p()).exp(); // (1 + r)^-(n+1)
        (n * v_n1 - annuity(r, n)) / r
    }
}

/// The monthly IRR of receiving `net` now and paying `schedule`, `None` when
/// there is none in `[floor, MAX_MONTHLY_RATE]`. `floor` must be a rate at
/// which the payments are worth at least `net`.
fn solve_monthly(schedule: &Schedule, net: f64, floor: f64) -> Option<f64> {
    let f = |r: f64| {
        let (pv, dpv) = schedule.present_value(r);
        (pv - net, dpv)
    };
    let (mut lo, mut hi) = (floor, floor + 0.05);
    // Widen until the payments are worth less than `net`: the root is then
    // inside [lo, hi], since f decreases.
    loop {
        let (v, _) = f(hi);
        if !v.is_finite() {
            return None;
        }
        if v < 0.0 {
            break;
        }
        lo = hi;
        if hi >= MAX_MONTHLY_RATE {
            return None;
        }
        hi = (hi * 4.0).min(MAX_MONTHLY_RATE);
    }
    let mut r = lo;
    for _ in 0..MAX_ITERATIONS {
        let (v, d) = f(r);
        if v == 0.0 {
            return Some(r);
        }
        if v > 0.0 {
            lo = r;
        } else {
            hi = r;
        }
        let newton = r - v / d;
        let next =
            if d < 0.0 && newton.is_finite() && newton > lo && newton < hi { newton } else { lo + (hi - lo) / 2.0 };
        let tolerance = 4.0 * f64::EPSILON * next.abs().max(1e-12);
        if (next - r).abs() <= tolerance || hi - lo <= tolerance {
            return Some(next);
        }
        r = next;
    }
    // Bisection halves the bracket every step that Newton does not take, so
    // this is only reached by a bracket already narrower than any input's
    // precision; its middle is the answer to that precision.
    Some(lo + (hi - lo) / 2.0)
}

/// The monthly internal rate of return of an offer. See the module docs.
pub fn monthly_irr(amount: f64, term_months: f64, annual_rate: f64, fees: f64, method: RepaymentMethod) -> Option<f64> {
    let schedule = Schedule::new(amount, term_months, annual_rate, method)?;
    if !fees.is_finite() || fees < 0.0 || fees >= amount {
        return None;
    }
    let i = annual_rate / 12.0;
    if fees == 0.0 {
        // At the nominal monthly rate the schedule is worth the amount, by
        // construction: without fees the IRR is that rate, exactly.
        return Some(i);
    }
    let net = amount - fees;
    let (at_nominal, _) = schedule.present_value(i);
    if at_nominal <= net {
        // Fees too small to move the present value at f64 precision.
        return Some(i);
    }
    solve_monthly(&schedule, net, i)
}

/// APR of an offer as a fraction (0.24 for 24%): 12 times the monthly IRR.
/// `amount` and `fees` in the same currency, `fees` paid up front (deducted
/// from what the borrower receives), `annual_rate` the nominal rate as a
/// fraction, `term_months` a whole number of months.
pub fn apr(amount: f64, term_months: f64, annual_rate: f64, fees: f64, method: RepaymentMethod) -> Option<f64> {
    let r = monthly_irr(amount, term_months, annual_rate, fees, method)?;
    let apr = 12.0 * r;
    apr.is_finite().then_some(apr)
}

/// The nominal APR (12 r) equivalent to an effective annual rate
/// `(1 + r)^12 - 1`, for caps stated in the compounded convention.
pub fn effective_to_nominal(effective: f64) -> f64 {
    12.0 * ((effective.ln_1p() / 12.0).exp_m1())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annuity_slope_matches_a_difference_quotient() {
        for &(r, n) in &[(0.0, 12.0), (1e-9, 12.0), (0.01, 12.0), (0.3, 360.0), (5.0, 2.0)] {
            let h = 1e-6 * (1.0 + r);
            let numeric = (annuity(r + h, n) - annuity((r - h).max(0.0), n)) / (r + h - (r - h).max(0.0));
            let exact = annuity_slope(r, n);
            assert!((numeric - exact).abs() <= 1e-4 * exact.abs(), "r={r} n={n}: {numeric} vs {exact}");
        }
    }

    #[test]
    fn newton_agrees_with_plain_bisection() {
        // 200 halvings of [1%, 100%] pin the root far below f64 precision.
        let s = Schedule::new(1000.0, 12.0, 0.12, RepaymentMethod::EqualInstallment).unwrap();
        let net = 950.0;
        let newton = solve_monthly(&s, net, 0.01).unwrap();
        let (mut lo, mut hi) = (0.01_f64, 1.0_f64);
        for _ in 0..200 {
            let mid = lo + (hi - lo) / 2.0;
            if s.present_value(mid).0 > net {
                lo = mid
            } else {
                hi = mid
            }
        }
        assert!((newton - lo).abs() < 1e-14, "{newton} vs {lo}");
    }
}
