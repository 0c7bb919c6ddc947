//! Every kind of author error yields its documented code and message at the
//! right file:line:col, with a hint where one helps; all errors of a load
//! are reported together.

mod common;

use common::{pos, rules_dir, starter_schema};
use riskd_rules::{run_tests, Diagnostic, Diagnostics, RuleSet, Severity};

const CHAIN: &str = r#"[[stage]]
name = "hard"
combine = "first_match"
files = ["hard.toml"]

[[stage]]
name = "velocity"
combine = "highest_severity"
files = ["velocity.toml"]
"#;

const LISTS: &[(&str, &str)] = &[
    ("lists/blacklist_devices.txt", "# type: string\ndev-1\n"),
    ("lists/risky_ip_ranges.txt", "# type: cidr\n10.66.0.0/16\n"),
];

/// A rule with the usual fields; `body` adds or overrides the rest.
fn rule(id: &str, body: &str) -> String {
    format!("[[rule]]\nid = \"{id}\"\ndescription = \"test rule\"\nowner = \"qa\"\nseverity = 50\nmode = \"active\"\n{body}\n\n")
}

fn app_rule(id: &str, when: &str) -> String {
    rule(id, &format!("events = [\"loan_application\"]\nwhen = \"{when}\"\naction = \"review\"\nreason = \"TEST\""))
}

fn load_err(hard: &str, velocity: &str) -> Diagnostics {
    load_err_with(CHAIN, hard, velocity)
}

fn load_err_with(chain: &str, hard: &str, velocity: &str) -> Diagnostics {
    let mut files = vec![("chain.toml", chain), ("hard.toml", hard), ("velocity.toml", velocity)];
    files.extend_from_slice(LISTS);
    let dir = rules_dir(&files);
    match RuleSet::load(dir.path(), &starter_schema()) {
        Ok(_) => panic!("expected diagnostics"),
        Err(d) => d,
    }
}

fn find<'d>(d: &'d Diagnostics, code: &str) -> &'d Diagnostic {
    d.0.iter().find(|x| x.code == code).unwrap_or_else(|| panic!("no {code} in:\n{}", d.render()))
}

fn at(d: &Diagnostic, file: &str, (line, col): (usize, usize)) {
    assert!(d.file.ends_with(file), "{} is not in {file}", d.file);
    assert_eq!((d.line, d.col), (line, col), "position of {}: {}", d.code, d.message);
}

#[test]
fn unknown_name_with_suggestion() {
    let hard = app_rule("R1", "device.distinct_user_24h > 3");
    let d = load_err(&hard, "");
    let x = find(&d, "E-UNKNOWN-NAME");
    at(x, "hard.toml", pos(&hard, "when", "device.distinct_user_24h"));
    assert_eq!(x.message, "unknown name `device.distinct_user_24h`");
    assert_eq!(x.hint.as_deref(), Some("did you mean `device.distinct_users_24h`?"));
    assert_eq!(x.span.len(), "device.distinct_user_24h".len());
    assert_eq!(x.severity, Severity::Error);
}

#[test]
fn type_mismatch() {
    let hard = app_rule("R1", "entity.user_id == 5");
    let d = load_err(&hard, "");
    let x = find(&d, "E-TYPE-MISMATCH");
    at(x, "hard.toml", pos(&hard, "when", "entity.user_id"));
    assert_eq!(x.message, "`==` cannot compare a string with a number");
    let hard = app_rule("R1", "event.amount > '5000'");
    let d = load_err(&hard, "");
    let x = find(&d, "E-TYPE-MISMATCH");
    assert_eq!(x.hint.as_deref(), Some("'5' in quotes is a string; write numbers without quotes"));
}

