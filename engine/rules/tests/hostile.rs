//! Hostile rule text: inputs found by fuzzing (fuzz/) and their relatives.
//! Each must end as a diagnostic, never as a crash, including on the 2 MiB
//! stacks of the threads that reload rules in a running engine.

mod common;

use common::{rules_dir, starter_schema};
use riskd_rules::{Diagnostics, RuleSet};

const CHAIN: &str = "[[stage]]\nname = \"hard\"\ncombine = \"first_match\"\nfiles = [\"hard.toml\"]\n";

fn load(when: &str) -> Result<RuleSet, Diagnostics> {
    let rule = format!(
        "[[rule]]\nid = \"R1\"\ndescription = \"d\"\nowner = \"o\"\nseverity = 1\nmode = \"active\"\nevents = [\"loan_application\"]\nwhen = '''{when}'''\naction = \"reject\"\nreason = \"X\"\n"
    );
    let dir = rules_dir(&[("chain.toml", CHAIN), ("hard.toml", &rule)]);
    RuleSet::load(dir.path(), &starter_schema())
}

/// Runs `f` on a thread with a tokio worker's default stack.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(f)
        .unwrap_or_else(|e| panic!("spawn: {e}"))
        .join()
        .unwrap_or_else(|_| panic!("the load crashed"))
}

#[test]
fn conditions_nested_or_chained_beyond_the_limit_are_syntax_errors() {
    // fuzz/artifacts/rule_expression/crash-b6524ee8...: 20,000 nested
    // parentheses overflowed the stack in the recursive-descent parser.
    let cases = [
        format!("{}1{} > 0", "(".repeat(20_000), ")".repeat(20_000)),
        format!("1{} > 0", " + 1".repeat(15_000)),
        format!("{}true", "not ".repeat(15_000)),
        format!("{}1 > 0", "- ".repeat(15_000)),
        format!("{}1{} > 0", "abs(".repeat(5_000), ")".repeat(5_000)),
        format!("1 in {}1{}", "[".repeat(5_000), "]".repeat(5_000)),
        format!("true{}", " or true".repeat(5_000)),
        format!("true{}", " and true".repeat(5_000)),
        format!("1{} > 0", " * 1".repeat(5_000)),
    ];
    for when in cases {
        let shown = when[..40.min(when.len())].to_string();
        let d = on_small_stack(move || match load(&when) {
            Ok(_) => panic!("loaded"),
            Err(d) => d,
        });
        assert_eq!(d.0.len(), 1, "{shown}...: {}", d.render());
        assert_eq!(d.0[0].code, "E-SYNTAX", "{shown}...");
        assert_eq!(d.0[0].message, "the condition nests or chains operators more than 128 levels deep", "{shown}...");
        assert!(d.0[0].hint.as_deref().is_some_and(|h| h.contains("in [...]")), "{shown}...");
    }
}

#[test]
fn deep_but_reasonable_conditions_still_load() {
    let cases = [
        format!("{}1{} > 0", "(".repeat(60), ")".repeat(60)),
        (0..100).map(|i| format!("event.amount == {i}")).collect::<Vec<_>>().join(" or "),
        format!("{}1 > 0", "- - ".repeat(30)),
        format!("event.amount{} > 0", " + 1".repeat(100)),
    ];
    for when in cases {
        let shown = when[..40.min(when.len())].to_string();
        on_small_stack(move || {
            if let Err(d) = load(&when) {
                panic!("{shown}...: {}", d.render());
            }
        });
    }
}
