//! The APR compliance function: the solver against schedules computed by
//! hand (the working is in the comments), its edge cases, and `apr(...)` /
//! `apr()` / `const.<name>` in the rule language.

mod common;

use common::{rules_dir, starter_schema, MapSource};
use riskd_core::event::RepaymentMethod::{self, EqualInstallment as Equal, InterestOnly};
use riskd_rules::apr::{apr, effective_to_nominal, monthly_irr, Schedule};
use riskd_rules::{EventKind, ExprValue, RuleSet};

/// The borrower's net present value at monthly rate `r`, summed payment by
/// payment (no closed form), to check a solution independently of the solver.
fn npv(amount: f64, fees: f64, s: &Schedule, r: f64) -> f64 {
    let mut pv = 0.0;
    for k in 1..=s.months {
        let mut pay = s.installment;
        if k == s.months {
            pay += s.balloon;
        }
        pv += pay / (1.0 + r).powi(k as i32);
    }
    pv - (amount - fees)
}

fn close(got: Option<f64>, want: f64, tol: f64) {
    let got = got.unwrap_or_else(|| panic!("expected {want}, got missing"));
    assert!((got - want).abs() <= tol, "expected {want}, got {got} (diff {})", got - want);
}

#[test]
fn one_month_term_is_the_same_for_both_methods() {
    // 1,000 at 12% nominal (1% a month) for 1 month, 20 fees.
    //   Both methods: one payment of 1,000 + 1% = 1,010 at month 1.
    //   Borrower receives 1,000 - 20 = 980: 980 (1 + r) = 1,010
    //   r = 1,010 / 980 - 1 = 30 / 980 = 0.0306122449  ->  APR = 12 r = 0.3673469388
    let want = 12.0 * (1010.0 / 980.0 - 1.0);
    for m in [Equal, InterestOnly] {
        close(apr(1000.0, 1.0, 0.12, 20.0, m), want, 1e-12);
    }
    assert!((want - 0.367_346_938_8).abs() < 1e-10);
}

#[test]
fn two_months_interest_only_solves_a_quadratic() {
    // 1,000 at 12% nominal, interest-only for 2 months, 20 fees.
    //   Month 1: interest 1,000 x 1% = 10.   Month 2: 10 + principal 1,000 = 1,010.
    //   980 = 10 / x + 1,010 / x^2 with x = 1 + r
    //   980 x^2 - 10 x - 1,010 = 0  ->  x = (10 + sqrt(100 + 4 x 980 x 1,010)) / (2 x 980)
    //     = (10 + sqrt(3,959,300)) / 1,960 = (10 + 1,989.7990) / 1,960 = 1.0203056
    //   APR = 12 x 0.0203056 = 0.2436673
    let x = (10.0 + (100.0_f64 + 4.0 * 980.0 * 1010.0).sqrt()) / 1960.0;
    close(apr(1000.0, 2.0, 0.12, 20.0, InterestOnly), 12.0 * (x - 1.0), 1e-12);
    close(apr(1000.0, 2.0, 0.12, 20.0, InterestOnly), 0.243_667_3, 1e-7);
}

#[test]
fn two_months_equal_installments_solves_a_quadratic() {
    // 1,000 at 12% nominal in 2 equal installments, 20 fees.
    //   P = 1,000 x 0.01 / (1 - 1.01^-2) = 10 / (1 - 1 / 1.0201) = 10 / 0.01970395 = 507.512438
    //   Schedule: month 1 pays 507.51 (interest 10.00, principal 497.51, balance 502.49),
    //             month 2 pays 507.51 (interest 5.02, principal 502.49, balance 0).
    //   980 x^2 - P x - P = 0  ->  x = (P + sqrt(P^2 + 4 x 980 x P)) / (2 x 980) = 1.0237337
    //   APR = 12 x 0.0237337 = 0.2848040
    let p: f64 = 10.0 / (1.0 - 1.0 / 1.0201);
    let x = (p + (p * p + 4.0 * 980.0 * p).sqrt()) / 1960.0;
    close(apr(1000.0, 2.0, 0.12, 20.0, Equal), 12.0 * (x - 1.0), 1e-12);
    close(apr(1000.0, 2.0, 0.12, 20.0, Equal), 0.284_804_0, 1e-7);
}