#[test]
fn bad_syntax_with_position() {
    let hard = app_rule("R1", "event.amount > > 5");
    let d = load_err(&hard, "");
    let x = find(&d, "E-SYNTAX");
    at(x, "hard.toml", pos(&hard, "when", "> 5"));
    assert_eq!(x.message, "expected a value, a name or `(`, found `>`");

    let hard = app_rule("R1", "event.amount > 5 && event.term_months > 3");
    let x = find(&load_err(&hard, ""), "E-SYNTAX").clone();
    at(&x, "hard.toml", pos(&hard, "when", "&&"));
    assert_eq!(x.hint.as_deref(), Some("write `and`"));

    let hard = app_rule("R1", "1 < event.amount < 5");
    let x = find(&load_err(&hard, ""), "E-SYNTAX").clone();
    assert_eq!(x.message, "comparisons cannot be chained");
    at(&x, "hard.toml", pos(&hard, "when", "< 5"));
}

#[test]
fn unknown_list() {
    let hard = app_rule("R1", "entity.device_id in list('blacklist_device')");
    let d = load_err(&hard, "");
    let x = find(&d, "E-UNKNOWN-LIST");
    at(x, "hard.toml", pos(&hard, "when", "'blacklist_device'"));
    assert_eq!(x.message, "unknown list `blacklist_device`");
    assert_eq!(x.hint.as_deref(), Some("did you mean `blacklist_devices`?"));
}

#[test]
fn list_of_wrong_kind() {
    let hard = app_rule("R1", "entity.ip in list('blacklist_devices')");
    let x = find(&load_err(&hard, ""), "E-TYPE-MISMATCH").clone();
    assert_eq!(x.message, "list `blacklist_devices` holds strings, but the value is an ip");
    assert_eq!(x.hint.as_deref(), Some("a list of addresses needs `# type: cidr` as its first line"));
}

#[test]
fn duplicate_id() {
    let hard = app_rule("R1", "event.amount > 1");
    let velocity = app_rule("R1", "event.amount > 2");
    let d = load_err(&hard, &velocity);
    let x = find(&d, "E-DUPLICATE-ID");
    at(x, "velocity.toml", pos(&velocity, "id", "\"R1\""));
    let (l, c) = pos(&hard, "id", "\"R1\"");
    assert!(x.message.starts_with("rule id `R1` is already used at "), "{}", x.message);
    assert!(x.message.ends_with(&format!("hard.toml:{l}:{c}")), "{}", x.message);
}

#[test]
fn unreachable_rule() {
    let hard = format!("{}{}", app_rule("R1", "true"), app_rule("R2", "event.amount > 5"));
    let d = load_err(&hard, "");
    let x = find(&d, "E-UNREACHABLE");
    at(x, "hard.toml", pos(&hard, "\"R2\"", "\"R2\""));
    assert_eq!(x.message, "rule `R2` can never be reached: `R1` above it in this first_match stage always fires first");
    // Not in a highest_severity stage, nor for shadow rules, nor when the events differ.
    let ok = format!(
        "{}{}{}",
        rule("R1", "events = [\"login\"]\nwhen = \"true\"\naction = \"alert\"\nreason = \"A\""),
        app_rule("R2", "event.amount > 5"),
        rule("R3", "mode = \"shadow\"\nevents = [\"login\"]\nwhen = \"true\"\naction = \"alert\"\nreason = \"B\"")
            .replace("mode = \"active\"\n", ""),
    );
    let dir = rules_dir(&[
        ("chain.toml", CHAIN),
        ("hard.toml", &ok),
        ("velocity.toml", &hard.replace("R1", "V1").replace("R2", "V2")),
    ]);
    if let Err(d) = RuleSet::load(dir.path(), &starter_schema()) {
        panic!("{}", d.render());
    }
}

