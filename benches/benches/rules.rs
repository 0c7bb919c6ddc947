//! Rule evaluation: 100 rules over one loan application, with the engine's
//! real schema (event fields, the shipped features, model outputs).
//!
//! `cargo bench -p riskd-benches --bench rules`

// The allocator `riskd` uses.
use riskd_alloc as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use riskd_core::{EventKind, Value};
use riskd_features::FeatureSet;
use riskd_pipeline::deployment::{schema_for, FEATURE_BASE, MODEL_BASE};
use riskd_rules::{RuleSet, Schema, Slot, Source, Verdict};

/// Values by slot, laid out like the engine's own rule input.
struct Input {
    fields: Vec<Value<'static>>,
    features: Vec<f64>,
    score: f64,
}

impl Source for Input {
    fn kind(&self) -> EventKind {
        EventKind::LoanApplication
    }
    fn get(&self, slot: Slot) -> Value<'_> {
        let s = slot.0;
        if s < FEATURE_BASE {
            self.fields[s as usize]
        } else if s < MODEL_BASE {
            Value::Num(self.features[(s - FEATURE_BASE) as usize])
        } else {
            Value::Num(self.score)
        }
    }
}

fn rule(id: usize, when: &str, action: &str) -> String {
    format!(
        "[[rule]]\nid = \"B{id:03}\"\ndescription = \"bench\"\nowner = \"bench\"\nseverity = {}\nmode = \"active\"\nevents = [\"loan_application\"]\nwhen = \"{when}\"\naction = \"{action}\"\nreason = \"BENCH_{id:03}\"\n\n",
        id % 100
    )
}

/// 100 rules in four highest_severity stages, so every rule is evaluated.
fn rules(dir: &Path) {
    let mut chain = String::new();
    for stage in 0..4 {
        chain +=
            &format!("[[stage]]\nname = \"s{stage}\"\ncombine = \"highest_severity\"\nfiles = [\"s{stage}.toml\"]\n\n");
        let mut text = String::new();
        for j in 0..25 {
            let k = stage * 25 + j;
            let when = match k % 5 {
                0 => format!("event.amount > {} and device.distinct_users_24h > {}", 1000 * k, k % 5),
                1 => "entity.ip in list('risky') or entity.device_id in list('blocked')".to_string(),
                2 => format!("user.failed_logins_10m >= {} or ip24.distinct_users_24h > {}", k % 7, k),
                3 => format!("app.amount_to_income * 2 > {} and not (event.term_months < 6)", k % 13),
                _ => format!("event.purpose in ['travel', 'business'] and model.score < {}", 500 + k),
            };
            text += &rule(k, &when, if k % 2 == 0 { "review" } else { "reject" });
        }
        std::fs::write(dir.join(format!("s{stage}.toml")), text).unwrap();
    }
    std::fs::write(dir.join("chain.toml"), chain).unwrap();
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    std::fs::write(dir.join("lists/risky.txt"), "# type: cidr\n10.66.0.0/16\n198.51.100.0/24\n2001:db8::/32\n")
        .unwrap();
    let devices: String = (0..1000).map(|i| format!("dev-{i:06}\n")).collect();
    std::fs::write(dir.join("lists/blocked.txt"), devices).unwrap();
}

fn bench(c: &mut Criterion) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let features = FeatureSet::load(&repo.join("features")).expect("shipped features load");
    let schema: Schema = schema_for(&features, &riskd_scorecard::ModelSet::default());
    let dir = tempfile::tempdir().unwrap();
    rules(dir.path());
    let set = RuleSet::load(dir.path(), &schema).unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!(set.rule_count(), 100);

    let mut fields = vec![Value::Missing; riskd_core::fields::FIELDS.len()];
    let set_field = |fields: &mut Vec<Value<'static>>, name: &str, v: Value<'static>| {
        fields[riskd_core::fields::FieldId::lookup(name).unwrap().0 as usize] = v;
    };
    set_field(&mut fields, "event.type", Value::Str("loan_application"));
    set_field(&mut fields, "event.amount", Value::Num(8000.0));
    set_field(&mut fields, "event.term_months", Value::Num(12.0));
    set_field(&mut fields, "event.purpose", Value::Str("travel"));
    set_field(&mut fields, "entity.device_id", Value::Str("dev-123456"));
    set_field(&mut fields, "entity.ip", Value::Ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))));
    let feature_values: Vec<f64> = (0..features.len()).map(|i| (i % 4) as f64).collect();
    let input = Input { fields, features: feature_values, score: 560.0 };
    let mut verdict = Verdict::default();
    set.evaluate(&input, &mut verdict);
    assert!(!verdict.hits.is_empty(), "the bench event fires some rules");
    eprintln!("bench event: {} of 100 rules fire", verdict.hits.len());

    c.bench_function("rules/100_rules_one_application", |b| {
        b.iter(|| {
            set.evaluate(std::hint::black_box(&input), &mut verdict);
            std::hint::black_box(verdict.action)
        })
    });
}

/// The APR solver alone (it runs per application in `apr()` rules): a
/// 24-month offer with fees (Newton iterations) and without (exact, no
/// solve).
fn apr(c: &mut Criterion) {
    use riskd_core::event::RepaymentMethod::{EqualInstallment, InterestOnly};
    use riskd_rules::apr::apr;
    let offer = |fees: f64, m| apr(std::hint::black_box(13_700.0), 24.0, 0.342, std::hint::black_box(fees), m);
    assert!(offer(128.31, EqualInstallment).is_some_and(|v| v > 0.342));
    c.bench_function("rules/apr_equal_installment_with_fees", |b| b.iter(|| offer(128.31, EqualInstallment)));
    c.bench_function("rules/apr_interest_only_with_fees", |b| b.iter(|| offer(128.31, InterestOnly)));
    c.bench_function("rules/apr_no_fees", |b| b.iter(|| offer(0.0, EqualInstallment)));
}

criterion_group!(benches, bench, apr);
criterion_main!(benches);
