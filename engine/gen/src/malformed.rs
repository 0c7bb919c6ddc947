//! Deliberately malformed lines (`--bad N`), one per dead-letter reason in
//! turn, each in two variants (alternating per cycle).
//!
//! They borrow the user id, device and IP of the event before them so they
//! look like real traffic gone wrong, but never carry a phone, identity number
//! or bank card: dead-letter records keep raw input, so a malformed line must
//! not hold anything sensitive.

use crate::model::BadReason;
use crate::text::{push_device, push_padded, push_user, Ip};

pub(crate) struct BadCtx<'a> {
    /// 1-based number of this malformed line.
    pub n: u64,
    pub time: &'a str,
    pub user: u32,
    pub device: u64,
    pub ip: Ip,
}

fn envelope(buf: &mut String, c: &BadCtx<'_>, version: &str, event_type: &str) {
    buf.push_str("{\"schema_version\":");
    buf.push_str(version);
    buf.push_str(",\"event_id\":\"bad-");
    push_padded(buf, c.n, 6);
    buf.push_str("\",\"event_type\":\"");
    buf.push_str(event_type);
    buf.push_str("\",\"event_time\":\"");
    buf.push_str(c.time);
    buf.push('"');
}

/// `,"entities":{"user_id":..,"device_id":..[,"ip":..]}`
fn entities(buf: &mut String, c: &BadCtx<'_>, with_ip: bool) {
    buf.push_str(",\"entities\":{\"user_id\":\"");
    push_user(buf, c.user);
    buf.push_str("\",\"device_id\":\"");
    push_device(buf, c.device);
    buf.push('"');
    if with_ip {
        buf.push_str(",\"ip\":\"");
        c.ip.push(buf);
        buf.push('"');
    }
    buf.push('}');
}

const LOGIN_OK: &str = ",\"payload\":{\"success\":true,\"method\":\"password\"}";
const DEVICE_OK: &str = ",\"payload\":{\"os\":\"android\",\"os_version\":\"14\",\"app_version\":\"5.4.0\",\"is_emulator\":false,\"is_rooted\":false}";

pub(crate) fn render_bad(buf: &mut String, c: &BadCtx<'_>, reason: BadReason, variant: u64) {
    let v = variant % 2;
    match reason {
        BadReason::BadJson => {
            if v == 0 {
                // Truncated mid-object.
                envelope(buf, c, "1", "login");
                buf.push_str(",\"entities\":{\"user_id\":\"");
                push_user(buf, c.user);
                buf.push_str("\",\"device_id\":");
            } else {
                // Valid JSON, but not an object.
                buf.push_str("[\"login\",\"");
                push_user(buf, c.user);
                buf.push_str("\",\"");
                buf.push_str(c.time);
                buf.push_str("\"]");
            }
            return;
        }
        BadReason::UnknownEventType => {
            if v == 0 {
                envelope(buf, c, "1", "loan_offer_view");
                entities(buf, c, true);
                buf.push_str(",\"payload\":{\"offer_id\":\"of-17\"}");
            } else {
                envelope(buf, c, "1", "Login");
                entities(buf, c, true);
                buf.push_str(LOGIN_OK);
            }
        }
        BadReason::MissingField => {
            if v == 0 {
                envelope(buf, c, "1", "login");
                entities(buf, c, true);
                buf.push_str(",\"payload\":{\"method\":\"password\"}");
            } else {
                envelope(buf, c, "1", "repayment");
                entities(buf, c, false);
                buf.push_str(",\"payload\":{\"loan_id\":\"ln-bad\",\"amount\":120.5,\"installment_no\":1}");
            }
        }
        BadReason::WrongType => {
            if v == 0 {
                envelope(buf, c, "1", "repayment");
                entities(buf, c, false);
                buf.push_str(
                    ",\"payload\":{\"loan_id\":\"ln-bad\",\"amount\":120.5,\"installment_no\":\"2\",\"days_late\":0}",
                );
            } else {
                envelope(buf, c, "1", "login");
                entities(buf, c, true);
                buf.push_str(",\"payload\":{\"success\":\"true\",\"method\":\"password\"}");
            }
        }
        BadReason::UnknownField => {
            envelope(buf, c, "1", if v == 0 { "login" } else { "device_report" });
            if v == 0 {
                buf.push_str(",\"trace_id\":\"t-0042\"");
                entities(buf, c, true);
                buf.push_str(LOGIN_OK);
            } else {
                entities(buf, c, true);
                buf.push_str(&DEVICE_OK[..DEVICE_OK.len() - 1]);
                buf.push_str(",\"battery_level\":87}");
            }
        }
        BadReason::InvalidValue => {
            if v == 0 {
                envelope(buf, c, "1", "repayment");
                entities(buf, c, false);
                buf.push_str(
                    ",\"payload\":{\"loan_id\":\"ln-bad\",\"amount\":-120.5,\"installment_no\":1,\"days_late\":0}",
                );
            } else {
                envelope(buf, c, "1", "device_report");
                entities(buf, c, true);
                buf.push_str(&DEVICE_OK.replace("\"android\"", "\"symbian\""));
            }
        }
        BadReason::MissingEntity => {
            if v == 0 {
                // A device report needs an ip.
                envelope(buf, c, "1", "device_report");
                entities(buf, c, false);
                buf.push_str(DEVICE_OK);
            } else {
                // An application needs id_number, phone and bank_card.
                envelope(buf, c, "1", "loan_application");
                entities(buf, c, true);
                buf.push_str(
                    ",\"payload\":{\"application_id\":\"app-bad\",\"amount\":5000,\"term_months\":12,\
                     \"repayment_method\":\"equal_installment\",\"purpose\":\"consumption\",\
                     \"stated_monthly_income\":6000}",
                );
            }
        }
        BadReason::UnsupportedSchemaVersion => {
            envelope(buf, c, if v == 0 { "2" } else { "99" }, "login");
            entities(buf, c, true);
            buf.push_str(LOGIN_OK);
        }
    }
    buf.push('}');
}
