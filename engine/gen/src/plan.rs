//! Planning: who the users are, which fraud role each plays, and every
//! *structural* event of each user (registration, the sessions around an
//! application, credit reports, contact changes, login bursts, repayments and
//! overdue notices) together with each application's label.
//!
//! Everything that carries meaning is planned up front, user by user, from
//! one seeded stream: the plan is small (a dozen entries per user) and knowing
//! the structural count lets the background traffic (routine logins and device
//! reports) be sized so the stream hits `--events` exactly. Background events
//! are not planned: each user draws them lazily as a sorted sequence (see
//! [`Background`]), so a benchmark stream of millions of events never sits in
//! memory.
//!
//! Labels are drawn here, from a logistic function of the risk factors the
//! application was planned with, and the label decides the loan's future:
//! a good loan is repaid (sometimes a few days late), a bad one misses one of
//! its first installments and collects overdue notices.

use crate::clock::TimeFmt;
use crate::clock::{Diurnal, DAY_MS, HOUR_MS, MIN_MS, SEC_MS};
use crate::model::{ContactSwitch, DeviceFarm, FraudManifest, IpRing, MultiLender, StuffingBurst, TaintedDevice};
use crate::rng::{mix64, Rng};
use crate::text::{device_id, user_id, Ip};
use crate::GenConfig;

pub(crate) const OS_NAMES: [&str; 3] = ["android", "ios", "other"];
const ANDROID_VERSIONS: [&str; 6] = ["10", "11", "12", "13", "14", "15"];
const IOS_VERSIONS: [&str; 5] = ["15.8", "16.7", "17.5", "18.1", "18.3"];
const OTHER_VERSIONS: [&str; 2] = ["harmony-4.0", "kaios-3.1"];
const APP_VERSIONS: [&str; 4] = ["5.1.0", "5.2.3", "5.3.1", "5.4.0"];
pub(crate) const CHANNELS: [&str; 4] = ["app", "h5", "web", "partner"];
pub(crate) const METHODS: [&str; 3] = ["password", "sms", "biometric"];
/// Indexed by `Act::Login::failure`; 0 means success.
pub(crate) const FAILURES: [&str; 4] = ["", "bad_password", "sms_code_expired", "biometric_mismatch"];
pub(crate) const PURPOSES: [&str; 7] = ["consumption", "education", "medical", "business", "home", "travel", "other"];
const PURPOSE_WEIGHTS: [u32; 7] = [40, 8, 8, 14, 10, 8, 12];
const TERMS: [u16; 5] = [3, 6, 12, 24, 36];
const TERM_WEIGHTS: [u32; 5] = [10, 20, 35, 25, 10];
/// Number of region codes R01..R34.
const REGIONS: u64 = 34;

/// Installments fall due every 14 days after the application (a bi-weekly
/// schedule, `term_months * 2` installments), so that a 30-day sample already
/// shows repayments and overdue notices.
pub(crate) const INSTALLMENT_PERIOD_MS: i64 = 14 * DAY_MS;

/// Intercept of the label's logit; with the coefficients in
/// [`Planner::draw_label`] it gives a bad rate of about 11% with the default
/// 400 users (whose fraud cast is large by its floors) and about 9% at scale.
const LABEL_INTERCEPT: f64 = -5.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContactField {
    Phone,
    BankCard,
    Address,
    Email,
    EmergencyContact,
}

impl ContactField {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ContactField::Phone => "phone",
            ContactField::BankCard => "bank_card",
            ContactField::Address => "address",
            ContactField::Email => "email",
            ContactField::EmergencyContact => "emergency_contact",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub id: u64,
    pub os: u8,
    pub os_version: &'static str,
    pub app_version: &'static str,
    pub emulator: bool,
    pub rooted: bool,
}

/// One planned event; the user is implied by whose plan it is in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Act {
    Register { dev: u32, ip: Ip },
    DeviceReport { dev: u32, ip: Ip },
    Login { dev: u32, ip: Ip, method: u8, failure: u8 },
    CreditReport { active_loans: u8, apps_30d: u8, max_overdue_days: u16, outstanding_cents: u64 },
    Apply { app: u32 },
    Repay { app: u32, installment: u16, days_late: u16, amount_cents: u64 },
    Overdue { app: u32, days: u16, amount_due_cents: u64 },
    ContactChange { field: ContactField, dev: u32, ip: Ip, new_value: u64 },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Planned {
    pub t: i64,
    pub act: Act,
}

#[derive(Clone, Debug)]
pub(crate) struct Application {
    pub dev: u32,
    pub ip: Ip,
    pub amount_cents: u64,
    pub term_months: u16,
    pub interest_only: bool,
    pub purpose: u8,
    pub stated_income_cents: u64,
    pub stated_region: Option<u8>,
    pub rate_bp: Option<u32>,
    pub fees_cents: Option<u64>,
    pub bad: bool,
}

/// A user's routine traffic: `remaining` events spread uniformly in activity
/// time over `[pos, end)`, drawn in order one at a time (the minimum of k
/// uniforms is `pos + (end - pos) * (1 - V^(1/k))`).
#[derive(Clone, Debug)]
pub(crate) struct Background {
    pub remaining: u64,
    pub pos: f64,
    pub end: f64,
    /// Time of the next background event, `i64::MAX` when there is none.
    pub next: i64,
}

