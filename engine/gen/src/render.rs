//! Rendering planned events as contract-v1 JSON lines.
//!
//! Lines are written by hand into a reused buffer in the contract's field
//! order: serde_json would allocate a `Value` tree per event, and the
//! benchmarks want millions of events per run. The tests validate every line
//! against the JSON Schema, which keeps this honest.

use crate::clock::TimeFmt;
use crate::model::EventType;
use crate::plan::{Act, Application, ContactField, Device, User, CHANNELS, FAILURES, METHODS, OS_NAMES, PURPOSES};
use crate::text::{
    push_bp, push_card, push_cents, push_device, push_id_number, push_padded, push_phone, push_u64, push_user, Ip,
};

pub(crate) struct Ctx<'a> {
    pub devices: &'a [Device],
    pub apps: &'a [Application],
}

fn entity_device(buf: &mut String, ctx: &Ctx<'_>, dev: u32, ip: Ip) {
    buf.push_str(",\"device_id\":\"");
    push_device(buf, ctx.devices[dev as usize].id);
    buf.push_str("\",\"ip\":\"");
    ip.push(buf);
    buf.push('"');
}

fn entity_phone(buf: &mut String, phone: u64) {
    buf.push_str(",\"phone\":\"");
    push_phone(buf, phone);
    buf.push('"');
}

fn entity_id_number(buf: &mut String, v: u64) {
    buf.push_str(",\"id_number\":\"");
    push_id_number(buf, v);
    buf.push('"');
}

fn entity_card(buf: &mut String, v: u64) {
    buf.push_str(",\"bank_card\":\"");
    push_card(buf, v);
    buf.push('"');
}

fn push_bool(buf: &mut String, b: bool) {
    buf.push_str(if b { "true" } else { "false" });
}

fn push_region(buf: &mut String, r: u8) {
    buf.push('R');
    push_padded(buf, u64::from(r), 2);
}

pub(crate) fn push_loan_id(buf: &mut String, app: u32) {
    buf.push_str("ln-");
    push_padded(buf, u64::from(app) + 1, 8);
}

pub(crate) fn event_type(act: &Act) -> EventType {
    match act {
        Act::Register { .. } => EventType::Registration,
        Act::DeviceReport { .. } => EventType::DeviceReport,
        Act::Login { .. } => EventType::Login,
        Act::CreditReport { .. } => EventType::CreditReport,
        Act::Apply { .. } => EventType::LoanApplication,
        Act::Repay { .. } => EventType::Repayment,
        Act::Overdue { .. } => EventType::OverdueNotice,
        Act::ContactChange { .. } => EventType::ContactChange,
    }
}

