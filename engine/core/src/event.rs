//! The versioned event envelope (v1) and its strict decoder.
//!
//! Decoding is the only place that sees raw bytes and clear-text personal
//! data. It either returns a typed [`Event`] whose sensitive identifiers are
//! already keyed hashes, or a [`DecodeError`] with a machine-readable
//! [`RejectReason`], the offending field path and a detail that never echoes
//! input values. The fast path is a single typed serde pass; only a rejected
//! event pays for the slower, precise classification.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::pii::{KeyRing, Protected};
use crate::timefmt;

pub const SCHEMA_VERSION: u32 = 1;

macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
            pub fn parse(text: &str) -> Option<Self> { match text { $($text => Some($name::$variant),)+ _ => None } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

str_enum!(
    /// The event types the engine understands.
    EventKind {
        Registration = "registration",
        Login = "login",
        DeviceReport = "device_report",
        LoanApplication = "loan_application",
        Repayment = "repayment",
        OverdueNotice = "overdue_notice",
        ContactChange = "contact_change",
        CreditReport = "credit_report",
    }
);

impl EventKind {
    /// A one-bit mask, for sets of event kinds.
    pub const fn bit(self) -> u16 {
        1 << (self as u16)
    }
    /// Applications get approve / review / reject; every other event pass / alert.
    pub fn is_application(self) -> bool {
        self == EventKind::LoanApplication
    }
}

/// A set of event kinds as a bit mask.
pub type KindMask = u16;
pub const ALL_KINDS: KindMask = (1 << 8) - 1;

str_enum!(Channel { App = "app", Web = "web", H5 = "h5", Partner = "partner" });
str_enum!(LoginMethod { Password = "password", Sms = "sms", Biometric = "biometric" });
str_enum!(Os { Android = "android", Ios = "ios", Other = "other" });
str_enum!(RepaymentMethod { EqualInstallment = "equal_installment", InterestOnly = "interest_only" });
str_enum!(Purpose {
    Consumption = "consumption",
    Education = "education",
    Medical = "medical",
    Business = "business",
    Home = "home",
    Travel = "travel",
    Other = "other",
});
str_enum!(ContactField {
    Phone = "phone",
    BankCard = "bank_card",
    Address = "address",
    Email = "email",
    EmergencyContact = "emergency_contact",
});

/// A decoded, validated event. Sensitive identifiers are keyed hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: CompactString,
    pub kind: EventKind,
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    pub entities: Entities,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entities {
    pub user_id: CompactString,
    pub device_id: Option<CompactString>,
    pub ip: Option<IpAddr>,
    pub phone: Option<Protected>,
    pub id_number: Option<Protected>,
    pub bank_card: Option<Protected>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    Registration(Registration),
    Login(Login),
    DeviceReport(DeviceReport),
    LoanApplication(LoanApplication),
    Repayment(Repayment),
    OverdueNotice(OverdueNotice),
    ContactChange(ContactChange),
    CreditReport(CreditReport),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub channel: Channel,
    #[serde(default, deserialize_with = "present")]
    pub region: Option<CompactString>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub success: bool,
    pub method: LoginMethod,
    #[serde(default, deserialize_with = "present")]
    pub failure_reason: Option<CompactString>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceReport {
    pub os: Os,
    pub os_version: CompactString,
    pub app_version: CompactString,
    pub is_emulator: bool,
    pub is_rooted: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoanApplication {
    pub application_id: CompactString,
    pub amount: f64,
    pub term_months: u32,
    pub repayment_method: RepaymentMethod,
    pub purpose: Purpose,
    pub stated_monthly_income: f64,
    #[serde(default, deserialize_with = "present")]
    pub stated_region: Option<CompactString>,
    #[serde(default, deserialize_with = "present")]
    pub annual_rate: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    pub fees: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repayment {
    pub loan_id: CompactString,
    pub amount: f64,
    pub installment_no: u32,
    pub days_late: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverdueNotice {
    pub loan_id: CompactString,
    pub days_overdue: u32,
    pub amount_due: f64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactChange {
    pub field: ContactField,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditReport {
    pub active_loans: u32,
    pub applications_last_30d: u32,
    pub max_overdue_days: u32,
    pub total_outstanding: f64,
}

str_enum!(
    /// Why an input did not become an event. Stable, machine-readable codes.
    RejectReason {
        Oversize = "oversize",
        BadEncoding = "bad_encoding",
        BadJson = "bad_json",
        UnsupportedSchemaVersion = "unsupported_schema_version",
        UnknownEventType = "unknown_event_type",
        MissingField = "missing_field",
        UnknownField = "unknown_field",
        WrongType = "wrong_type",
        InvalidValue = "invalid_value",
        MissingEntity = "missing_entity",
    }
);

/// A rejected input: reason code, field path (e.g. `payload.amount`) and a
/// human-readable detail that never contains input values.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct DecodeError {
    pub reason: RejectReason,
    pub field: Option<String>,
    pub detail: String,
    /// The event id and type when they could be read, to help find the sender.
    pub event_id: Option<String>,
    pub event_type: Option<EventKind>,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(field) = &self.field {
            write!(f, " at `{field}`")?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl DecodeError {
    fn new(reason: RejectReason, field: Option<&str>, detail: impl Into<String>) -> Self {
        DecodeError {
            reason,
            field: field.map(str::to_string),
            detail: detail.into(),
            event_id: None,
            event_type: None,
        }
    }
}

/// Limits on hostile input. Both are reported as `oversize`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Checked before any parsing.
    pub max_event_bytes: usize,
    /// How deeply objects and arrays may nest (the contract needs 2: the
    /// envelope and `entities` / `payload`). Checked only when the typed
    /// decode fails, which every deeper input does, so valid events never
    /// pay for the scan; it keeps the slow, precise classification (which
    /// builds a tree of the input) away from deeply nested input.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_event_bytes: 64 * 1024, max_depth: 32 }
    }
}

/// Whether objects and arrays in `text` nest deeper than `max` (strings and
/// their escapes skipped). One pass, no allocation.
fn nests_deeper_than(text: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    schema_version: u32,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    event_time: Cow<'a, str>,
    #[serde(borrow)]
    entities: RawEntities<'a>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntities<'a> {
    user_id: CompactString,
    #[serde(default, deserialize_with = "present")]
    device_id: Option<CompactString>,
    #[serde(default, deserialize_with = "present")]
    ip: Option<IpAddr>,
    #[serde(default, borrow, deserialize_with = "present_str")]
    phone: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present_str")]
    id_number: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present_str")]
    bank_card: Option<Cow<'a, str>>,
}

/// An optional field that, when present, must hold a value: the contract
/// has no `null` (leave the field out instead).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// [`present`] for strings, borrowing from the input when it can.
fn present_str<'de, D>(d: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
    }
    d.deserialize_str(Text).map(Some)
}

/// Decodes and validates event bytes. Holds the key ring used to replace
/// sensitive identifiers by keyed hashes.
#[derive(Clone, Debug)]
pub struct Decoder {
    limits: Limits,
    keys: KeyRing,
}

impl Decoder {
    pub fn new(limits: Limits, keys: KeyRing) -> Self {
        Decoder { limits, keys }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() > self.limits.max_event_bytes {
            return Err(DecodeError::new(
                RejectReason::Oversize,
                None,
                format!("event is {} bytes; the limit is {}", bytes.len(), self.limits.max_event_bytes),
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            DecodeError::new(
                RejectReason::BadEncoding,
                None,
                format!("not valid UTF-8 (first bad byte at offset {})", e.valid_up_to()),
            )
        })?;
        let raw: RawEnvelope<'_> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(_) => return Err(self.too_deep(text).unwrap_or_else(|| classify_envelope(text))),
        };
        let id_hint = valid_event_id(&raw.event_id).then(|| raw.event_id.to_string());
        let kind_hint = EventKind::parse(&raw.event_type);
        self.build(raw).map_err(|e| {
            // The envelope pass captures the payload raw, without parsing
            // it; a deeply nested payload fails the typed pass at its first
            // bracket and is reported here.
            let mut e = self.too_deep(text).unwrap_or(e);
            e.event_id = e.event_id.or(id_hint);
            e.event_type = e.event_type.or(kind_hint);
            e
        })
    }

    fn too_deep(&self, text: &str) -> Option<DecodeError> {
        nests_deeper_than(text, self.limits.max_depth).then(|| {
            DecodeError::new(
                RejectReason::Oversize,
                None,
                format!("objects and arrays nest deeper than the limit of {} levels", self.limits.max_depth),
            )
        })
    }

    fn build(&self, raw: RawEnvelope<'_>) -> Result<Event, DecodeError> {
        if raw.schema_version != SCHEMA_VERSION {
            return Err(unsupported_version());
        }
        let kind = EventKind::parse(&raw.event_type).ok_or_else(unknown_type)?;
        if !valid_event_id(&raw.event_id) {
            return Err(DecodeError::new(
                RejectReason::InvalidValue,
                Some("event_id"),
                "must be 1 to 128 characters from A-Z a-z 0-9 . _ : -",
            ));
        }
        let time_ms = timefmt::parse_rfc3339_ms(&raw.event_time).ok_or_else(|| {
            DecodeError::new(
                RejectReason::InvalidValue,
                Some("event_time"),
                "must be an RFC 3339 timestamp with offset, e.g. 2026-11-01T08:00:00.123Z",
            )
        })?;
        let entities = self.entities(raw.entities)?;
        let payload = decode_payload(kind, raw.payload.get())?;
        check_payload(&payload)?;
        check_required_entities(kind, &entities)?;
        Ok(Event { id: CompactString::from(raw.event_id.as_ref()), kind, time_ms, entities, payload })
    }

    fn entities(&self, raw: RawEntities<'_>) -> Result<Entities, DecodeError> {
        check_len("entities.user_id", &raw.user_id, 1, 128)?;
        if let Some(d) = &raw.device_id {
            check_len("entities.device_id", d, 1, 128)?;
        }
        let protect = |field: &str, v: &Option<Cow<'_, str>>, ok: fn(&str) -> bool, rule: &str| {
            v.as_deref()
                .map(|s| {
                    if ok(s) {
                        Ok(self.keys.protect(field, s))
                    } else {
                        Err(DecodeError::new(
                            RejectReason::InvalidValue,
                            Some(&format!("entities.{field}")),
                            rule.to_string(),
                        ))
                    }
                })
                .transpose()
        };
        Ok(Entities {
            phone: protect("phone", &raw.phone, valid_phone, "must be 6 to 20 digits, optionally after a leading +")?,
            id_number: protect("id_number", &raw.id_number, valid_id_number, "must be 6 to 32 letters or digits")?,
            bank_card: protect("bank_card", &raw.bank_card, valid_card, "must be 12 to 19 digits")?,
            user_id: raw.user_id,
            device_id: raw.device_id,
            ip: raw.ip,
        })
    }
}

fn valid_event_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn valid_phone(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (6..=20).contains(&s.len()) && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn valid_id_number(s: &str) -> bool {
    (6..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_card(s: &str) -> bool {
    (12..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn unsupported_version() -> DecodeError {
    DecodeError::new(
        RejectReason::UnsupportedSchemaVersion,
        Some("schema_version"),
        format!("this engine reads schema_version {SCHEMA_VERSION}"),
    )
}

fn unknown_type() -> DecodeError {
    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    DecodeError::new(
        RejectReason::UnknownEventType,
        Some("event_type"),
        format!("expected one of: {}", known.join(", ")),
    )
}

fn check_len(field: &str, s: &str, min: usize, max: usize) -> Result<(), DecodeError> {
    if (min..=max).contains(&s.chars().count()) {
        Ok(())
    } else {
        Err(DecodeError::new(
            RejectReason::InvalidValue,
            Some(field),
            format!("length must be {min} to {max} characters"),
        ))
    }
}

fn check_num(field: &str, v: f64, ok: bool, rule: &str) -> Result<(), DecodeError> {
    if v.is_finite() && ok {
        Ok(())
    } else {
        Err(DecodeError::new(RejectReason::InvalidValue, Some(field), rule.to_string()))
    }
}

fn decode_payload(kind: EventKind, text: &str) -> Result<Payload, DecodeError> {
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError::new(RejectReason::WrongType, Some("payload"), "expected an object"));
    }
    fn de<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, DecodeError> {
        serde_json::from_str(text).map_err(|_| {
            // Slow path: decode again tracking the path, for a precise report.
            let mut de = serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Ok(_) => DecodeError::new(RejectReason::BadJson, Some("payload"), "payload could not be decoded"),
                Err(e) => {
                    let path = e.path().to_string();
                    serde_error(&prefixed("payload", &path), e.inner())
                }
            }
        })
    }
    Ok(match kind {
        EventKind::Registration => Payload::Registration(de(text)?),
        EventKind::Login => Payload::Login(de(text)?),
        EventKind::DeviceReport => Payload::DeviceReport(de(text)?),
        EventKind::LoanApplication => Payload::LoanApplication(de(text)?),
        EventKind::Repayment => Payload::Repayment(de(text)?),
        EventKind::OverdueNotice => Payload::OverdueNotice(de(text)?),
        EventKind::ContactChange => Payload::ContactChange(de(text)?),
        EventKind::CreditReport => Payload::CreditReport(de(text)?),
    })
}

fn prefixed(prefix: &str, path: &str) -> String {
    if path.is_empty() || path == "." {
        prefix.to_string()
    } else {
        format!("{prefix}.{path}")
    }
}

fn check_payload(payload: &Payload) -> Result<(), DecodeError> {
    match payload {
        Payload::Registration(r) => {
            if let Some(region) = &r.region {
                check_len("payload.region", region, 1, 16)?;
            }
        }
        Payload::Login(l) => {
            if let Some(reason) = &l.failure_reason {
                check_len("payload.failure_reason", reason, 1, 64)?;
            }
        }
        Payload::DeviceReport(d) => {
            check_len("payload.os_version", &d.os_version, 1, 32)?;
            check_len("payload.app_version", &d.app_version, 1, 32)?;
        }
        Payload::LoanApplication(a) => {
            check_len("payload.application_id", &a.application_id, 1, 128)?;
            check_num("payload.amount", a.amount, a.amount > 0.0, "must be greater than 0")?;
            if !(1..=360).contains(&a.term_months) {
                return Err(DecodeError::new(
                    RejectReason::InvalidValue,
                    Some("payload.term_months"),
                    "must be 1 to 360",
                ));
            }
            let income = a.stated_monthly_income;
            check_num("payload.stated_monthly_income", income, income >= 0.0, "must be 0 or more")?;
            if let Some(region) = &a.stated_region {
                check_len("payload.stated_region", region, 1, 16)?;
            }
            if let Some(rate) = a.annual_rate {
                check_num(
                    "payload.annual_rate",
                    rate,
                    (0.0..=10.0).contains(&rate),
                    "must be 0 to 10 (a fraction: 0.18 = 18%)",
                )?;
            }
            if let Some(fees) = a.fees {
                check_num("payload.fees", fees, fees >= 0.0, "must be 0 or more")?;
            }
        }
        Payload::Repayment(r) => {
            check_len("payload.loan_id", &r.loan_id, 1, 128)?;
            check_num("payload.amount", r.amount, r.amount > 0.0, "must be greater than 0")?;
            if r.installment_no < 1 {
                return Err(DecodeError::new(
                    RejectReason::InvalidValue,
                    Some("payload.installment_no"),
                    "must be 1 or more",
                ));
            }
        }
        Payload::OverdueNotice(o) => {
            check_len("payload.loan_id", &o.loan_id, 1, 128)?;
            if o.days_overdue < 1 {
                return Err(DecodeError::new(
                    RejectReason::InvalidValue,
                    Some("payload.days_overdue"),
                    "must be 1 or more",
                ));
            }
            check_num("payload.amount_due", o.amount_due, o.amount_due > 0.0, "must be greater than 0")?;
        }
        Payload::ContactChange(_) => {}
        Payload::CreditReport(c) => {
            let t = c.total_outstanding;
            check_num("payload.total_outstanding", t, t >= 0.0, "must be 0 or more")?;
        }
    }
    Ok(())
}

fn check_required_entities(kind: EventKind, e: &Entities) -> Result<(), DecodeError> {
    let required: &[(&str, bool)] = match kind {
        EventKind::DeviceReport => &[("device_id", e.device_id.is_some()), ("ip", e.ip.is_some())],
        EventKind::LoanApplication => {
            &[("id_number", e.id_number.is_some()), ("phone", e.phone.is_some()), ("bank_card", e.bank_card.is_some())]
        }
        _ => &[],
    };
    match required.iter().find(|(_, present)| !present) {
        Some((name, _)) => Err(DecodeError::new(
            RejectReason::MissingEntity,
            Some(&format!("entities.{name}")),
            format!("{kind} events must name the {name} entity"),
        )),
        None => Ok(()),
    }
}

/// Precise classification of an envelope the fast path rejected, checking in
/// order: JSON syntax, object shape, schema version, event type, then fields.
fn classify_envelope(text: &str) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return DecodeError::new(
                RejectReason::BadJson,
                None,
                format!("{} at line {} column {}", syntax_kind(&e), e.line(), e.column()),
            )
        }
    };
    let Some(obj) = value.as_object() else {
        return DecodeError::new(RejectReason::BadJson, None, "an event must be a JSON object");
    };
    let event_id = obj.get("event_id").and_then(|v| v.as_str()).filter(|id| valid_event_id(id)).map(str::to_string);
    let event_type = obj.get("event_type").and_then(|v| v.as_str()).and_then(EventKind::parse);
    let mut err = match obj.get("schema_version") {
        None => DecodeError::new(RejectReason::MissingField, Some("schema_version"), "required"),
        Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => match obj.get("event_type") {
            None => DecodeError::new(RejectReason::MissingField, Some("event_type"), "required"),
            Some(t) if !t.is_string() => {
                DecodeError::new(RejectReason::WrongType, Some("event_type"), "expected a string")
            }
            Some(_) if event_type.is_none() => unknown_type(),
            Some(_) => {
                let mut de = serde_json::Deserializer::from_str(text);
                match serde_path_to_error::deserialize::<_, RawEnvelope<'_>>(&mut de) {
                    Ok(_) => DecodeError::new(RejectReason::BadJson, None, "event could not be decoded"),
                    Err(e) => serde_error(&e.path().to_string(), e.inner()),
                }
            }
        },
        Some(v) if v.is_u64() || v.is_i64() => unsupported_version(),
        Some(_) => DecodeError::new(RejectReason::WrongType, Some("schema_version"), "expected an integer"),
    };
    err.event_id = event_id;
    err.event_type = event_type;
    err
}

fn syntax_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "invalid JSON syntax",
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Data => "invalid JSON data",
    }
}