impl Background {
    pub(crate) fn advance(&mut self, rng: &mut Rng, di: &Diurnal, t1: i64) {
        if self.remaining == 0 {
            self.next = i64::MAX;
            return;
        }
        let v = 1.0 - rng.f64();
        self.pos += (self.end - self.pos) * (1.0 - v.powf(1.0 / self.remaining as f64));
        self.remaining -= 1;
        self.next = di.to_ms(self.pos).min(t1 - 1);
    }
}

pub(crate) struct User {
    /// Structural events, latest first: `pop()` yields the next one.
    pub plan: Vec<Planned>,
    pub bg: Background,
    /// This user's own stream for background details (independent of others).
    pub rng: Rng,
    /// The user's devices, primary first.
    pub devices: Vec<u32>,
    pub home_ip: Ip,
    pub mobile_ip: Ip,
    /// Current sensitive values (contact changes replace them as they play).
    pub phone: u64,
    pub id_number: u64,
    pub bank_card: u64,
    pub channel: u8,
    pub region: Option<u8>,
    reg_ms: i64,
    income_cents: u64,
    bg_weight: f64,
}

impl User {
    pub(crate) fn next_time(&self) -> i64 {
        let p = self.plan.last().map_or(i64::MAX, |p| p.t);
        p.min(self.bg.next)
    }
}

/// Everything the stream needs.
pub(crate) struct World {
    pub t0: i64,
    pub t1: i64,
    pub diurnal: Diurnal,
    pub users: Vec<User>,
    pub devices: Vec<Device>,
    pub apps: Vec<Application>,
    pub manifest: FraudManifest,
    /// Valid events the stream will produce.
    pub total_events: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Normal,
    Victim { takeover: bool },
    Farm { group: u32, rank: u32 },
    Ring { group: u32, rank: u32 },
    Emulator { emulator: bool },
    MultiLender,
    ContactSwitch,
}

#[derive(Clone, Copy, Debug, Default)]
struct Credit {
    active_loans: u8,
    apps_30d: u8,
    max_overdue_days: u16,
    outstanding_cents: u64,
}

/// Risk factors of one application, inputs of its label.
#[derive(Clone, Copy, Debug, Default)]
struct Risk {
    farm: bool,
    emulator: bool,
    rooted: bool,
    ring: bool,
    takeover: bool,
    contact_switch: bool,
    /// Amount drawn as a large multiple of income (fraudsters borrow big).
    big_amount: bool,
    /// Stated income inflated by this factor.
    income_inflation: f64,
}

struct FarmGroup {
    device: u32,
    start_ms: i64,
    ips: [Ip; 3],
    applications: Vec<(u32, i64)>,
}

struct RingGroup {
    prefix: u32,
    start_act: f64,
    applications: Vec<(u32, i64)>,
}

struct Planner {
    rng: Rng,
    di: Diurnal,
    t0: i64,
    t1: i64,
    a0: f64,
    a1: f64,
    salt: u64,
    devices: Vec<Device>,
    apps: Vec<Application>,
    /// Next identity index for a changed phone or card (users take 0..n).
    next_contact: u64,
    /// Primary devices of ordinary users, some shared with family members.
    family: Vec<u32>,
    farms: Vec<FarmGroup>,
    rings: Vec<RingGroup>,
    manifest: FraudManifest,
}

/// `k -> (k * mult + salt) mod modulus`, a bijection on `0..modulus` when
/// `mult` is coprime with it: distinct indices give distinct identifiers.
fn scramble(k: u64, modulus: u64, mult: u64, salt: u64) -> u64 {
    ((u128::from(k) * u128::from(mult) + u128::from(salt % modulus)) % u128::from(modulus)) as u64
}

pub(crate) fn plan(cfg: &GenConfig) -> World {
    let di = Diurnal::new();
    let t0 = cfg.start_ms;
    let t1 = t0 + i64::from(cfg.days) * DAY_MS;
    let mut p = Planner {
        rng: Rng::new(cfg.seed),
        a0: di.to_act(t0),
        a1: di.to_act(t1),
        di,
        t0,
        t1,
        salt: mix64(cfg.seed ^ 0x1D5),
        devices: Vec::new(),
        apps: Vec::new(),
        next_contact: u64::from(cfg.users),
        family: Vec::new(),
        farms: Vec::new(),
        rings: Vec::new(),
        manifest: FraudManifest::default(),
    };
    let roles = p.assign_roles(cfg.users);
    let mut users = Vec::with_capacity(roles.len());
    for (idx, role) in roles.iter().enumerate() {
        let mut u = p.plan_user(idx as u32, *role);
        u.rng = Rng::derive(cfg.seed, idx as u64);
        users.push(u);
    }
    p.finish_manifest();
    let structural: u64 = users.iter().map(|u| u.plan.len() as u64).sum();
    p.allocate_background(&mut users, cfg.events.saturating_sub(structural));
    let background: u64 = users.iter().map(|u| u.bg.remaining).sum();
    for u in &mut users {
        u.bg.advance(&mut u.rng, &p.di, t1);
    }
    World {
        t0,
        t1,
        diurnal: p.di,
        users,
        devices: p.devices,
        apps: p.apps,
        manifest: p.manifest,
        total_events: structural + background,
    }
}

