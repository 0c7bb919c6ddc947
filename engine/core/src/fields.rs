//! The value model and the table of event fields that rules, features and
//! model inputs may read.
//!
//! Names such as `event.amount` are resolved to a [`FieldId`] once, when
//! rules, features and manifests are loaded; at run time a field is read by
//! index through a plain function pointer, never looked up by name.

use std::fmt;
use std::net::IpAddr;

use crate::event::{Event, EventKind, KindMask, Payload, ALL_KINDS};

/// A value read from an event, a feature or an earlier stage. `Missing` is a
/// value of its own: rules must handle it explicitly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Missing,
    Num(f64),
    Bool(bool),
    Str(&'a str),
    Ip(IpAddr),
}

impl Value<'_> {
    pub fn as_num(&self) -> Option<f64> {
        match self {
            Value::Num(v) if !v.is_nan() => Some(*v),
            _ => None,
        }
    }
    /// Numeric value with missing as NaN, as LightGBM expects it.
    pub fn num_or_nan(&self) -> f64 {
        match self {
            Value::Num(v) => *v,
            Value::Bool(b) => f64::from(u8::from(*b)),
            _ => f64::NAN,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    Num,
    Bool,
    Str,
    Ip,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Num => "number",
            FieldType::Bool => "bool",
            FieldType::Str => "string",
            FieldType::Ip => "ip",
        })
    }
}

/// Index of a field in [`FIELDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldId(pub u16);

pub struct FieldSpec {
    pub name: &'static str,
    pub ty: FieldType,
    /// The event kinds that carry this field.
    pub kinds: KindMask,
    pub doc: &'static str,
    pub get: for<'a> fn(&'a Event) -> Value<'a>,
}

fn opt_str(v: &Option<compact_str::CompactString>) -> Value<'_> {
    v.as_deref().map_or(Value::Missing, Value::Str)
}

fn opt_num(v: Option<f64>) -> Value<'static> {
    v.map_or(Value::Missing, Value::Num)
}

const APP: KindMask = EventKind::LoanApplication.bit();

macro_rules! payload_field {
    ($variant:ident, $p:ident => $e:expr) => {
        |ev: &Event| match &ev.payload {
            Payload::$variant($p) => $e,
            _ => Value::Missing,
        }
    };
}