#[test]
fn twelve_equal_installments_with_fees() {
    // 12,000 at 24% nominal (2% a month) over 12 months, 200 fees.
    //   P = 12,000 x 0.02 / (1 - 1.02^-12); 1.02^12 = 1.2682418, 1.02^-12 = 0.7884932
    //     = 240 / 0.2115068 = 1,134.7152 a month (13,616.58 in all).
    //   Net 11,800 = 1,134.7152 x (1 - (1 + r)^-12) / r.
    //   By hand, interpolating the annuity factor 11,800 / 1,134.7152 = 10.39909:
    //     at r = 2.25%: (1 - 1.0225^-12) / 0.0225 = 10.41478 (too high),
    //     at r = 2.30%: (1 - 1.0230^-12) / 0.0230 = 10.38310 (too low),
    //     r = 2.25% + 0.05% x (10.41478 - 10.39909) / (10.41478 - 10.38310) = 2.2748%,
    //     refined to r = 2.274738%: APR = 27.2969% (not 24%: the fees cost 3.3 points).
    let s = Schedule::new(12000.0, 12.0, 0.24, Equal).unwrap();
    close(Some(s.installment), 1_134.715_159, 1e-6);
    let got = apr(12000.0, 12.0, 0.24, 200.0, Equal);
    close(got, 0.272_968_523_8, 1e-9);
    assert!(npv(12000.0, 200.0, &s, got.unwrap() / 12.0).abs() < 1e-7);
}

#[test]
fn twelve_months_interest_only_with_fees() {
    // 10,000 at 30% nominal (2.5% a month), interest-only for 12 months, 600 fees.
    //   Months 1-11: interest 250.  Month 12: 250 + 10,000 = 10,250.
    //   Net 9,400 = 250 x (1 - (1 + r)^-12) / r + 10,000 (1 + r)^-12.
    //   At r = 3%: 250 x 9.954004 + 10,000 x 0.701380 = 2,488.50 + 7,013.80 = 9,502.30 (too high)
    //   At r = 3.2%: 250 x 9.836204 + 10,000 x 0.685241 = 2,459.05 + 6,852.41 = 9,311.47 (too low)
    //   Interpolating: r = 3% + 0.2% x 102.30 / 190.83 = 3.107%; refined r = 3.106615%
    //   APR = 37.2794%: above a 36% cap though the nominal rate is 30%.
    let s = Schedule::new(10000.0, 12.0, 0.30, InterestOnly).unwrap();
    assert_eq!((s.installment, s.balloon), (250.0, 10000.0));
    let got = apr(10000.0, 12.0, 0.30, 600.0, InterestOnly);
    close(got, 0.372_793_815_8, 1e-9);
    assert!(npv(10000.0, 600.0, &s, got.unwrap() / 12.0).abs() < 1e-7);
}

#[test]
fn interest_free_offer_with_fees_has_an_apr() {
    // 6,000 "interest-free" over 6 months: six payments of 1,000; 600 fees.
    //   5,400 = 1,000 x (1 - (1 + r)^-6) / r: annuity factor 5.4.
    //   At r = 3%: 5.417191; at r = 3.1%: 5.399283;
    //   r = 3% + 0.1% x (5.417191 - 5.4) / (5.417191 - 5.399283) = 3.0960%; refined 3.095984%
    //   APR = 37.1518%.
    let got = apr(6000.0, 6.0, 0.0, 600.0, Equal);
    close(got, 0.371_518_056_3, 1e-9);
    let s = Schedule::new(6000.0, 6.0, 0.0, Equal).unwrap();
    assert_eq!(s.installment, 1000.0);
    assert!(npv(6000.0, 600.0, &s, got.unwrap() / 12.0).abs() < 1e-8);
}

#[test]
fn without_fees_the_apr_is_the_nominal_rate_exactly() {
    for m in [Equal, InterestOnly] {
        for rate in [0.0, 0.05, 0.24, 0.36, 1.5] {
            for term in [1.0, 2.0, 12.0, 360.0] {
                assert_eq!(apr(12000.0, term, rate, 0.0, m), Some(rate), "{m} {rate} {term}");
            }
        }
    }
    assert_eq!(apr(5000.0, 12.0, 0.0, 0.0, Equal), Some(0.0));
}