impl Planner {
    /// Picks the fraud cast. Sizes scale with the population, with floors so
    /// that even the small default sample shows every pattern clearly.
    fn assign_roles(&mut self, users: u32) -> Vec<Role> {
        let n = users as usize;
        let mut roles = vec![Role::Normal; n];
        let mut order: Vec<u32> = (0..users).collect();
        self.rng.shuffle(&mut order);
        let mut cursor = 0usize;
        let mut take = |k: usize| {
            let end = (cursor + k).min(n);
            let s = order[cursor..end].to_vec();
            cursor = end;
            s
        };

        let n_farms = (n / 1000).max(1);
        for g in 0..n_farms {
            let size = 9 + self.rng.below(5) as usize;
            if n < 4 * size {
                break;
            }
            let members = take(size);
            for (rank, &u) in members.iter().enumerate() {
                roles[u as usize] = Role::Farm { group: g as u32, rank: rank as u32 };
            }
            let device = self.new_device(Some(0), false, false);
            let start_act = self.a0 + (self.a1 - self.a0) * self.rng.uniform(0.1, 0.6);
            let ips = [self.home_ip(), self.home_ip(), self.home_ip()];
            let start_ms = self.di.to_ms(start_act).max(self.t0);
            self.farms.push(FarmGroup { device, start_ms, ips, applications: Vec::new() });
        }
        // Ring /24s live in 10.66.0.0/16 and up, away from everyone else's
        // addresses; 97 is odd, so g * 97 mod 256 never repeats within a /16.
        let n_rings = (n / 1000).clamp(1, 256 * 30);
        let ring_salt = self.rng.below(256);
        for g in 0..n_rings {
            let size = 7 + self.rng.below(3) as usize;
            if n < 6 * size {
                break;
            }
            for (rank, &u) in take(size).iter().enumerate() {
                roles[u as usize] = Role::Ring { group: g as u32, rank: rank as u32 };
            }
            let third = (g as u64 * 97 + ring_salt) % 256;
            let prefix = (10 << 24) | ((66 + (g / 256) as u32) << 16) | ((third as u32) << 8);
            let start_act = self.a0 + (self.a1 - self.a0) * self.rng.uniform(0.15, 0.7);
            self.rings.push(RingGroup { prefix, start_act, applications: Vec::new() });
        }
        let floor = |min: usize, share: usize| {
            if n >= 60 {
                (n / share).max(min)
            } else {
                n / 20
            }
        };
        for (i, u) in take(floor(6, 50)).into_iter().enumerate() {
            roles[u as usize] = Role::Emulator { emulator: i % 2 == 0 };
        }
        for u in take(floor(8, 33)) {
            roles[u as usize] = Role::MultiLender;
        }
        for u in take(floor(6, 50)) {
            roles[u as usize] = Role::ContactSwitch;
        }
        for (i, u) in take(floor(4, 80)).into_iter().enumerate() {
            roles[u as usize] = Role::Victim { takeover: i % 2 == 0 };
        }
        roles
    }

    fn new_device(&mut self, os: Option<u8>, emulator: bool, rooted: bool) -> u32 {
        let idx = self.devices.len() as u64;
        let os = os.unwrap_or_else(|| self.rng.weighted(&[68, 30, 2]) as u8);
        let os_version = match os {
            0 => ANDROID_VERSIONS[self.rng.weighted(&[5, 10, 15, 20, 30, 20])],
            1 => IOS_VERSIONS[self.rng.weighted(&[5, 10, 25, 35, 25])],
            _ => OTHER_VERSIONS[self.rng.below(2) as usize],
        };
        let app_version = APP_VERSIONS[self.rng.weighted(&[10, 20, 35, 35])];
        // A few honest Android users root their phones: noise for the signal.
        let rooted = rooted || (os == 0 && self.rng.chance(0.01));
        // mix64 is a bijection, so device ids are unique.
        let id = mix64(idx ^ self.salt);
        self.devices.push(Device { id, os, os_version, app_version, emulator, rooted });
        idx as u32
    }

    /// Ordinary addresses: 10.100.0.0 to 10.199.255.254 (attackers use
    /// 10.13.0.0/16, rings 10.66.0.0/16 and up, the carrier NAT 10.200.0.0/22).
    fn home_ip(&mut self) -> Ip {
        let b = self.rng.range(100, 199) as u32;
        let c = self.rng.below(256) as u32;
        let d = self.rng.range(1, 254) as u32;
        Ip::V4((10 << 24) | (b << 16) | (c << 8) | d)
    }