/// Every event field readable by name. Order is part of no contract.
pub static FIELDS: &[FieldSpec] = &[
    FieldSpec {
        name: "event.type",
        ty: FieldType::Str,
        kinds: ALL_KINDS,
        doc: "event type",
        get: |ev| Value::Str(ev.kind.as_str()),
    },
    FieldSpec {
        name: "event.hour_of_day",
        ty: FieldType::Num,
        kinds: ALL_KINDS,
        doc: "hour of the event time, UTC, 0-23",
        get: |ev| Value::Num(ev.time_ms.div_euclid(3_600_000).rem_euclid(24) as f64),
    },
    FieldSpec {
        name: "event.day_of_week",
        ty: FieldType::Num,
        kinds: ALL_KINDS,
        doc: "day of the event time, UTC, 0 = Monday to 6 = Sunday",
        // 1970-01-01 was a Thursday (3).
        get: |ev| Value::Num((ev.time_ms.div_euclid(86_400_000) + 3).rem_euclid(7) as f64),
    },
    FieldSpec {
        name: "entity.user_id",
        ty: FieldType::Str,
        kinds: ALL_KINDS,
        doc: "user id",
        get: |ev| Value::Str(&ev.entities.user_id),
    },
    FieldSpec {
        name: "entity.device_id",
        ty: FieldType::Str,
        kinds: ALL_KINDS,
        doc: "device id, when given",
        get: |ev| opt_str(&ev.entities.device_id),
    },
    FieldSpec {
        name: "entity.ip",
        ty: FieldType::Ip,
        kinds: ALL_KINDS,
        doc: "client IP, when given",
        get: |ev| ev.entities.ip.map_or(Value::Missing, Value::Ip),
    },
    FieldSpec {
        name: "event.channel",
        ty: FieldType::Str,
        kinds: EventKind::Registration.bit(),
        doc: "registration channel",
        get: payload_field!(Registration, r => Value::Str(r.channel.as_str())),
    },
    FieldSpec {
        name: "event.region",
        ty: FieldType::Str,
        kinds: EventKind::Registration.bit(),
        doc: "registration region code",
        get: payload_field!(Registration, r => opt_str(&r.region)),
    },
    FieldSpec {
        name: "event.success",
        ty: FieldType::Bool,
        kinds: EventKind::Login.bit(),
        doc: "login succeeded",
        get: payload_field!(Login, l => Value::Bool(l.success)),
    },
    FieldSpec {
        name: "event.method",
        ty: FieldType::Str,
        kinds: EventKind::Login.bit(),
        doc: "login method",
        get: payload_field!(Login, l => Value::Str(l.method.as_str())),
    },
    FieldSpec {
        name: "event.failure_reason",
        ty: FieldType::Str,
        kinds: EventKind::Login.bit(),
        doc: "login failure reason",
        get: payload_field!(Login, l => opt_str(&l.failure_reason)),
    },
    FieldSpec {
        name: "event.os",
        ty: FieldType::Str,
        kinds: EventKind::DeviceReport.bit(),
        doc: "device OS",
        get: payload_field!(DeviceReport, d => Value::Str(d.os.as_str())),
    },
    FieldSpec {
        name: "event.os_version",
        ty: FieldType::Str,
        kinds: EventKind::DeviceReport.bit(),
        doc: "device OS version",
        get: payload_field!(DeviceReport, d => Value::Str(&d.os_version)),
    },
    FieldSpec {
        name: "event.app_version",
        ty: FieldType::Str,
        kinds: EventKind::DeviceReport.bit(),
        doc: "app version",
        get: payload_field!(DeviceReport, d => Value::Str(&d.app_version)),
    },
    FieldSpec {
        name: "event.is_emulator",
        ty: FieldType::Bool,
        kinds: EventKind::DeviceReport.bit(),
        doc: "device is an emulator",
        get: payload_field!(DeviceReport, d => Value::Bool(d.is_emulator)),
    },
    FieldSpec {
        name: "event.is_rooted",
        ty: FieldType::Bool,
        kinds: EventKind::DeviceReport.bit(),
        doc: "device is rooted/jailbroken",
        get: payload_field!(DeviceReport, d => Value::Bool(d.is_rooted)),
    },
    FieldSpec {
        name: "event.amount",
        ty: FieldType::Num,
        kinds: APP | EventKind::Repayment.bit(),
        doc: "amount applied for, or repaid",
        get: |ev| match &ev.payload {
            Payload::LoanApplication(a) => Value::Num(a.amount),
            Payload::Repayment(r) => Value::Num(r.amount),
            _ => Value::Missing,
        },
    },
    FieldSpec {
        name: "event.term_months",
        ty: FieldType::Num,
        kinds: APP,
        doc: "loan term in months",
        get: payload_field!(LoanApplication, a => Value::Num(f64::from(a.term_months))),
    },
    FieldSpec {
        name: "event.repayment_method",
        ty: FieldType::Str,
        kinds: APP,
        doc: "equal_installment or interest_only",
        get: payload_field!(LoanApplication, a => Value::Str(a.repayment_method.as_str())),
    },
    FieldSpec {
        name: "event.purpose",
        ty: FieldType::Str,
        kinds: APP,
        doc: "loan purpose",
        get: payload_field!(LoanApplication, a => Value::Str(a.purpose.as_str())),
    },
    FieldSpec {
        name: "event.stated_monthly_income",
        ty: FieldType::Num,
        kinds: APP,
        doc: "stated monthly income",
        get: payload_field!(LoanApplication, a => Value::Num(a.stated_monthly_income)),
    },
    FieldSpec {
        name: "event.stated_region",
        ty: FieldType::Str,
        kinds: APP,
        doc: "stated region code",
        get: payload_field!(LoanApplication, a => opt_str(&a.stated_region)),
    },
    FieldSpec {
        name: "event.annual_rate",
        ty: FieldType::Num,
        kinds: APP,
        doc: "nominal annual rate (fraction)",
        get: payload_field!(LoanApplication, a => opt_num(a.annual_rate)),
    },
    FieldSpec {
        name: "event.fees",
        ty: FieldType::Num,
        kinds: APP,
        doc: "up-front fees",
        get: payload_field!(LoanApplication, a => opt_num(a.fees)),
    },
    FieldSpec {
        name: "event.installment_no",
        ty: FieldType::Num,
        kinds: EventKind::Repayment.bit(),
        doc: "installment number",
        get: payload_field!(Repayment, r => Value::Num(f64::from(r.installment_no))),
    },
    FieldSpec {
        name: "event.days_late",
        ty: FieldType::Num,
        kinds: EventKind::Repayment.bit(),
        doc: "days the repayment was late",
        get: payload_field!(Repayment, r => Value::Num(f64::from(r.days_late))),
    },
    FieldSpec {
        name: "event.days_overdue",
        ty: FieldType::Num,
        kinds: EventKind::OverdueNotice.bit(),
        doc: "days overdue",
        get: payload_field!(OverdueNotice, o => Value::Num(f64::from(o.days_overdue))),
    },
    FieldSpec {
        name: "event.amount_due",
        ty: FieldType::Num,
        kinds: EventKind::OverdueNotice.bit(),
        doc: "amount overdue",
        get: payload_field!(OverdueNotice, o => Value::Num(o.amount_due)),
    },
    FieldSpec {
        name: "event.field",
        ty: FieldType::Str,
        kinds: EventKind::ContactChange.bit(),
        doc: "which contact field changed",
        get: payload_field!(ContactChange, c => Value::Str(c.field.as_str())),
    },
    FieldSpec {
        name: "event.active_loans",
        ty: FieldType::Num,
        kinds: EventKind::CreditReport.bit(),
        doc: "active loans elsewhere",
        get: payload_field!(CreditReport, c => Value::Num(f64::from(c.active_loans))),
    },
    FieldSpec {
        name: "event.applications_last_30d",
        ty: FieldType::Num,
        kinds: EventKind::CreditReport.bit(),
        doc: "applications elsewhere, last 30 days",
        get: payload_field!(CreditReport, c => Value::Num(f64::from(c.applications_last_30d))),
    },
    FieldSpec {
        name: "event.max_overdue_days",
        ty: FieldType::Num,
        kinds: EventKind::CreditReport.bit(),
        doc: "worst overdue days on record",
        get: payload_field!(CreditReport, c => Value::Num(f64::from(c.max_overdue_days))),
    },
    FieldSpec {
        name: "event.total_outstanding",
        ty: FieldType::Num,
        kinds: EventKind::CreditReport.bit(),
        doc: "outstanding balance elsewhere",
        get: payload_field!(CreditReport, c => Value::Num(c.total_outstanding)),
    },
];