#[test]
fn field_not_available_for_the_rules_events() {
    let hard = rule("R1", "when = \"event.amount > 5000\"\naction = \"alert\"\nreason = \"BIG\"");
    let d = load_err(&hard, "");
    let x = find(&d, "E-NOT-AVAILABLE");
    at(x, "hard.toml", pos(&hard, "when", "event.amount"));
    assert!(x.message.starts_with("`event.amount` has no value on registration, login,"), "{}", x.message);
    assert_eq!(
        x.hint.as_deref(),
        Some("restrict the rule to the events that carry it: events = [\"loan_application\", \"repayment\"]")
    );
}

#[test]
fn action_must_fit_the_events() {
    let hard =
        rule("R1", "events = [\"login\", \"loan_application\"]\nwhen = \"true\"\naction = \"reject\"\nreason = \"X\"");
    let d = load_err(&hard, "");
    let x = find(&d, "E-ACTION-EVENTS");
    at(x, "hard.toml", pos(&hard, "action", "\"reject\""));
    assert_eq!(x.message, "`reject` is an action for loan applications, but this rule also applies to login");
    let hard = rule("R1", "when = \"true\"\naction = \"alert\"\nreason = \"X\"");
    let x = find(&load_err(&hard, ""), "E-ACTION-EVENTS").clone();
    assert!(x.message.starts_with("`alert` is an action for events other than loan applications"));
}

#[test]
fn bad_action() {
    let hard = rule("R1", "events = [\"loan_application\"]\nwhen = \"true\"\naction = \"deny\"\nreason = \"X\"");
    let d = load_err(&hard, "");
    let x = find(&d, "E-BAD-ACTION");
    at(x, "hard.toml", pos(&hard, "action", "\"deny\""));
    assert_eq!(x.message, "unknown action `deny`");
    assert_eq!(x.hint.as_deref(), Some("action is one of: reject, review, approve, alert, pass"));
}

#[test]
fn bad_combine() {
    let chain = CHAIN.replace("\"highest_severity\"", "\"highest\"");
    let d = load_err_with(&chain, "", "");
    let x = find(&d, "E-BAD-COMBINE");
    at(x, "chain.toml", pos(&chain, "velocity", "\"highest\""));
    assert_eq!(x.message, "unknown combine mode `highest`");
    assert_eq!(x.hint.as_deref(), Some("did you mean `highest_severity`?"));
}

#[test]
fn bad_mode() {
    let hard = rule("R1", "events = [\"loan_application\"]\nwhen = \"true\"\naction = \"review\"\nreason = \"X\"")
        .replace("mode = \"active\"", "mode = \"shadw\"");
    let d = load_err(&hard, "");
    let x = find(&d, "E-BAD-MODE");
    at(x, "hard.toml", pos(&hard, "mode", "\"shadw\""));
    assert_eq!(x.message, "unknown mode `shadw`");
    assert_eq!(x.hint.as_deref(), Some("did you mean `shadow`?"));
}

#[test]
fn table_mistakes() {
    let hard = rule(
        "R1",
        "events = [\"loan_aplication\"]\nwhen = \"true\"\naction = \"review\"\nreason = \"too big\"\nowners = \"x\"",
    )
    .replace("severity = 50", "severity = 150");
    let d = load_err(&hard, "");
    let x = find(&d, "E-UNKNOWN-EVENT");
    at(x, "hard.toml", pos(&hard, "events", "\"loan_aplication\""));
    assert_eq!(x.hint.as_deref(), Some("did you mean `loan_application`?"));
    let x = find(&d, "E-BAD-REASON");
    assert_eq!(x.hint.as_deref(), Some("e.g. `TOO_BIG`"));
    let x = find(&d, "E-BAD-SEVERITY");
    at(x, "hard.toml", pos(&hard, "severity", "150"));
    let x = find(&d, "E-UNKNOWN-KEY");
    at(x, "hard.toml", pos(&hard, "owners", "owners"));
    assert_eq!(x.message, "unknown key `owners` in a [[rule]]");
    assert_eq!(x.hint.as_deref(), Some("did you mean `owner`?"));

    let hard = "[[rule]]\nid = \"R1\"\nwhen = \"true\"\n";
    let d = load_err(hard, "");
    let missing: Vec<&str> = d.0.iter().filter(|x| x.code == "E-MISSING-KEY").map(|x| x.message.as_str()).collect();
    assert_eq!(
        missing,
        [
            "a [[rule]] needs `description`",
            "a [[rule]] needs `owner`",
            "a [[rule]] needs `severity`",
            "a [[rule]] needs `mode`",
            "a [[rule]] needs `reason`",
        ]
    );
    assert!(d
        .0
        .iter()
        .any(|x| x.code == "E-BAD-OUTCOME" && x.message == "a rule in a `first_match` stage needs an `action`"));
}