    /// Mobile traffic: some behind a carrier NAT (10.200.0.0/22, shared by
    /// many users), some IPv6, the rest private addresses of their own.
    fn mobile_ip(&mut self) -> Ip {
        let r = self.rng.f64();
        if r < 0.12 {
            let c = self.rng.below(4) as u32;
            let d = self.rng.range(1, 254) as u32;
            Ip::V4((10 << 24) | (200 << 16) | (c << 8) | d)
        } else if r < 0.20 {
            Ip::V6(self.rng.next_u64() & 0xFFFF_FFFF_FFFF)
        } else {
            self.home_ip()
        }
    }

    fn attacker_ip(&mut self) -> Ip {
        let c = self.rng.below(256) as u32;
        let d = self.rng.range(1, 254) as u32;
        Ip::V4((10 << 24) | (13 << 16) | (c << 8) | d)
    }

    fn phone_of(&self, k: u64) -> u64 {
        scramble(k, 10_000_000_000, 7_654_321_987, self.salt)
    }
    fn id_number_of(&self, k: u64) -> u64 {
        scramble(k, 10_000_000_000_000_000, 3_141_592_653_589_793, self.salt >> 7)
    }
    fn card_of(&self, k: u64) -> u64 {
        scramble(k, 1_000_000_000_000, 271_828_182_847, self.salt >> 13)
    }

    fn ms(&self, act: f64) -> i64 {
        self.di.to_ms(act)
    }

    /// Wall-clock time a uniform `lo..hi` days of activity after `act`.
    fn ms_after(&mut self, act: f64, lo: f64, hi: f64) -> i64 {
        let d = self.rng.uniform(lo, hi);
        self.di.to_ms(act + d)
    }

    /// A uniform offset between `lo` and `hi` seconds, with milliseconds.
    fn secs(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.range((lo * SEC_MS) as u64, (hi * SEC_MS) as u64) as i64
    }

    fn mins(&mut self, lo: i64, hi: i64) -> i64 {
        self.secs(lo * 60, hi * 60)
    }

    fn plan_user(&mut self, idx: u32, role: Role) -> User {
        let k = u64::from(idx);
        let income_cents =
            ((self.rng.lognormal(6000f64.ln(), 0.55).clamp(800.0, 80_000.0) / 10.0).round() * 1000.0) as u64;
        let channel = match role {
            Role::Farm { .. } => [1u8, 3][self.rng.below(2) as usize],
            Role::Ring { .. } => 2,
            _ => self.rng.weighted(&[60, 15, 15, 10]) as u8,
        };
        let region = self.rng.chance(0.85).then(|| self.region());
        let mut u = User {
            plan: Vec::with_capacity(16),
            bg: Background { remaining: 0, pos: 0.0, end: 0.0, next: i64::MAX },
            rng: Rng::new(0),
            devices: Vec::new(),
            home_ip: Ip::V4(0),
            mobile_ip: Ip::V4(0),
            phone: self.phone_of(k),
            id_number: self.id_number_of(k),
            bank_card: self.card_of(k),
            channel,
            region,
            reg_ms: 0,
            income_cents,
            bg_weight: 1.0,
        };
        match role {
            Role::Farm { group, rank } => self.plan_farm(&mut u, idx, group, rank),
            Role::Ring { group, rank } => self.plan_ring(&mut u, idx, group, rank),
            Role::Emulator { emulator } => self.plan_emulator(&mut u, idx, emulator),
            Role::MultiLender => self.plan_multi(&mut u, idx),
            Role::ContactSwitch => self.plan_switch(&mut u, idx),
            Role::Normal => self.plan_normal(&mut u, idx, None),
            Role::Victim { takeover } => self.plan_normal(&mut u, idx, Some(takeover)),
        }
        let t1 = self.t1;
        u.plan.retain(|p| p.t < t1);
        // Stable sort keeps planning order among equal times; reversed so
        // that pop() yields the earliest.
        u.plan.sort_by_key(|p| p.t);
        u.plan.reverse();
        u
    }

    fn region(&mut self) -> u8 {
        // Skewed: low region codes are the big cities.
        let r = (self.rng.f64().powf(1.8) * REGIONS as f64) as u8;
        r + 1
    }

    fn ordinary_devices(&mut self, u: &mut User) {
        u.devices.push(self.new_device(None, false, false));
        if self.rng.chance(0.15) {
            u.devices.push(self.new_device(None, false, false));
            if self.rng.chance(0.2) {
                u.devices.push(self.new_device(None, false, false));
            }
        }
        // Families share a phone now and then.
        if !self.family.is_empty() && self.rng.chance(0.03) {
            let d = self.family[self.rng.below(self.family.len() as u64) as usize];
            u.devices.push(d);
        } else {
            self.family.push(u.devices[0]);
        }
        u.home_ip = self.home_ip();
        u.mobile_ip = self.mobile_ip();
    }

    fn some_ip(&mut self, u: &User) -> Ip {
        if self.rng.chance(0.6) {
            u.home_ip
        } else {
            u.mobile_ip
        }
    }

    fn some_device(&mut self, u: &User) -> u32 {
        if u.devices.len() == 1 || self.rng.chance(0.85) {
            u.devices[0]
        } else {
            u.devices[self.rng.below(u.devices.len() as u64) as usize]
        }
    }

    fn push(u: &mut User, t: i64, act: Act) {
        u.plan.push(Planned { t, act });
    }