impl FieldId {
    pub fn lookup(name: &str) -> Option<FieldId> {
        FIELDS.iter().position(|f| f.name == name).map(|i| FieldId(i as u16))
    }
    pub fn spec(self) -> &'static FieldSpec {
        &FIELDS[usize::from(self.0)]
    }
    #[inline]
    pub fn get(self, ev: &Event) -> Value<'_> {
        (FIELDS[usize::from(self.0)].get)(ev)
    }
}

/// Names of the event kinds in a mask, for messages.
pub fn kinds_text(mask: KindMask) -> String {
    EventKind::ALL.iter().filter(|k| mask & k.bit() != 0).map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Entities, Login, LoginMethod};

    #[test]
    fn calendar_fields_use_event_time_in_utc() {
        // 2026-11-01T23:30:00Z is a Sunday.
        let ev = Event {
            id: "e".into(),
            kind: EventKind::Login,
            time_ms: crate::timefmt::parse_rfc3339_ms("2026-11-01T23:30:00Z").unwrap(),
            entities: Entities {
                user_id: "u".into(),
                device_id: None,
                ip: None,
                phone: None,
                id_number: None,
                bank_card: None,
            },
            payload: Payload::Login(Login { success: true, method: LoginMethod::Sms, failure_reason: None }),
        };
        assert_eq!(FieldId::lookup("event.hour_of_day").unwrap().get(&ev), Value::Num(23.0));
        assert_eq!(FieldId::lookup("event.day_of_week").unwrap().get(&ev), Value::Num(6.0));
        assert_eq!(FieldId::lookup("event.amount").unwrap().get(&ev), Value::Missing);
    }
}
