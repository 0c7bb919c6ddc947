//! Every generated event follows contract v1 (checked against the JSON
//! Schema), every malformed line breaks it, and the stream keeps its
//! structural promises: order, ids, labels, registrations first.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::*;
use riskd_gen::{write_stream, BadReason, EventType, GenConfig, LineKind};

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let s = schema();
    jsonschema::meta::validate(&s).expect("valid against its metaschema");
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

#[test]
fn every_event_validates_and_every_malformed_line_fails() {
    let validator = validator();
    let (lines, stats) = generate(&sample_config());
    let mut reasons: BTreeMap<BadReason, usize> = BTreeMap::new();
    for line in &lines {
        match line.meta.kind {
            LineKind::Event(ty) => {
                let v = line.to_value().expect("events are JSON");
                let errors: Vec<String> =
                    validator.iter_errors(&v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
                assert!(errors.is_empty(), "{}\n{:#?}", line.text, errors);
                assert_eq!(v["event_type"], ty.as_str());
            }
            LineKind::Malformed(reason) => {
                *reasons.entry(reason).or_default() += 1;
                if let Some(v) = line.to_value() {
                    assert!(!validator.is_valid(&v), "{reason}: schema accepts {}", line.text);
                } else {
                    assert_eq!(reason, BadReason::BadJson, "{}", line.text);
                }
                for key in ["\"phone\"", "\"id_number\"", "\"bank_card\"", "+99", "\"ZZ", "\"9999"] {
                    assert!(!line.text.contains(key), "sensitive `{key}` in {}", line.text);
                }
            }
        }
    }
    // 16 malformed lines: each reason twice, once per variant.
    assert_eq!(reasons.len(), 8);
    assert!(reasons.values().all(|&n| n == 2), "{reasons:?}");
    assert_eq!(stats.malformed, 16);
    assert_eq!(stats.events, 5000, "the target count is met exactly");
}

#[test]
fn malformed_lines_cycle_through_the_reasons_in_order() {
    let cfg = GenConfig { bad: 10, ..GenConfig::default() };
    let (lines, _) = generate(&cfg);
    let got: Vec<BadReason> = lines
        .iter()
        .filter_map(|l| match l.meta.kind {
            LineKind::Malformed(r) => Some(r),
            _ => None,
        })
        .collect();
    let mut want = BadReason::CYCLE.to_vec();
    want.extend_from_slice(&BadReason::CYCLE[..2]);
    assert_eq!(got, want);
    // Spread through the stream, not bunched at one end.
    let first = lines.iter().position(|l| matches!(l.meta.kind, LineKind::Malformed(_))).unwrap();
    assert!(first > 100 && first < 1000, "first malformed line at {first}");
}

#[test]
fn ids_are_unique_and_times_are_millisecond_utc_in_order() {
    let (lines, _) = generate(&sample_config());
    let evs = events(&lines);
    let mut ids = HashSet::new();
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.id(), format!("ev-{:09}", i + 1));
        assert!(ids.insert(e.id().to_string()));
        let t = e.v["event_time"].as_str().unwrap();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && &t[19..20] == "." && &t[10..11] == "T", "{t}");
    }
    let start = GenConfig::default().start_ms;
    for w in lines.windows(2) {
        assert!(w[0].meta.time_ms <= w[1].meta.time_ms, "{}\n{}", w[0].text, w[1].text);
    }
    // The text agrees with the metadata, so the text is sorted too.
    for w in evs.windows(2) {
        assert!(w[0].v["event_time"].as_str() <= w[1].v["event_time"].as_str());
    }
    assert!(evs.first().unwrap().time_ms >= start);
    assert!(evs.last().unwrap().time_ms < start + 30 * DAY);
}