    /// Registration, the first device report and the first login.
    fn register(&mut self, u: &mut User, t: i64) {
        let t = t.max(self.t0);
        u.reg_ms = t;
        let dev = u.devices[0];
        let ip = self.some_ip(u);
        Self::push(u, t, Act::Register { dev, ip });
        let t2 = t + self.secs(2, 20);
        Self::push(u, t2, Act::DeviceReport { dev, ip });
        let t3 = t2 + self.secs(20, 100);
        let method = self.rng.below(2) as u8;
        Self::push(u, t3, Act::Login { dev, ip, method, failure: 0 });
    }

    fn normal_credit(&mut self) -> Credit {
        let active_loans = self.rng.weighted(&[45, 30, 15, 7, 3]) as u8;
        Credit {
            active_loans,
            apps_30d: self.rng.weighted(&[50, 28, 12, 6, 4]) as u8,
            max_overdue_days: if self.rng.chance(0.85) { 0 } else { self.rng.range(1, 60) as u16 },
            outstanding_cents: u64::from(active_loans) * self.rng.range(2_000, 30_000) * 100,
        }
    }

    fn multi_credit(&mut self) -> Credit {
        let active_loans = self.rng.range(3, 9) as u8;
        Credit {
            active_loans,
            apps_30d: self.rng.range(6, 20) as u8,
            max_overdue_days: if self.rng.chance(0.5) { 0 } else { self.rng.range(1, 30) as u16 },
            outstanding_cents: u64::from(active_loans) * self.rng.range(5_000, 25_000) * 100,
        }
    }

    /// A thin file: a new identity with no history.
    fn fresh_credit(&mut self) -> Credit {
        Credit { apps_30d: self.rng.below(2) as u8, ..Credit::default() }
    }

    /// Plans a loan application at `t` (with the login and credit report
    /// before it and the repayments or overdue notices after it) and returns
    /// its label.
    #[allow(clippy::too_many_arguments)]
    fn apply(&mut self, u: &mut User, t: i64, dev: u32, ip: Ip, credit: Credit, risk: Risk, pre_login: bool) -> bool {
        let floor = u.reg_ms + SEC_MS;
        if pre_login {
            let tl = (t - self.mins(2, 15)).max(floor);
            let method = self.rng.weighted(&[50, 30, 20]) as u8;
            Self::push(u, tl, Act::Login { dev, ip, method, failure: 0 });
            if self.rng.chance(0.5) {
                let td = tl + self.secs(3, 10);
                Self::push(u, td, Act::DeviceReport { dev, ip });
            }
        }
        let tc = (t - self.secs(5, 120)).max(floor);
        Self::push(
            u,
            tc,
            Act::CreditReport {
                active_loans: credit.active_loans,
                apps_30d: credit.apps_30d,
                max_overdue_days: credit.max_overdue_days,
                outstanding_cents: credit.outstanding_cents,
            },
        );

        let ratio = if risk.big_amount { self.rng.uniform(2.5, 8.0) } else { self.rng.uniform(0.4, 4.0) };
        let amount_cents = (((u.income_cents as f64 * ratio) / 10_000.0).round() as u64).max(5) * 10_000;
        let stated_income_cents =
            ((u.income_cents as f64 * risk.income_inflation.max(1.0)) / 1000.0).round() as u64 * 1000;
        let term_months = TERMS[self.rng.weighted(&TERM_WEIGHTS)];
        let interest_only = self.rng.chance(0.15);
        let purpose = self.rng.weighted(&PURPOSE_WEIGHTS) as u8;
        let rate_bp = self.rng.range(80, 360) as u32 * 10;
        let shown_rate = self.rng.chance(0.85).then_some(rate_bp);
        let fees_cents =
            self.rng.chance(0.5).then(|| (amount_cents as f64 * self.rng.uniform(0.005, 0.03)).round() as u64);
        let stated_region = if self.rng.chance(0.7) { u.region } else { None };
        let bad = self.draw_label(amount_cents, stated_income_cents, &credit, &risk);

        let app = self.apps.len() as u32;
        self.apps.push(Application {
            dev,
            ip,
            amount_cents,
            term_months,
            interest_only,
            purpose,
            stated_income_cents,
            stated_region,
            rate_bp: shown_rate,
            fees_cents,
            bad,
        });
        Self::push(u, t, Act::Apply { app });
        self.schedule_loan(u, app, t, amount_cents, rate_bp, term_months, interest_only, bad);
        bad
    }

    /// The label: Bernoulli of a logistic function of the risk factors.
    fn draw_label(&mut self, amount_cents: u64, income_cents: u64, c: &Credit, r: &Risk) -> bool {
        let ratio = amount_cents as f64 / (income_cents.max(100_000) as f64);
        let flag = |b: bool, w: f64| if b { w } else { 0.0 };
        let z = LABEL_INTERCEPT
            + 0.85 * ratio.ln()
            + 0.14 * f64::from(c.apps_30d)
            + 0.22 * f64::from(c.active_loans)
            + 0.025 * f64::from(c.max_overdue_days.min(60))
            + flag(r.farm, 3.4)
            + flag(r.emulator, 2.8)
            + flag(r.rooted && !r.emulator, 2.2)
            + flag(r.ring, 3.2)
            + flag(r.contact_switch, 2.2)
            + flag(r.takeover, 3.6);
        let p = 1.0 / (1.0 + (-z).exp());
        self.rng.chance(p)
    }