#[test]
fn score_and_action_belong_to_their_stages() {
    let chain = format!("{CHAIN}\n[[stage]]\nname = \"adjust\"\ncombine = \"score_sum\"\nfiles = [\"adjust.toml\"]\n");
    let adjust = app_rule("S1", "true");
    let hard = rule("R1", "events = [\"loan_application\"]\nwhen = \"true\"\nscore = -40\nreason = \"X\"");
    let mut files = vec![
        ("chain.toml", chain.as_str()),
        ("hard.toml", hard.as_str()),
        ("velocity.toml", ""),
        ("adjust.toml", adjust.as_str()),
    ];
    files.extend_from_slice(LISTS);
    let dir = rules_dir(&files);
    let Err(d) = RuleSet::load(dir.path(), &starter_schema()) else { panic!("expected errors") };
    let x =
        d.0.iter()
            .find(|x| x.code == "E-BAD-OUTCOME" && x.file.ends_with("adjust.toml"))
            .unwrap_or_else(|| panic!("{}", d.render()));
    assert_eq!(x.message, "a rule in a `score_sum` stage needs `score` (points to add)");
    at(x, "adjust.toml", pos(&adjust, "action", "\"review\""));
    let x =
        d.0.iter()
            .find(|x| x.code == "E-BAD-OUTCOME" && x.file.ends_with("hard.toml"))
            .unwrap_or_else(|| panic!("{}", d.render()));
    assert_eq!(
        x.hint.as_deref(),
        Some("only score_sum stages use `score`; use `action = \"review\"` (or another action)")
    );
}

#[test]
fn condition_must_be_bool() {
    let hard = app_rule("R1", "event.amount * 2");
    let x = find(&load_err(&hard, ""), "E-NOT-BOOL").clone();
    at(&x, "hard.toml", pos(&hard, "when", "event.amount"));
    assert_eq!(x.message, "a condition must be true or false, but this expression is a number");
}

#[test]
fn toml_syntax_error_has_a_position() {
    let hard = "[[rule]]\nid = \"R1\"\nwhen = \"unterminated\n";
    let x = find(&load_err(hard, ""), "E-TOML").clone();
    assert_eq!(x.line, 3, "{x:?}");
    assert!(x.file.ends_with("hard.toml"));
}

#[test]
fn missing_rule_file_and_bad_chain() {
    let chain = CHAIN.replace("velocity.toml", "velocty.toml");
    let d = load_err_with(&chain, "", "");
    let x = find(&d, "E-MISSING-FILE");
    at(x, "chain.toml", pos(&chain, "files = [\"velocty", "\"velocty.toml\""));
    assert_eq!(x.message, "rule file `velocty.toml` not found");

    let chain = format!("{CHAIN}\n[[stage]]\nname = \"hard\"\ncombine = \"score_sum\"\nfiles = [\"hard.toml\"]\n");
    let d = load_err_with(&chain, "", "");
    find(&d, "E-DUPLICATE-STAGE");
    find(&d, "E-DUPLICATE-FILE");

    let dir = rules_dir(&[("hard.toml", "")]);
    let Err(d) = RuleSet::load(dir.path(), &starter_schema()) else { panic!() };
    assert_eq!(d.0[0].code, "E-IO");
    assert!(d.0[0].message.contains("chain.toml"));
}