/// Appends one event (no trailing newline). Contact changes update the
/// user's current phone or card, so later events carry the new value.
/// Returns the event type and, for applications, the label.
#[allow(clippy::too_many_arguments)]
pub(crate) fn render(
    buf: &mut String,
    tf: &mut TimeFmt,
    ctx: &Ctx<'_>,
    seq: u64,
    t: i64,
    uidx: u32,
    user: &mut User,
    act: &Act,
) -> (EventType, Option<bool>) {
    let ty = event_type(act);
    buf.push_str("{\"schema_version\":1,\"event_id\":\"ev-");
    push_padded(buf, seq, 9);
    buf.push_str("\",\"event_type\":\"");
    buf.push_str(ty.as_str());
    buf.push_str("\",\"event_time\":\"");
    tf.push(buf, t);
    buf.push_str("\",\"entities\":{\"user_id\":\"");
    push_user(buf, uidx);
    buf.push('"');
    let mut label = None;
    match *act {
        Act::Register { dev, ip } => {
            entity_device(buf, ctx, dev, ip);
            entity_phone(buf, user.phone);
            buf.push_str("},\"payload\":{\"channel\":\"");
            buf.push_str(CHANNELS[user.channel as usize]);
            buf.push('"');
            if let Some(r) = user.region {
                buf.push_str(",\"region\":\"");
                push_region(buf, r);
                buf.push('"');
            }
        }
        Act::DeviceReport { dev, ip } => {
            entity_device(buf, ctx, dev, ip);
            let d = &ctx.devices[dev as usize];
            buf.push_str("},\"payload\":{\"os\":\"");
            buf.push_str(OS_NAMES[d.os as usize]);
            buf.push_str("\",\"os_version\":\"");
            buf.push_str(d.os_version);
            buf.push_str("\",\"app_version\":\"");
            buf.push_str(d.app_version);
            buf.push_str("\",\"is_emulator\":");
            push_bool(buf, d.emulator);
            buf.push_str(",\"is_rooted\":");
            push_bool(buf, d.rooted);
        }
        Act::Login { dev, ip, method, failure } => {
            entity_device(buf, ctx, dev, ip);
            if METHODS[method as usize] == "sms" {
                entity_phone(buf, user.phone);
            }
            buf.push_str("},\"payload\":{\"success\":");
            push_bool(buf, failure == 0);
            buf.push_str(",\"method\":\"");
            buf.push_str(METHODS[method as usize]);
            buf.push('"');
            if failure != 0 {
                buf.push_str(",\"failure_reason\":\"");
                buf.push_str(FAILURES[failure as usize]);
                buf.push('"');
            }
        }
        Act::CreditReport { active_loans, apps_30d, max_overdue_days, outstanding_cents } => {
            entity_id_number(buf, user.id_number);
            buf.push_str("},\"payload\":{\"active_loans\":");
            push_u64(buf, u64::from(active_loans));
            buf.push_str(",\"applications_last_30d\":");
            push_u64(buf, u64::from(apps_30d));
            buf.push_str(",\"max_overdue_days\":");
            push_u64(buf, u64::from(max_overdue_days));
            buf.push_str(",\"total_outstanding\":");
            push_cents(buf, outstanding_cents);
        }
        Act::Apply { app } => {
            let a = &ctx.apps[app as usize];
            entity_device(buf, ctx, a.dev, a.ip);
            entity_phone(buf, user.phone);
            entity_id_number(buf, user.id_number);
            entity_card(buf, user.bank_card);
            buf.push_str("},\"payload\":{\"application_id\":\"app-");
            push_padded(buf, u64::from(app) + 1, 8);
            buf.push_str("\",\"amount\":");
            push_cents(buf, a.amount_cents);
            buf.push_str(",\"term_months\":");
            push_u64(buf, u64::from(a.term_months));
            buf.push_str(",\"repayment_method\":\"");
            buf.push_str(if a.interest_only { "interest_only" } else { "equal_installment" });
            buf.push_str("\",\"purpose\":\"");
            buf.push_str(PURPOSES[a.purpose as usize]);
            buf.push_str("\",\"stated_monthly_income\":");
            push_cents(buf, a.stated_income_cents);
            if let Some(r) = a.stated_region {
                buf.push_str(",\"stated_region\":\"");
                push_region(buf, r);
                buf.push('"');
            }
            if let Some(bp) = a.rate_bp {
                buf.push_str(",\"annual_rate\":");
                push_bp(buf, bp);
            }
            if let Some(f) = a.fees_cents {
                buf.push_str(",\"fees\":");
                push_cents(buf, f);
            }
            label = Some(a.bad);
        }
        Act::Repay { app, installment, days_late, amount_cents } => {
            entity_card(buf, user.bank_card);
            buf.push_str("},\"payload\":{\"loan_id\":\"");
            push_loan_id(buf, app);
            buf.push_str("\",\"amount\":");
            push_cents(buf, amount_cents);
            buf.push_str(",\"installment_no\":");
            push_u64(buf, u64::from(installment));
            buf.push_str(",\"days_late\":");
            push_u64(buf, u64::from(days_late));
        }
        Act::Overdue { app, days, amount_due_cents } => {
            entity_phone(buf, user.phone);
            buf.push_str("},\"payload\":{\"loan_id\":\"");
            push_loan_id(buf, app);
            buf.push_str("\",\"days_overdue\":");
            push_u64(buf, u64::from(days));
            buf.push_str(",\"amount_due\":");
            push_cents(buf, amount_due_cents);
        }
        Act::ContactChange { field, dev, ip, new_value } => {
            entity_device(buf, ctx, dev, ip);
            match field {
                ContactField::Phone => {
                    user.phone = new_value;
                    entity_phone(buf, new_value);
                }
                ContactField::BankCard => {
                    user.bank_card = new_value;
                    entity_card(buf, new_value);
                }
                _ => {}
            }
            buf.push_str("},\"payload\":{\"field\":\"");
            buf.push_str(field.as_str());
            buf.push('"');
        }
    }
    buf.push_str("}}");
    (ty, label)
}