#[test]
fn labels_exist_exactly_for_loan_applications() {
    let cfg = sample_config();
    let mut out = Vec::new();
    let mut labels = Vec::new();
    let stats = write_stream(&cfg, &mut out, Some(&mut labels)).unwrap();
    let labels = String::from_utf8(labels).unwrap();
    let mut rows = labels.lines();
    assert_eq!(rows.next(), Some("event_id,bad"));
    let mut labelled = BTreeSet::new();
    let mut bad = 0;
    for row in rows {
        let (id, b) = row.split_once(',').unwrap();
        assert!(b == "0" || b == "1", "{row}");
        bad += usize::from(b == "1");
        assert!(labelled.insert(id.to_string()), "duplicate label {id}");
    }
    let text = String::from_utf8(out).unwrap();
    let applications: BTreeSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event_type"] == "loan_application" && v["event_id"].as_str().unwrap().starts_with("ev-"))
        .map(|v| v["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labelled, applications);
    assert!(!text.contains("\"bad\""), "labels never go into events");
    assert_eq!(stats.applications as usize, applications.len());
    assert_eq!(stats.bad_applications as usize, bad);
    let rate = stats.bad_rate();
    assert!((0.08..=0.15).contains(&rate), "bad rate {rate}");
}

#[test]
fn users_register_first_and_loans_follow_applications() {
    let (lines, stats) = generate(&sample_config());
    let evs = events(&lines);
    let users = by_user(&evs);
    assert_eq!(users.len(), 400);
    let mut loans: BTreeMap<String, (&str, i64)> = BTreeMap::new();
    for (user, evs) in &users {
        assert_eq!(evs[0].ty(), "registration", "{user}");
        assert_eq!(evs.iter().filter(|e| e.ty() == "registration").count(), 1, "{user}");
        for (i, e) in evs.iter().enumerate() {
            match e.ty() {
                "loan_application" => {
                    let app = e.payload("application_id").as_str().unwrap();
                    loans.insert(app.replacen("app-", "ln-", 1), (user, e.time_ms));
                    // A credit report shortly before every application.
                    assert!(
                        evs[..i].iter().rev().any(|p| p.ty() == "credit_report" && e.time_ms - p.time_ms <= 5 * MIN),
                        "{user}: no credit report before {}",
                        e.id()
                    );
                }
                "repayment" | "overdue_notice" => {
                    let loan = e.payload("loan_id").as_str().unwrap();
                    let (owner, at) = loans.get(loan).unwrap_or_else(|| panic!("{loan} before its application"));
                    assert_eq!(owner, user);
                    assert!(e.time_ms > *at);
                }
                _ => {}
            }
        }
    }
    // The mix is dominated by logins and device reports.
    let n = |t: EventType| stats.by_type.get(&t).copied().unwrap_or(0);
    assert!(n(EventType::Login) + n(EventType::DeviceReport) > stats.events / 2, "{stats}");
    assert_eq!(n(EventType::Registration), 400);
    assert_eq!(n(EventType::CreditReport), n(EventType::LoanApplication));
    for t in EventType::ALL {
        assert!(n(t) > 0, "no {t} events");
    }
}

#[test]
fn tiny_and_unbalanced_configurations_work() {
    let validator = validator();
    for cfg in [
        GenConfig { users: 1, days: 1, events: 1, ..GenConfig::default() },
        GenConfig { users: 3, days: 2, events: 50, bad: 3, ..GenConfig::default() },
        GenConfig { users: 30, days: 400, events: 20_000, bad: 1, ..GenConfig::default() },
        GenConfig { users: 2000, days: 3, events: 100, ..GenConfig::default() },
    ] {
        let (lines, stats) = generate(&cfg);
        assert_eq!(lines.len() as u64, stats.events + stats.malformed, "{cfg:?}");
        assert_eq!(stats.malformed, cfg.bad);
        assert!(stats.events >= cfg.events.min(cfg.users as u64), "{cfg:?}");
        for w in lines.windows(2) {
            assert!(w[0].meta.time_ms <= w[1].meta.time_ms);
        }
        for l in lines.iter().filter(|l| matches!(l.meta.kind, LineKind::Event(_))) {
            assert!(validator.is_valid(&l.to_value().unwrap()), "{}", l.text);
        }
    }
    // Enough users for the planned activity: the target is met exactly.
    let cfg = GenConfig { users: 30, days: 400, events: 20_000, ..GenConfig::default() };
    assert_eq!(generate(&cfg).1.events, 20_000);
}

#[test]
fn invalid_configurations_are_refused() {
    for cfg in [
        GenConfig { users: 0, ..GenConfig::default() },
        GenConfig { days: 0, ..GenConfig::default() },
        GenConfig { start_ms: -1, ..GenConfig::default() },
    ] {
        assert!(riskd_gen::Generator::new(&cfg).is_err(), "{cfg:?}");
    }
}

#[test]
fn the_schema_is_strict() {
    let validator = validator();
    let (lines, _) = generate(&GenConfig::default());
    let evs = events(&lines);
    let mut seen = BTreeSet::new();
    for e in &evs {
        if !seen.insert(e.ty().to_string()) {
            continue;
        }
        let ok = &e.v;
        assert!(validator.is_valid(ok));
        let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = ok.clone();
            f(&mut v);
            v
        };
        let rejected = [
            mutate(&|v| v["payload"]["extra"] = 1.into()),
            mutate(&|v| v["entities"]["email"] = "a@b".into()),
            mutate(&|v| v["schema_version"] = 2.into()),
            mutate(&|v| v["event_id"] = "ev 1".into()),
            mutate(&|v| v["event_type"] = "Login".into()),
            mutate(&|v| v["event_time"] = "2026-10-01 08:00:00".into()),
            mutate(&|v| v["event_time"] = "2026-10-01T08:00:00".into()),
            mutate(&|v| v["entities"]["ip"] = "10.0.0.256".into()),
            mutate(&|v| v["entities"]["ip"] = "2001:db8::g".into()),
            mutate(&|v| v["entities"]["phone"] = "12345".into()),
            mutate(&|v| v["entities"]["id_number"] = "ZZ-123456".into()),
            mutate(&|v| v["entities"]["bank_card"] = "12345678901".into()),
            mutate(&|v| v["entities"]["user_id"] = "".into()),
            mutate(&|v| {
                v["entities"].as_object_mut().unwrap().remove("user_id");
            }),
        ];
        for bad in rejected {
            assert!(!validator.is_valid(&bad), "accepted {bad}");
        }
        for key in e.v["payload"].as_object().unwrap().keys() {
            let optional = ["region", "failure_reason", "stated_region", "annual_rate", "fees"];
            let v = mutate(&|v| {
                v["payload"].as_object_mut().unwrap().remove(key);
            });
            assert_eq!(validator.is_valid(&v), optional.contains(&key.as_str()), "{} without {key}", e.ty());
        }
        for key in e.v["entities"].as_object().unwrap().keys() {
            let required = match e.ty() {
                "device_report" => &["user_id", "device_id", "ip"][..],
                "loan_application" => &["user_id", "phone", "id_number", "bank_card"][..],
                _ => &["user_id"][..],
            };
            let v = mutate(&|v| {
                v["entities"].as_object_mut().unwrap().remove(key);
            });
            assert_eq!(validator.is_valid(&v), !required.contains(&key.as_str()), "{} without {key}", e.ty());
        }
        let accepted = [
            mutate(&|v| v["entities"]["ip"] = "::1".into()),
            mutate(&|v| v["event_time"] = "2026-10-01T10:00:00.5+02:00".into()),
            mutate(&|v| v["entities"]["device_id"] = "d".into()),
        ];
        for good in accepted {
            assert!(validator.is_valid(&good), "rejected {good}");
        }
    }
    assert_eq!(seen.len(), 8);
}