    #[allow(clippy::too_many_arguments)]
    fn schedule_loan(
        &mut self,
        u: &mut User,
        app: u32,
        t_app: i64,
        principal_cents: u64,
        rate_bp: u32,
        term_months: u16,
        interest_only: bool,
        bad: bool,
    ) {
        let n = u32::from(term_months) * 2;
        let r = f64::from(rate_bp) / 10_000.0 / 26.0;
        let p = principal_cents as f64;
        let regular = if interest_only { p * r } else { p * r / (1.0 - (1.0 + r).powi(-(n as i32))) };
        let regular = (regular.round() as u64).max(1);
        let last = if interest_only { (p * (1.0 + r)).round() as u64 } else { regular };
        let default_at = if bad {
            if self.rng.chance(0.7) {
                1
            } else {
                2
            }
        } else {
            u32::MAX
        };
        for k in 1..=n {
            let due = t_app + i64::from(k) * INSTALLMENT_PERIOD_MS;
            if due - 3 * DAY_MS >= self.t1 {
                break;
            }
            let amount = if k == n { last } else { regular };
            if k == default_at {
                for days in [1u16, 3, 7, 15, 30, 60, 90] {
                    let t = due + i64::from(days) * DAY_MS + self.mins(8 * 60, 12 * 60);
                    let amount_due = (amount as f64 * (1.0 + 0.002 * f64::from(days))).round() as u64;
                    Self::push(u, t, Act::Overdue { app, days, amount_due_cents: amount_due });
                }
                break;
            }
            let roll = self.rng.f64();
            if roll < 0.82 {
                let t = (due - self.mins(0, 3 * 24 * 60)).max(t_app + HOUR_MS);
                Self::push(u, t, Act::Repay { app, installment: k as u16, days_late: 0, amount_cents: amount });
            } else if roll < 0.90 {
                let t = due - self.mins(0, 6 * 60);
                Self::push(u, t, Act::Repay { app, installment: k as u16, days_late: 0, amount_cents: amount });
            } else {
                let late = self.rng.range(1, 6) as u16;
                if late >= 2 {
                    let t = due + DAY_MS + self.mins(8 * 60, 12 * 60);
                    Self::push(u, t, Act::Overdue { app, days: 1, amount_due_cents: amount });
                }
                let t = due + i64::from(late) * DAY_MS + self.mins(0, 10 * 60);
                Self::push(u, t, Act::Repay { app, installment: k as u16, days_late: late, amount_cents: amount });
            }
        }
    }

    fn contact_change(&mut self, u: &mut User, t: i64, field: ContactField, dev: u32, ip: Ip) {
        let new_value = match field {
            ContactField::Phone => {
                self.next_contact += 1;
                self.phone_of(self.next_contact)
            }
            ContactField::BankCard => {
                self.next_contact += 1;
                self.card_of(self.next_contact)
            }
            _ => 0,
        };
        Self::push(u, t, Act::ContactChange { field, dev, ip, new_value });
    }

    fn plan_normal(&mut self, u: &mut User, idx: u32, victim: Option<bool>) {
        self.ordinary_devices(u);
        let span = self.a1 - self.a0;
        let reg_act = match victim {
            Some(_) => self.a0 + span * 0.5 * self.rng.f64().powf(1.5),
            None => self.a0 + span * 0.85 * self.rng.f64().powf(1.4),
        };
        let reg = self.ms(reg_act);
        self.register(u, reg);
        let credit = self.normal_credit();
        u.bg_weight = self.rng.lognormal(0.0, 0.8);
        if self.rng.chance(0.5) {
            let app_act = reg_act + 0.01 + self.rng.exp(2.5);
            let (dev, ip) = (self.some_device(u), self.some_ip(u));
            let t = self.ms(app_act);
            self.apply(u, t, dev, ip, credit, Risk::default(), true);
            if self.rng.chance(0.12) {
                let again = app_act + self.rng.uniform(4.0, 15.0);
                let t = self.ms(again);
                let credit = Credit { apps_30d: credit.apps_30d + 1, active_loans: credit.active_loans + 1, ..credit };
                self.apply(u, t, dev, ip, credit, Risk::default(), true);
            }
        }
        if self.rng.chance(0.06) {
            let field = [ContactField::Address, ContactField::Email, ContactField::EmergencyContact]
                [self.rng.weighted(&[45, 35, 20])];
            let t = self.ms_after(reg_act, 0.2, 20.0);
            let (dev, ip) = (self.some_device(u), self.some_ip(u));
            self.contact_change(u, t, field, dev, ip);
        }
        if self.rng.chance(0.02) {
            let field = if self.rng.chance(0.5) { ContactField::Phone } else { ContactField::BankCard };
            let t = self.ms_after(reg_act, 0.5, 25.0);
            let (dev, ip) = (self.some_device(u), self.some_ip(u));
            self.contact_change(u, t, field, dev, ip);
        }
        if let Some(takeover) = victim {
            self.stuffing(u, idx, reg_act, takeover, credit);
        }
    }