/// Maps a serde error to a reason and a detail without echoing input values.
fn serde_error(path: &str, e: &serde_json::Error) -> DecodeError {
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg.as_str(),
    };
    let path = path.trim_end_matches('.');
    let join = |name: &str| {
        if path.is_empty() || path == "." {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_string);
    let expected = |m: &str| m.split(", expected ").nth(1).map(friendly).unwrap_or_else(|| "a different value".into());
    if let Some(rest) = msg.strip_prefix("missing field ") {
        let name = quoted(rest).unwrap_or_default();
        return DecodeError::new(RejectReason::MissingField, Some(&join(&name)), "required");
    }
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let name = quoted(rest).unwrap_or_default();
        let allowed = rest.split(", expected ").nth(1).unwrap_or("").replace('`', "");
        // The path of an unknown field already ends with the field itself.
        let at = if path == name || path.ends_with(&format!(".{name}")) { path.to_string() } else { join(&name) };
        return DecodeError::new(
            RejectReason::UnknownField,
            Some(&at),
            format!("not part of the contract; allowed: {allowed}"),
        );
    }
    if msg.starts_with("invalid type:") || msg.starts_with("invalid length") {
        return DecodeError::new(RejectReason::WrongType, Some(path), format!("expected {}", expected(msg)));
    }
    if msg.starts_with("unknown variant") || msg.starts_with("invalid value:") {
        return DecodeError::new(
            RejectReason::InvalidValue,
            Some(path),
            format!("expected {}", expected(msg).replace('`', "")),
        );
    }
    if e.is_syntax() || e.is_eof() {
        return DecodeError::new(RejectReason::BadJson, Some(path), syntax_kind(e));
    }
    // Errors raised by field types themselves (e.g. IP address syntax) carry no input.
    DecodeError::new(RejectReason::InvalidValue, Some(path), msg.to_string())
}

fn friendly(expected: &str) -> String {
    match expected {
        "f64" | "f32" => "a number".into(),
        "u32" | "u64" | "u16" | "u8" => "a non-negative integer".into(),
        "i64" | "i32" => "an integer".into(),
        "a borrowed string" => "a string".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests;
