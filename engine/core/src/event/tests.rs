use super::*;

fn decoder() -> Decoder {
    let keys = format!(
        "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    Decoder::new(Limits { max_event_bytes: 2048, max_depth: 32 }, KeyRing::from_toml(&keys, "test").unwrap())
}

const APPLICATION: &str = r#"{"schema_version":1,"event_id":"ev-1","event_type":"loan_application","event_time":"2026-11-01T08:00:00.123Z","entities":{"user_id":"u1","device_id":"d1","ip":"10.1.2.3","phone":"+991234567","id_number":"ZZ12345678","bank_card":"9900112233445566"},"payload":{"application_id":"a1","amount":5000,"term_months":12,"repayment_method":"equal_installment","purpose":"consumption","stated_monthly_income":8000}}"#;

#[test]
fn decodes_a_valid_application_and_hashes_identity_fields() {
    let ev = decoder().decode(APPLICATION.as_bytes()).unwrap();
    assert_eq!(ev.kind, EventKind::LoanApplication);
    assert_eq!(ev.id, "ev-1");
    assert_eq!(ev.time_ms, 1_793_520_000_123);
    let Payload::LoanApplication(a) = &ev.payload else { panic!("wrong payload") };
    assert_eq!(a.amount, 5000.0);
    assert_eq!(a.term_months, 12);
    let phone = ev.entities.phone.unwrap();
    assert_eq!(phone, decoder().keys().protect("phone", "+991234567"));
    assert!(!format!("{ev:?}").contains("991234567"));
}

fn with(from: &str, to: &str) -> String {
    assert!(APPLICATION.contains(from), "fixture lacks {from}");
    APPLICATION.replacen(from, to, 1)
}

/// (input, reason, field) for every rejection the contract names.
#[test]
fn rejections_are_specific() {
    let long = format!(r#"{{"pad":"{}"}}"#, "x".repeat(3000));
    let cases: Vec<(String, RejectReason, Option<&str>)> = vec![
        (long, RejectReason::Oversize, None),
        ("{\"a\":".into(), RejectReason::BadJson, None),
        ("[1,2]".into(), RejectReason::BadJson, None),
        (
            with("\"schema_version\":1", "\"schema_version\":2"),
            RejectReason::UnsupportedSchemaVersion,
            Some("schema_version"),
        ),
        (with("\"schema_version\":1", "\"schema_version\":\"1\""), RejectReason::WrongType, Some("schema_version")),
        (with("\"schema_version\":1,", ""), RejectReason::MissingField, Some("schema_version")),
        (with("loan_application", "loan_offer"), RejectReason::UnknownEventType, Some("event_type")),
        (with("\"event_type\":\"loan_application\",", ""), RejectReason::MissingField, Some("event_type")),
        (with("\"amount\":5000", "\"amount\":\"5000\""), RejectReason::WrongType, Some("payload.amount")),
        (with("\"amount\":5000,", ""), RejectReason::MissingField, Some("payload.amount")),
        (with("\"amount\":5000", "\"amount\":-1"), RejectReason::InvalidValue, Some("payload.amount")),
        (with("\"term_months\":12", "\"term_months\":-12"), RejectReason::InvalidValue, Some("payload.term_months")),
        (with("\"term_months\":12", "\"term_months\":400"), RejectReason::InvalidValue, Some("payload.term_months")),
        (
            with("\"purpose\":\"consumption\"", "\"purpose\":\"yacht\""),
            RejectReason::InvalidValue,
            Some("payload.purpose"),
        ),
        (with("\"amount\":5000", "\"amount\":5000,\"bonus\":1"), RejectReason::UnknownField, Some("payload.bonus")),
        (
            with("\"user_id\":\"u1\"", "\"user_id\":\"u1\",\"email\":\"x\""),
            RejectReason::UnknownField,
            Some("entities.email"),
        ),
        (
            with("\"event_id\":\"ev-1\"", "\"event_id\":\"ev-1\",\"extra\":true"),
            RejectReason::UnknownField,
            Some("extra"),
        ),
        (with("\"user_id\":\"u1\",", ""), RejectReason::MissingField, Some("entities.user_id")),
        (with("\"ip\":\"10.1.2.3\"", "\"ip\":\"10.1.2\""), RejectReason::InvalidValue, Some("entities.ip")),
        (with("\"phone\":\"+991234567\"", "\"phone\":\"call me\""), RejectReason::InvalidValue, Some("entities.phone")),
        (with("\"phone\":\"+991234567\",", ""), RejectReason::MissingEntity, Some("entities.phone")),
        (with("2026-11-01T08:00:00.123Z", "yesterday"), RejectReason::InvalidValue, Some("event_time")),
        (with("\"event_id\":\"ev-1\"", "\"event_id\":\"ev 1\""), RejectReason::InvalidValue, Some("event_id")),
        (with("\"payload\":{", "\"payload\":[{").replacen("}}", "}]}", 1), RejectReason::WrongType, Some("payload")),
        (
            with("\"amount\":5000", "\"amount\":5000,\"stated_region\":null"),
            RejectReason::WrongType,
            Some("payload.stated_region"),
        ),
        (with("\"device_id\":\"d1\"", "\"device_id\":null"), RejectReason::WrongType, Some("entities.device_id")),
        (with("\"phone\":\"+991234567\"", "\"phone\":null"), RejectReason::WrongType, Some("entities.phone")),
    ];
    let d = decoder();
    for (input, reason, field) in cases {
        let err = d.decode(input.as_bytes()).expect_err(&input);
        assert_eq!(err.reason, reason, "{input}\n=> {err}");
        assert_eq!(err.field.as_deref(), field, "{input}\n=> {err}");
        for secret in ["991234567", "ZZ12345678", "9900112233445566", "5000\"", "yacht", "call me"] {
            assert!(!err.detail.contains(secret), "detail echoes input: {err}");
        }
    }
}

#[test]
fn bad_utf8_is_bad_encoding() {
    let err = decoder().decode(b"{\"a\":\"\xff\"}").unwrap_err();
    assert_eq!(err.reason, RejectReason::BadEncoding);
}

#[test]
fn rejected_events_keep_id_and_type_hints() {
    let err = decoder().decode(with("\"amount\":5000", "\"amount\":true").as_bytes()).unwrap_err();
    assert_eq!(err.event_id.as_deref(), Some("ev-1"));
    assert_eq!(err.event_type, Some(EventKind::LoanApplication));
}

#[test]
fn every_kind_decodes() {
    let payloads = [
        ("registration", r#"{"channel":"app","region":"R31"}"#, ""),
        ("login", r#"{"success":false,"method":"password","failure_reason":"bad_password"}"#, ""),
        (
            "device_report",
            r#"{"os":"android","os_version":"14","app_version":"3.2.1","is_emulator":true,"is_rooted":false}"#,
            r#","device_id":"d1","ip":"10.0.0.1""#,
        ),
        ("repayment", r#"{"loan_id":"l1","amount":120.5,"installment_no":1,"days_late":0}"#, ""),
        ("overdue_notice", r#"{"loan_id":"l1","days_overdue":5,"amount_due":300}"#, ""),
        ("contact_change", r#"{"field":"phone"}"#, r#","phone":"+9911112222""#),
        (
            "credit_report",
            r#"{"active_loans":2,"applications_last_30d":7,"max_overdue_days":0,"total_outstanding":1200}"#,
            "",
        ),
    ];
    for (kind, payload, ents) in payloads {
        let text = format!(
            r#"{{"schema_version":1,"event_id":"e","event_type":"{kind}","event_time":"2026-11-01T00:00:00Z","entities":{{"user_id":"u"{ents}}},"payload":{payload}}}"#
        );
        let ev = decoder().decode(text.as_bytes()).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(ev.kind.as_str(), kind);
    }
}

fn nested(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

#[test]
fn nesting_deeper_than_the_limit_is_oversize() {
    let d = decoder();
    // Anywhere: the whole input, a payload field, an entities field, or a
    // bracket run that is never closed.
    let cases = [
        nested(33),
        with("\"amount\":5000", &format!("\"amount\":5000,\"x\":{}", nested(31))),
        with("\"amount\":5000", &format!("\"amount\":{}", nested(40))),
        with("\"user_id\":\"u1\"", &format!("\"user_id\":\"u1\",\"x\":{}", nested(31))),
        format!("{{\"a\":{}", "{\"a\":".repeat(300)),
        "[".repeat(2000),
    ];
    for input in &cases {
        let e = d.decode(input.as_bytes()).unwrap_err();
        assert_eq!(e.reason, RejectReason::Oversize, "{e}");
        assert_eq!(e.detail, "objects and arrays nest deeper than the limit of 32 levels");
    }
    // The event id is still reported when the envelope could be read.
    let e = d.decode(cases[1].as_bytes()).unwrap_err();
    assert_eq!((e.event_id.as_deref(), e.event_type), (Some("ev-1"), Some(EventKind::LoanApplication)));
}

#[test]
fn nesting_within_the_limit_is_classified_as_usual() {
    // 32 levels in all (envelope, payload, 30 brackets): not oversize, the
    // unknown field is reported.
    let input = with("\"amount\":5000", &format!("\"amount\":5000,\"x\":{}", nested(30)));
    let e = decoder().decode(input.as_bytes()).unwrap_err();
    assert_eq!((e.reason, e.field.as_deref()), (RejectReason::UnknownField, Some("payload.x")));
    // Brackets inside strings (escaped quotes included) do not nest.
    let brackets = format!("{}\\\"{}", "[".repeat(40), "{".repeat(40));
    let ok = with("\"application_id\":\"a1\"", &format!("\"application_id\":\"{brackets}\""));
    decoder().decode(ok.as_bytes()).unwrap();
    let bad = with("\"purpose\":\"consumption\"", &format!("\"purpose\":\"{brackets}\""));
    let e = decoder().decode(bad.as_bytes()).unwrap_err();
    assert_eq!((e.reason, e.field.as_deref()), (RejectReason::InvalidValue, Some("payload.purpose")));
}

#[test]
fn default_limits_survive_the_deepest_input_that_fits() {
    let keys = format!(
        "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\n",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    let d = Decoder::new(Limits::default(), KeyRing::from_toml(&keys, "test").unwrap());
    let deepest = nested(Limits::default().max_event_bytes / 2);
    let e = d.decode(deepest.as_bytes()).unwrap_err();
    assert_eq!(e.reason, RejectReason::Oversize);
    assert!(e.detail.contains("nest deeper"), "{e}");
}