#[test]
fn solutions_balance_the_cash_flows_across_a_grid() {
    let mut checked = 0;
    for m in [Equal, InterestOnly] {
        for term in [1.0, 2.0, 3.0, 6.0, 12.0, 24.0, 36.0, 60.0, 120.0, 360.0, 1200.0] {
            for rate in [0.0, 0.001, 0.05, 0.24, 0.36, 1.0, 10.0] {
                let mut last = rate;
                for fee_share in [1e-9, 0.001, 0.05, 0.3, 0.9, 0.999] {
                    let amount = 25_000.0;
                    let fees = amount * fee_share;
                    let got = apr(amount, term, rate, fees, m)
                        .unwrap_or_else(|| panic!("{m} term {term} rate {rate} fees {fees}: missing"));
                    let s = Schedule::new(amount, term, rate, m).unwrap();
                    let residual = npv(amount, fees, &s, got / 12.0) / (amount - fees);
                    assert!(residual.abs() < 1e-9, "{m} term {term} rate {rate} fees {fees}: residual {residual}");
                    // More fees, higher APR; never below the nominal rate.
                    assert!(got >= last - 1e-12, "{m} term {term} rate {rate} fees {fees}: {got} < {last}");
                    last = got;
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 11 * 7 * 6);
}

#[test]
fn outside_the_domain_of_a_loan_is_missing() {
    let cases: &[(f64, f64, f64, f64)] = &[
        (0.0, 12.0, 0.1, 0.0),      // no amount
        (-1000.0, 12.0, 0.1, 0.0),  // negative amount
        (f64::NAN, 12.0, 0.1, 0.0), // not a number
        (f64::INFINITY, 12.0, 0.1, 0.0),
        (1000.0, 0.0, 0.1, 0.0),    // no term
        (1000.0, 1.5, 0.1, 0.0),    // not whole months
        (1000.0, 1201.0, 0.1, 0.0), // more than 100 years
        (1000.0, f64::NAN, 0.1, 0.0),
        (1000.0, 12.0, -0.01, 0.0),  // negative rate
        (1000.0, 12.0, 100.01, 0.0), // above 10,000%
        (1000.0, 12.0, f64::NAN, 0.0),
        (1000.0, 12.0, 0.1, -5.0),   // negative fees
        (1000.0, 12.0, 0.1, 1000.0), // fees take the whole amount
        (1000.0, 12.0, 0.1, 2000.0),
        (1000.0, 12.0, 0.1, f64::NAN),
        (f64::MAX, 12.0, 100.0, 1.0), // payments overflow
    ];
    for &(a, n, r, f) in cases {
        for m in [Equal, InterestOnly] {
            assert_eq!(apr(a, n, r, f, m), None, "amount {a} term {n} rate {r} fees {f} {m}");
        }
    }
}

#[test]
fn extreme_but_valid_offers_converge() {
    // Fees of 99.99%: 0.10 paid out, 1,010 repaid next month: r = 1,010 / 0.1 - 1.
    close(monthly_irr(1000.0, 1.0, 0.12, 999.9, Equal), 1010.0 / 0.1 - 1.0, 1e-6);
    // The highest rate over the longest term, with fees.
    let got = apr(1000.0, 1200.0, 100.0, 10.0, InterestOnly).unwrap();
    assert!(got > 100.0 && got.is_finite());
    // A tiny rate and tiny fees over a long term (Newton near r = 0).
    let got = apr(1000.0, 600.0, 1e-9, 1e-6, Equal).unwrap();
    let s = Schedule::new(1000.0, 600.0, 1e-9, Equal).unwrap();
    assert!(npv(1000.0, 1e-6, &s, got / 12.0).abs() < 1e-9);
}

#[test]
fn effective_caps_convert_to_nominal() {
    // An effective 36% a year is 1.36^(1/12) = 1.0259548 a month: nominal 12 x 0.0259548 = 0.311458.
    let n = effective_to_nominal(0.36);
    assert!((n - 12.0 * (1.36_f64.powf(1.0 / 12.0) - 1.0)).abs() < 1e-15);
    assert!((n - 0.311_458).abs() < 1e-6);
}

// ---- the rule language -----------------------------------------------------

const CHAIN: &str = "[constants]\ncap = 0.36\nlabel = 'x'\n\n[[stage]]\nname = \"hard\"\ncombine = \"first_match\"\nfiles = [\"hard.toml\"]\n";

fn rule(events: &str, when: &str, action: &str) -> String {
    format!(
        "[[rule]]\nid = \"R1\"\ndescription = \"d\"\nowner = \"o\"\nseverity = 1\nmode = \"active\"\nevents = [\"{events}\"]\nwhen = \"{when}\"\naction = \"{action}\"\nreason = \"X\"\n"
    )
}

fn load(chain: &str, rules: &str) -> Result<RuleSet, riskd_rules::Diagnostics> {
    let dir = rules_dir(&[("chain.toml", chain), ("hard.toml", rules)]);
    RuleSet::load(dir.path(), &starter_schema())
}

fn app(values: &[(&str, &str)]) -> MapSource {
    let schema = starter_schema();
    values.iter().fold(MapSource::new(EventKind::LoanApplication), |s, (k, v)| s.set(&schema, k, v))
}

fn codes(d: &riskd_rules::Diagnostics) -> Vec<&str> {
    d.0.iter().map(|d| d.code).collect()
}

#[test]
fn apr_with_arguments_and_of_the_event() {
    let rs = load(CHAIN, &rule("loan_application", "apr() > const.cap", "reject"))
        .unwrap_or_else(|d| panic!("{}", d.render()));
    let schema = starter_schema();
    let explicit = rs.expression("apr(1000, 1, 0.12, 20, 'equal_installment')", &schema).unwrap();
    let none = MapSource::new(EventKind::LoanApplication);
    let ExprValue::Num(v) = explicit.evaluate(&none) else { panic!("apr(...) missing") };
    close(Some(v), 12.0 * (1010.0 / 980.0 - 1.0), 1e-12);
    // The method is compared through the case view (nothing is built per
    // event); like every string it matches exactly, case included.
    let lower = rs.expression("apr(1000, 1, 0.12, 20, lower('INTEREST_ONLY'))", &schema).unwrap();
    assert_eq!(lower.evaluate(&none), ExprValue::Num(apr(1000.0, 1.0, 0.12, 20.0, InterestOnly).unwrap()));
    let upper = rs.expression("apr(1000, 1, 0.12, 20, upper('interest_only'))", &schema).unwrap();
    assert_eq!(upper.evaluate(&none), ExprValue::Missing);

    let of_event = rs.expression("apr()", &schema).unwrap();
    let offer = [
        ("event.amount", "10000"),
        ("event.term_months", "12"),
        ("event.annual_rate", "0.30"),
        ("event.repayment_method", "interest_only"),
    ];
    let with_fees: Vec<_> = offer.iter().copied().chain([("event.fees", "600")]).collect();
    let ExprValue::Num(v) = of_event.evaluate(&app(&with_fees)) else { panic!("apr() missing") };
    assert_eq!(Some(v), apr(10000.0, 12.0, 0.30, 600.0, InterestOnly));
    // No fees stated: none charged, so the APR is the nominal rate.
    assert_eq!(of_event.evaluate(&app(&offer)), ExprValue::Num(0.30));
    // No rate stated: missing, and a cap rule does not fire.
    let no_rate: Vec<_> = with_fees.iter().copied().filter(|(k, _)| *k != "event.annual_rate").collect();
    assert_eq!(of_event.evaluate(&app(&no_rate)), ExprValue::Missing);
    // An absurd offer is missing, not an error.
    let absurd: Vec<_> =
        with_fees.iter().map(|&(k, v)| if k == "event.fees" { (k, "20000") } else { (k, v) }).collect();
    assert_eq!(of_event.evaluate(&app(&absurd)), ExprValue::Missing);
    // An unknown method read from a value is missing.
    let odd: Vec<_> =
        with_fees.iter().map(|&(k, v)| if k == "event.repayment_method" { (k, "balloon") } else { (k, v) }).collect();
    assert_eq!(of_event.evaluate(&app(&odd)), ExprValue::Missing);

    let cap = rs.expression("const.cap", &schema).unwrap();
    assert_eq!(cap.evaluate(&none), ExprValue::Num(0.36));
    let label = rs.expression("const.label", &schema).unwrap();
    assert_eq!(label.evaluate(&none), ExprValue::Str("x".into()));
}

#[test]
fn apr_mistakes_are_diagnosed() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("loan_application", "apr(1000, 12, 0.1) > 0.3", "E-ARITY", "`apr` takes"),
        (
            "loan_application",
            "apr(1000, 12, 0.1, 0, 'balloon') > 0.3",
            "E-BAD-ARGUMENT",
            "unknown repayment method `balloon`",
        ),
        ("loan_application", "apr(1000, 12, '0.1', 0, 'interest_only') > 0.3", "E-TYPE-MISMATCH", "(annual_rate)"),
        ("loan_application", "apr(1000, 12, 0.1, 0, 3) > 0.3", "E-TYPE-MISMATCH", "(repayment_method)"),
        ("login", "apr() > 0.3", "E-NOT-AVAILABLE", "`apr()` has no value on login events"),
        ("loan_application", "apr() > const.capp", "E-UNKNOWN-NAME", "unknown constant `const.capp`"),
    ];
    for (events, when, code, message) in cases {
        let action = if events.contains("login") { "alert" } else { "reject" };
        let Err(d) = load(CHAIN, &rule(events, when, action)) else { panic!("{when}: loaded") };
        assert_eq!(codes(&d), [*code], "{when}: {}", d.render());
        assert!(d.0[0].message.contains(message), "{when}: {}", d.0[0].message);
    }
    let Err(d) = load(CHAIN, &rule("loan_application", "apr() > const.capp", "reject")) else { panic!() };
    assert_eq!(d.0[0].hint.as_deref(), Some("did you mean `const.cap`?"));
    let Err(d) = load(CHAIN, &rule("loan_application", "apr(1, 1, 0, 0, 'equal_instalment') > 0", "reject")) else {
        panic!()
    };
    assert_eq!(d.0[0].hint.as_deref(), Some("did you mean `equal_installment`?"));
}

#[test]
fn constants_are_checked() {
    let chain = CHAIN.replace("cap = 0.36", "cap = [0.36]\n\"bad name\" = 1");
    let Err(d) = load(&chain, &rule("loan_application", "apr() > 0.3", "reject")) else { panic!() };
    assert_eq!(codes(&d), ["E-FIELD-TYPE", "E-BAD-ID"], "{}", d.render());
}

#[test]
fn repayment_methods_are_all_supported() {
    // Every method of the event contract has a schedule.
    for m in RepaymentMethod::ALL {
        assert!(Schedule::new(1000.0, 12.0, 0.1, *m).is_some(), "{m}");
        assert!(apr(1000.0, 12.0, 0.1, 10.0, *m).is_some_and(|v| v > 0.1), "{m}");
    }
}

#[test]
fn alternating_offers_each_get_their_own_apr() {
    // The evaluator remembers the last offer it solved; interleaving offers
    // that differ in one input at a time must never return another's APR.
    let rs = load(CHAIN, &rule("loan_application", "apr() > const.cap", "reject")).unwrap();
    let e = rs.expression("apr()", &starter_schema()).unwrap();
    let base = [
        ("event.amount", "10000"),
        ("event.term_months", "12"),
        ("event.annual_rate", "0.30"),
        ("event.fees", "600"),
        ("event.repayment_method", "interest_only"),
    ];
    let variants: Vec<Vec<(&str, &str)>> = vec![
        base.to_vec(),
        base.iter().map(|&(k, v)| if k == "event.amount" { (k, "10001") } else { (k, v) }).collect(),
        base.iter().map(|&(k, v)| if k == "event.term_months" { (k, "13") } else { (k, v) }).collect(),
        base.iter().map(|&(k, v)| if k == "event.annual_rate" { (k, "0.31") } else { (k, v) }).collect(),
        base.iter().map(|&(k, v)| if k == "event.fees" { (k, "601") } else { (k, v) }).collect(),
        base.iter()
            .map(|&(k, v)| if k == "event.repayment_method" { (k, "equal_installment") } else { (k, v) })
            .collect(),
    ];
    let expected: Vec<ExprValue> = variants
        .iter()
        .map(|v| {
            let num = |name: &str| v.iter().find(|(k, _)| *k == name).unwrap().1.parse::<f64>().unwrap();
            let method = RepaymentMethod::parse(v[4].1).unwrap();
            let a =
                apr(num("event.amount"), num("event.term_months"), num("event.annual_rate"), num("event.fees"), method);
            ExprValue::Num(a.unwrap())
        })
        .collect();
    for (i, e1) in expected.iter().enumerate() {
        for (j, e2) in expected.iter().enumerate() {
            if i != j {
                assert_ne!(e1, e2, "variants {i} and {j} differ");
            }
        }
    }
    for round in 0..3 {
        for (i, v) in variants.iter().enumerate().rev() {
            assert_eq!(e.evaluate(&app(v)), expected[i], "round {round}, variant {i}");
            assert_eq!(e.evaluate(&app(v)), expected[i], "round {round}, variant {i} again");
        }
    }
}