    /// Credential stuffing: 5-14 failed password logins a few seconds apart
    /// from rotating attacker addresses; on a takeover the burst ends in a
    /// success, the phone and bank card are changed and a loan is applied for.
    fn stuffing(&mut self, u: &mut User, idx: u32, reg_act: f64, takeover: bool, credit: Credit) {
        let start = self.ms_after(reg_act, 0.5, 8.0);
        let attacker = self.new_device(Some(0), false, false);
        let failures = self.rng.range(5, 14) as u32;
        let mut t = start;
        let mut ip = self.attacker_ip();
        for i in 0..failures {
            if i > 0 {
                t += self.secs(3, 40);
                ip = self.attacker_ip();
            }
            Self::push(u, t, Act::Login { dev: attacker, ip, method: 0, failure: 1 });
        }
        if t < self.t1 {
            self.manifest.credential_stuffing.push(StuffingBurst {
                user_id: user_id(idx),
                attacker_device_id: device_id(self.devices[attacker as usize].id),
                failures,
                first_failure: TimeFmt::format(start),
                last_failure: TimeFmt::format(t),
                takeover,
            });
        }
        if !takeover {
            return;
        }
        let ts = t + self.secs(10, 60);
        Self::push(u, ts, Act::Login { dev: attacker, ip, method: 0, failure: 0 });
        let td = ts + self.secs(3, 8);
        Self::push(u, td, Act::DeviceReport { dev: attacker, ip });
        let tc = td + self.mins(5, 30);
        self.contact_change(u, tc, ContactField::Phone, attacker, ip);
        let tc2 = tc + self.mins(1, 5);
        self.contact_change(u, tc2, ContactField::BankCard, attacker, ip);
        let ta = tc2 + self.mins(20, 90);
        let risk = Risk { takeover: true, big_amount: true, income_inflation: 1.5, ..Risk::default() };
        self.apply(u, ta, attacker, ip, credit, risk, false);
        if ta < self.t1 {
            self.manifest.contact_change_before_apply.push(ContactSwitch {
                user_id: user_id(idx),
                field: "phone".into(),
                changed_at: TimeFmt::format(tc),
                applied_at: TimeFmt::format(ta),
            });
        }
    }

    fn plan_farm(&mut self, u: &mut User, idx: u32, group: u32, rank: u32) {
        let g = group as usize;
        let device = self.farms[g].device;
        u.devices.push(device);
        u.home_ip = self.farms[g].ips[(rank % 3) as usize];
        u.mobile_ip = u.home_ip;
        let reg = self.farms[g].start_ms + i64::from(rank) * 55 * MIN_MS + self.mins(0, 20);
        self.register(u, reg);
        let t = reg + self.mins(10, 40);
        let credit = self.fresh_credit();
        let risk =
            Risk { farm: true, big_amount: true, income_inflation: self.rng.uniform(1.5, 2.5), ..Risk::default() };
        self.apply(u, t, device, u.home_ip, credit, risk, true);
        self.farms[g].applications.push((idx, t));
        u.bg_weight = 0.1;
    }

    fn plan_ring(&mut self, u: &mut User, idx: u32, group: u32, rank: u32) {
        let g = group as usize;
        let prefix = self.rings[g].prefix;
        let host = |r: u32, k: u32| (r * 29 + k * 113) % 250 + 2;
        u.home_ip = Ip::V4(prefix | host(rank, 0));
        u.mobile_ip = Ip::V4(prefix | host(rank, 1));
        u.devices.push(self.new_device(None, false, false));
        let reg_act = self.rings[g].start_act + self.rng.uniform(0.0, 3.0);
        let reg = self.ms(reg_act);
        self.register(u, reg);
        let t = u.reg_ms + self.mins(60, 360);
        let credit =
            Credit { active_loans: self.rng.below(3) as u8, apps_30d: self.rng.range(1, 4) as u8, ..Credit::default() };
        let risk = Risk { ring: true, big_amount: true, income_inflation: 1.8, ..Risk::default() };
        let dev = u.devices[0];
        self.apply(u, t, dev, u.home_ip, credit, risk, true);
        self.rings[g].applications.push((idx, t));
        u.bg_weight = 0.4;
    }

    fn plan_emulator(&mut self, u: &mut User, idx: u32, emulator: bool) {
        let rooted = !emulator || self.rng.chance(0.5);
        let dev = self.new_device(Some(0), emulator, rooted);
        u.devices.push(dev);
        u.home_ip = self.home_ip();
        u.mobile_ip = self.mobile_ip();
        let reg_act = self.a0 + (self.a1 - self.a0) * 0.85 * self.rng.f64().powf(1.2);
        let reg = self.ms(reg_act);
        self.register(u, reg);
        let t = self.ms_after(reg_act, 0.05, 2.0);
        let credit = self.normal_credit();
        let risk = Risk { emulator, rooted, big_amount: true, income_inflation: 1.4, ..Risk::default() };
        let ip = self.some_ip(u);
        self.apply(u, t, dev, ip, credit, risk, true);
        if t < self.t1 {
            self.manifest.emulator_or_rooted.push(TaintedDevice {
                user_id: user_id(idx),
                device_id: device_id(self.devices[dev as usize].id),
                is_emulator: emulator,
                is_rooted: rooted,
            });
        }
        u.bg_weight = 0.3;
    }