#[test]
fn bad_list_entries_are_reported_where_they_are() {
    let list = "# type: cidr\n10.0.0.0/8\n10.1.2/24   # typo\n";
    let dir = rules_dir(&[("chain.toml", CHAIN), ("hard.toml", ""), ("velocity.toml", ""), ("lists/nets.txt", list)]);
    let Err(d) = RuleSet::load(dir.path(), &starter_schema()) else { panic!() };
    let x = find(&d, "E-LIST-ENTRY");
    at(x, "lists/nets.txt", (3, 1));
    assert_eq!(x.message, "`10.1.2/24` is not an IP address or CIDR range");
    let dir = rules_dir(&[
        ("chain.toml", CHAIN),
        ("hard.toml", ""),
        ("velocity.toml", ""),
        ("lists/x.txt", "# type: ips\n1\n"),
    ]);
    let Err(d) = RuleSet::load(dir.path(), &starter_schema()) else { panic!() };
    at(find(&d, "E-LIST-TYPE"), "lists/x.txt", (1, 9));
}

#[test]
fn all_errors_are_collected() {
    let hard = format!(
        "{}{}{}",
        app_rule("R1", "device.distinct_user_24h > 3"),
        app_rule("R2", "entity.user_id == 5 or nope > 1"),
        app_rule("R3", "event.amount > > 5"),
    );
    let velocity = rule("V1", "events = [\"loan_application\"]\nwhen = \"true\"\naction = \"deny\"\nreason = \"X\"");
    let d = load_err(&hard, &velocity);
    let codes: Vec<&str> = d.0.iter().map(|x| x.code).collect();
    assert_eq!(
        codes,
        ["E-UNKNOWN-NAME", "E-TYPE-MISMATCH", "E-UNKNOWN-NAME", "E-SYNTAX", "E-BAD-ACTION"],
        "{}",
        d.render()
    );
    assert!(d.render().ends_with("5 errors, 0 warnings\n"));
}

#[test]
fn never_firing_rule_is_a_warning() {
    let hard = app_rule("R1", "1 > 2");
    let dir = rules_dir(&[("chain.toml", CHAIN), ("hard.toml", &hard), ("velocity.toml", "")]);
    let rs = RuleSet::load(dir.path(), &starter_schema()).unwrap_or_else(|d| panic!("{}", d.render()));
    let w = &rs.warnings().0;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].code, "W-NEVER-FIRES");
    assert_eq!(w[0].severity, Severity::Warning);
    assert_eq!(w[0].message, "rule `R1` can never fire: its condition is always false");
}

#[test]
fn disabled_rules_are_still_checked() {
    let hard = app_rule("R1", "nope > 1").replace("mode = \"active\"", "mode = \"disabled\"");
    find(&load_err(&hard, ""), "E-UNKNOWN-NAME");
}

#[test]
fn positions_survive_toml_escapes_and_multiline_strings() {
    let hard = rule(
        "R1",
        "events = [\"loan_application\"]\nwhen = \"entity.user_id == \\\"u-1\\\" and nope > 1\"\naction = \"review\"\nreason = \"X\"",
    );
    let x = find(&load_err(&hard, ""), "E-UNKNOWN-NAME").clone();
    at(&x, "hard.toml", pos(&hard, "when", "nope"));
    let hard = rule(
        "R1",
        "events = [\"loan_application\"]\nwhen = '''\nevent.amount > 5000\n  and nope > 1\n'''\naction = \"review\"\nreason = \"X\"",
    );
    let x = find(&load_err(&hard, ""), "E-UNKNOWN-NAME").clone();
    at(&x, "hard.toml", pos(&hard, "when", "nope"));
}

