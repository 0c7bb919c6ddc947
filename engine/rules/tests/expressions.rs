//! The expression language, table-driven: `tests/data/expressions.txt`
//! holds one case per line (expression | inputs | expected).

mod common;

use common::{expr_schema, rules_dir, MapSource};
use riskd_rules::{EventKind, ExprValue, RuleSet};

const TABLE: &str = include_str!("data/expressions.txt");

fn ruleset() -> (tempfile::TempDir, RuleSet) {
    let dir = rules_dir(&[
        ("chain.toml", "[[stage]]\nname = \"s\"\ncombine = \"first_match\"\nfiles = [\"r.toml\"]\n"),
        (
            "r.toml",
            "[[rule]]\nid = \"R1\"\ndescription = \"d\"\nowner = \"o\"\nseverity = 1\nmode = \"active\"\nwhen = \"n > 1\"\naction = \"alert\"\nreason = \"X\"\nevents = [\"login\"]\n",
        ),
        ("lists/names.txt", "# type: string\nalice\nbob smith   # a comment\n\nCarol\ndev-0001\n"),
        ("lists/nets.txt", "# type: cidr\n10.0.0.0/8\n192.168.1.0/24\n172.16.5.4\n2001:db8::/32\n"),
        ("lists/auto.txt", "# no header: every value is an address, so this is a CIDR list\n1.2.3.0/24\n5.6.7.8\n"),
        ("lists/nums.txt", "# type: number\n1\n2.5\n-3\n1_000\n"),
    ]);
    match RuleSet::load(dir.path(), &expr_schema()) {
        Ok(rs) => (dir, rs),
        Err(d) => panic!("{}", d.render()),
    }
}

fn parse_expected(s: &str) -> Result<ExprValue, String> {
    if let Some(code) = s.strip_prefix("error:") {
        return Err(code.to_string());
    }
    Ok(match s {
        "true" => ExprValue::Bool(true),
        "false" => ExprValue::Bool(false),
        "missing" => ExprValue::Missing,
        _ if s.starts_with('\'') && s.ends_with('\'') && s.len() >= 2 => ExprValue::Str(s[1..s.len() - 1].to_string()),
        _ if s.starts_with("ip:") => ExprValue::Ip(s[3..].parse().unwrap_or_else(|_| panic!("bad ip in table: {s}"))),
        _ => ExprValue::Num(s.parse().unwrap_or_else(|_| panic!("bad expected value in table: {s}"))),
    })
}

fn same(a: &ExprValue, b: &ExprValue) -> bool {
    match (a, b) {
        (ExprValue::Num(x), ExprValue::Num(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

#[test]
fn expression_table() {
    let (_dir, rs) = ruleset();
    let schema = expr_schema();
    let mut failures = Vec::new();
    let mut count = 0;
    for (i, line) in TABLE.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        // Split from the right: the expression itself may hold `||`.
        let mut parts = line.rsplitn(3, '|');
        let (Some(expected), Some(inputs), Some(expr)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("line {lineno}: expected `expression | inputs | expected`");
        };
        let (expr, inputs, expected) = (expr.trim(), inputs.trim(), expected.trim());
        count += 1;
        let mut src = MapSource::new(EventKind::LoanApplication);
        for assignment in inputs.split(';').map(str::trim).filter(|a| !a.is_empty()) {
            let (name, value) =
                assignment.split_once('=').unwrap_or_else(|| panic!("line {lineno}: bad input {assignment}"));
            src = src.set(&schema, name.trim(), value.trim());
        }
        let compiled = rs.expression(expr, &schema);
        match (parse_expected(expected), compiled) {
            (Ok(want), Ok(e)) => {
                let got = e.evaluate(&src);
                if !same(&got, &want) {
                    failures.push(format!("line {lineno}: `{expr}` with [{inputs}]: expected {want}, got {got}"));
                }
            }
            (Ok(want), Err(d)) => {
                failures.push(format!("line {lineno}: `{expr}`: expected {want}, got a compile error:\n{}", d.render()))
            }
            (Err(code), Ok(e)) => failures.push(format!(
                "line {lineno}: `{expr}`: expected error {code}, but it compiled (value {})",
                e.evaluate(&src)
            )),
            (Err(code), Err(d)) => {
                let first = d.0.first().map(|d| d.code).unwrap_or("");
                if first != code {
                    failures.push(format!("line {lineno}: `{expr}`: expected error {code}, got:\n{}", d.render()));
                }
                // Every diagnostic points inside the expression and renders.
                for diag in &d.0 {
                    assert!(
                        diag.line == 1 && diag.col >= 1 && diag.col <= expr.chars().count() + 1,
                        "line {lineno}: {diag:?}"
                    );
                    assert!(d.render().contains(&format!("error[{}]", diag.code)));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {count} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(count >= 400, "the table should hold hundreds of cases, has {count}");
}

#[test]
fn values_of_another_type_or_nan_read_as_missing() {
    let (_dir, rs) = ruleset();
    let schema = expr_schema();
    let e = rs.expression("is_missing(n)", &schema).unwrap_or_else(|d| panic!("{}", d.render()));
    let src = MapSource::new(EventKind::Login).set(&schema, "n", "NaN");
    assert_eq!(e.evaluate(&src), ExprValue::Bool(true));
    let src = MapSource::new(EventKind::Login).set(&schema, "n", "inf");
    assert_eq!(e.evaluate(&src), ExprValue::Bool(true));
    // A string where a number is registered: missing, not a crash.
    let mut src = MapSource::new(EventKind::Login);
    src.values.insert(riskd_rules::Slot(0), common::Owned::Str("5".into()));
    assert_eq!(e.evaluate(&src), ExprValue::Bool(true));
}

#[test]
fn constant_subexpressions_are_folded() {
    let (_dir, rs) = ruleset();
    let schema = expr_schema();
    // Folding must not change results: `false and x` is false even when x is missing.
    let e = rs.expression("false and n > 1", &schema).unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!(e.evaluate(&MapSource::new(EventKind::Login)), ExprValue::Bool(false));
    let e = rs.expression("2 * 3 + n", &schema).unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!(e.evaluate(&MapSource::new(EventKind::Login).set(&schema, "n", "1")), ExprValue::Num(7.0));
}
