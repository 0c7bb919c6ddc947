//! The public vocabulary of the generator: event types, malformed-line
//! reasons, per-line metadata, run statistics and the fraud manifest.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The eight event types of contract v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Registration,
    Login,
    DeviceReport,
    LoanApplication,
    Repayment,
    OverdueNotice,
    ContactChange,
    CreditReport,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::Registration,
        EventType::Login,
        EventType::DeviceReport,
        EventType::LoanApplication,
        EventType::Repayment,
        EventType::OverdueNotice,
        EventType::ContactChange,
        EventType::CreditReport,
    ];

    /// The `event_type` text.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Registration => "registration",
            EventType::Login => "login",
            EventType::DeviceReport => "device_report",
            EventType::LoanApplication => "loan_application",
            EventType::Repayment => "repayment",
            EventType::OverdueNotice => "overdue_notice",
            EventType::ContactChange => "contact_change",
            EventType::CreditReport => "credit_report",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The dead-letter reason a deliberately malformed line is built to trigger.
/// `--bad N` cycles through [`BadReason::CYCLE`] in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadReason {
    BadJson,
    UnknownEventType,
    MissingField,
    WrongType,
    UnknownField,
    InvalidValue,
    MissingEntity,
    UnsupportedSchemaVersion,
}

impl BadReason {
    pub const CYCLE: [BadReason; 8] = [
        BadReason::BadJson,
        BadReason::UnknownEventType,
        BadReason::MissingField,
        BadReason::WrongType,
        BadReason::UnknownField,
        BadReason::InvalidValue,
        BadReason::MissingEntity,
        BadReason::UnsupportedSchemaVersion,
    ];

    /// The dead-letter reason code of the event contract.
    pub fn as_str(self) -> &'static str {
        match self {
            BadReason::BadJson => "bad_json",
            BadReason::UnknownEventType => "unknown_event_type",
            BadReason::MissingField => "missing_field",
            BadReason::WrongType => "wrong_type",
            BadReason::UnknownField => "unknown_field",
            BadReason::InvalidValue => "invalid_value",
            BadReason::MissingEntity => "missing_entity",
            BadReason::UnsupportedSchemaVersion => "unsupported_schema_version",
        }
    }
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one output line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// A valid event of this type.
    Event(EventType),
    /// A deliberately malformed line that must be dead-lettered for this reason.
    Malformed(BadReason),
}

/// Metadata of one generated line, returned alongside its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineMeta {
    pub kind: LineKind,
    /// The line's event time (a malformed line carries its predecessor's time).
    pub time_ms: i64,
    /// For valid events, the sequence number behind the event id (`ev-{seq:09}`).
    pub event_seq: Option<u64>,
    /// For loan applications, the training label (defaulted within 90 days).
    /// It goes to the labels file, never into the event.
    pub bad: Option<bool>,
}

impl LineMeta {
    /// The event id of a valid event.
    pub fn event_id(&self) -> Option<String> {
        self.event_seq.map(event_id)
    }
}

/// The event id of the `seq`-th valid event (1-based): `ev-000000123`.
pub fn event_id(seq: u64) -> String {
    format!("ev-{seq:09}")
}

/// A device id shared by many users who each apply within a day.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeviceFarm {
    pub device_id: String,
    pub users: Vec<String>,
    pub first_application: String,
    pub last_application: String,
}

/// A user whose (own) device reports as an emulator or rooted, and who applies.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TaintedDevice {
    pub user_id: String,
    pub device_id: String,
    pub is_emulator: bool,
    pub is_rooted: bool,
}

/// A burst of failed password logins on one account.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StuffingBurst {
    pub user_id: String,
    pub attacker_device_id: String,
    pub failures: u32,
    pub first_failure: String,
    pub last_failure: String,
    /// The burst ends in a successful login, a phone and bank-card change and
    /// a loan application from the attacker's device (account takeover).
    pub takeover: bool,
}

/// A borrower whose credit reports show many recent applications elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MultiLender {
    pub user_id: String,
    /// `applications_last_30d` of each of the user's credit reports.
    pub applications_last_30d: Vec<u32>,
}

/// An IPv4 /24 used by a ring of users who all register and apply from it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IpRing {
    pub cidr: String,
    pub users: Vec<String>,
}

/// A phone or bank-card change shortly before a loan application.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ContactSwitch {
    pub user_id: String,
    pub field: String,
    pub changed_at: String,
    pub applied_at: String,
}

/// Ground truth of the injected fraud patterns (only what falls in the window).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FraudManifest {
    pub device_farms: Vec<DeviceFarm>,
    pub emulator_or_rooted: Vec<TaintedDevice>,
    pub credential_stuffing: Vec<StuffingBurst>,
    pub multi_lending: Vec<MultiLender>,
    pub ip_rings: Vec<IpRing>,
    pub contact_change_before_apply: Vec<ContactSwitch>,
}

/// What a generation run produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GenStats {
    /// Valid events written.
    pub events: u64,
    /// Malformed lines written.
    pub malformed: u64,
    pub by_type: BTreeMap<EventType, u64>,
    pub malformed_by_reason: BTreeMap<BadReason, u64>,
    /// Loan applications written (= label rows).
    pub applications: u64,
    /// Applications labelled bad.
    pub bad_applications: u64,
    pub first_event_time: Option<String>,
    pub last_event_time: Option<String>,
    pub fraud: FraudManifest,
}

impl GenStats {
    /// Share of applications labelled bad.
    pub fn bad_rate(&self) -> f64 {
        if self.applications == 0 {
            0.0
        } else {
            self.bad_applications as f64 / self.applications as f64
        }
    }
}

impl fmt::Display for GenStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} events, {} malformed lines", self.events, self.malformed)?;
        if let (Some(a), Some(b)) = (&self.first_event_time, &self.last_event_time) {
            write!(f, " from {a} to {b}")?;
        }
        writeln!(f)?;
        for (t, n) in &self.by_type {
            writeln!(f, "  {t:<17} {n}")?;
        }
        writeln!(
            f,
            "{} applications, {} labelled bad ({:.1}%)",
            self.applications,
            self.bad_applications,
            100.0 * self.bad_rate()
        )?;
        let m = &self.fraud;
        write!(
            f,
            "fraud: {} device farm(s), {} emulator/rooted users, {} stuffing bursts, \
             {} multi-lenders, {} IP ring(s), {} contact switches before applying",
            m.device_farms.len(),
            m.emulator_or_rooted.len(),
            m.credential_stuffing.len(),
            m.multi_lending.len(),
            m.ip_rings.len(),
            m.contact_change_before_apply.len()
        )
    }
}