#[test]
fn rendering_is_compiler_style() {
    let hard = app_rule("R1", "device.distinct_user_24h > 3");
    let d = load_err(&hard, "");
    let (line, col) = pos(&hard, "when", "device");
    let text = d.render();
    let expected_head = format!(
        "error[E-UNKNOWN-NAME]: unknown name `device.distinct_user_24h`\n{}--> ",
        " ".repeat(line.to_string().len())
    );
    assert!(text.starts_with(&expected_head), "{text}");
    let pad = " ".repeat(line.to_string().len());
    let body = format!(
        "hard.toml:{line}:{col}\n{pad} |\n{line} | when = \"device.distinct_user_24h > 3\"\n{pad} |         {}\n{pad} = hint: did you mean `device.distinct_users_24h`?\n",
        "^".repeat(24)
    );
    assert!(text.contains(&body), "{text}\n---\n{body}");
    assert!(text.ends_with("1 error, 0 warnings\n"));
    assert_eq!(format!("{d}"), text);
    let _: &dyn std::error::Error = &d;
}

#[test]
fn analyst_test_mistakes_are_diagnostics() {
    let hard = app_rule("R1", "event.amount > 5");
    let tests = "[[case]]\nname = \"x\"\nevent_type = \"loan_application\"\ninputs = { \"event.amout\" = 5, \"entity.ip\" = 5, \"event.success\" = true }\nexpect_hits = [\"R9\"]\n";
    let mut files =
        vec![("chain.toml", CHAIN), ("hard.toml", hard.as_str()), ("velocity.toml", ""), ("tests/t.toml", tests)];
    files.extend_from_slice(LISTS);
    let dir = rules_dir(&files);
    let rs = RuleSet::load(dir.path(), &starter_schema()).unwrap_or_else(|d| panic!("{}", d.render()));
    let Err(d) = run_tests(&rs, &starter_schema(), dir.path()) else { panic!("expected diagnostics") };
    let x = find(&d, "E-UNKNOWN-NAME");
    at(x, "tests/t.toml", pos(tests, "inputs", "\"event.amout\""));
    assert_eq!(x.hint.as_deref(), Some("did you mean `event.amount`?"));
    let x = find(&d, "E-TEST-INPUT");
    at(x, "tests/t.toml", pos(tests, "entity.ip\" = ", "5"));
    let x = find(&d, "E-NOT-AVAILABLE");
    assert_eq!(x.message, "`event.success` has no value on loan_application events");
    let x = find(&d, "E-UNKNOWN-RULE");
    at(x, "tests/t.toml", pos(tests, "expect_hits", "\"R9\""));
}

#[test]
fn failing_analyst_test_report() {
    let hard = app_rule("R1", "event.amount > 5");
    let tests = "[[case]]\nname = \"big amounts are rejected\"\nevent_type = \"loan_application\"\ninputs = { \"event.amount\" = 50 }\nexpect_action = \"reject\"\nexpect_no_hits = [\"R1\"]\n\n[[case]]\nname = \"ok\"\nevent_type = \"loan_application\"\nexpect_action = \"approve\"\n";
    let mut files =
        vec![("chain.toml", CHAIN), ("hard.toml", hard.as_str()), ("velocity.toml", ""), ("tests/t.toml", tests)];
    files.extend_from_slice(LISTS);
    let dir = rules_dir(&files);
    let rs = RuleSet::load(dir.path(), &starter_schema()).unwrap_or_else(|d| panic!("{}", d.render()));
    let report =
        run_tests(&rs, &starter_schema(), &dir.path().join("tests")).unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!((report.passed(), report.failed()), (1, 1));
    let text = report.render();
    assert!(text.contains("FAILED"), "{text}");
    assert!(text.contains("t.toml:1  big amounts are rejected"), "{text}");
    assert!(text.contains("expected action reject, got review"), "{text}");
    assert!(text.contains("expected R1 not to fire, it did"), "{text}");
    assert!(text.contains("R1 [hard] TEST review severity 50"), "{text}");
    assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
}