    fn plan_multi(&mut self, u: &mut User, idx: u32) {
        self.ordinary_devices(u);
        let reg_act = self.a0 + (self.a1 - self.a0) * 0.8 * self.rng.f64().powf(1.4);
        let reg = self.ms(reg_act);
        self.register(u, reg);
        let mut credit = self.multi_credit();
        let mut act = reg_act + 0.02 + self.rng.exp(1.5);
        let mut seen = Vec::new();
        for _ in 0..self.rng.range(1, 3) {
            let t = self.ms(act);
            let (dev, ip) = (self.some_device(u), self.some_ip(u));
            self.apply(u, t, dev, ip, credit, Risk::default(), true);
            if t < self.t1 {
                seen.push(u32::from(credit.apps_30d));
            }
            credit.apps_30d = credit.apps_30d.saturating_add(self.rng.range(1, 3) as u8);
            credit.active_loans = credit.active_loans.saturating_add(1);
            act += self.rng.uniform(1.0, 5.0);
        }
        if !seen.is_empty() {
            self.manifest.multi_lending.push(MultiLender { user_id: user_id(idx), applications_last_30d: seen });
        }
    }

    fn plan_switch(&mut self, u: &mut User, idx: u32) {
        self.ordinary_devices(u);
        let reg_act = self.a0 + (self.a1 - self.a0) * 0.7 * self.rng.f64().powf(1.3);
        let reg = self.ms(reg_act);
        self.register(u, reg);
        let field = if self.rng.chance(0.6) { ContactField::Phone } else { ContactField::BankCard };
        let tc = self.ms_after(reg_act, 0.5, 6.0);
        let dev = u.devices[0];
        let ip = u.mobile_ip;
        self.contact_change(u, tc, field, dev, ip);
        let ta = tc + self.mins(5, 120);
        let credit = self.normal_credit();
        let risk = Risk { contact_switch: true, income_inflation: 1.0, ..Risk::default() };
        self.apply(u, ta, dev, ip, credit, risk, true);
        if ta < self.t1 {
            self.manifest.contact_change_before_apply.push(ContactSwitch {
                user_id: user_id(idx),
                field: field.as_str().into(),
                changed_at: TimeFmt::format(tc),
                applied_at: TimeFmt::format(ta),
            });
        }
    }

    fn finish_manifest(&mut self) {
        let t1 = self.t1;
        for f in &self.farms {
            let apps: Vec<_> = f.applications.iter().filter(|(_, t)| *t < t1).collect();
            if apps.is_empty() {
                continue;
            }
            let first = apps.iter().map(|(_, t)| *t).min().unwrap_or(f.start_ms);
            let last = apps.iter().map(|(_, t)| *t).max().unwrap_or(f.start_ms);
            self.manifest.device_farms.push(DeviceFarm {
                device_id: device_id(self.devices[f.device as usize].id),
                users: apps.iter().map(|(u, _)| user_id(*u)).collect(),
                first_application: TimeFmt::format(first),
                last_application: TimeFmt::format(last),
            });
        }
        for r in &self.rings {
            let users: Vec<String> = r.applications.iter().filter(|(_, t)| *t < t1).map(|(u, _)| user_id(*u)).collect();
            if users.is_empty() {
                continue;
            }
            let p = r.prefix;
            let cidr = format!("{}.{}.{}.0/24", p >> 24, (p >> 16) & 0xFF, (p >> 8) & 0xFF);
            self.manifest.ip_rings.push(IpRing { cidr, users });
        }
    }

    /// Spreads `total` routine events over users in proportion to their
    /// activity weight times their time on the platform, with systematic
    /// rounding so the counts add up exactly.
    fn allocate_background(&mut self, users: &mut [User], total: u64) {
        let starts: Vec<f64> = users.iter().map(|u| self.di.to_act(u.reg_ms + 5 * MIN_MS)).collect();
        let weights: Vec<f64> = users
            .iter()
            .zip(&starts)
            .map(|(u, &s)| if u.plan.is_empty() { 0.0 } else { u.bg_weight * (self.a1 - s).max(0.0) })
            .collect();
        let sum: f64 = weights.iter().sum();
        if sum <= 0.0 {
            return;
        }
        let mut cum = 0.0;
        let mut given = 0u64;
        for ((u, w), s) in users.iter_mut().zip(&weights).zip(&starts) {
            cum += w;
            let upto = ((total as f64) * (cum / sum)).round() as u64;
            let k = upto.min(total).saturating_sub(given);
            given += k;
            u.bg = Background { remaining: k, pos: *s, end: self.a1, next: i64::MAX };
        }
        // Floating-point shortfall, if any, goes to the last active user.
        if let Some(i) = weights.iter().rposition(|&w| w > 0.0) {
            users[i].bg.remaining += total - given;
        }
    }
}
