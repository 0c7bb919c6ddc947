//! Feature state at scale: 30 features (every aggregation, sliding and
//! lifetime windows, six entity kinds) over about 1.3 million entities
//! (400,000 users, 100,000 devices, 144,000 addresses, 660,000 user+device
//! pairs). The state is first populated to steady state (30 events per
//! user, about 35 days of event time, so every window holds what it holds in
//! a long run); then the per-event update cost is timed event by event
//! (median, p99, p99.9), the resident memory the state takes per million
//! entities is reported, and a checkpoint's encoding is timed, whole and as
//! serve takes it between events. While populating, the updates during
//! which an entity table began or ended a growth phase are timed too (their
//! median and the slowest are reported): tables double as entities arrive,
//! and that must not stall an event. Last, an expiry wave (31 days later,
//! 1,000 users go on alone) empties the address table, which halves step
//! by step; the updates during which a halving phase began or ended are
//! timed the same way.
//!
//! `cargo bench -p riskd-benches --bench feature_state` (release build, one
//! core). Sizes: `RISKD_BENCH_USERS` (default 400000),
//! `RISKD_BENCH_EVENTS_PER_USER` (default 30).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use compact_str::CompactString;
use rand::{Rng, SeedableRng};
use riskd_core::event::{
    Entities, Event, EventKind, LoanApplication, Login, LoginMethod, Payload, Purpose, RepaymentMethod,
};
use riskd_features::{EntityKind, FeatureEngine, FeatureSet, FeatureVector};
// The allocator `riskd` uses.
use riskd_alloc as _;

const FEATURES: &str = r#"
[settings]
allowed_lateness = "5m"
lifetime_idle_expiry = "400d"

[[feature]]
name = "user.logins_10m"
entity = "user"
events = ["login"]
agg = "count"
window = "10m"
[[feature]]
name = "user.failed_logins_1h"
entity = "user"
events = ["login"]
where = { "event.success" = false }
agg = "count"
window = "1h"
[[feature]]
name = "user.logins_7d"
entity = "user"
events = ["login"]
agg = "count"
window = "7d"
[[feature]]
name = "user.applications_30d"
entity = "user"
events = ["loan_application"]
agg = "count"
window = "30d"
[[feature]]
name = "user.amount_30d"
entity = "user"
events = ["loan_application"]
agg = "sum"
of = "event.amount"
window = "30d"
[[feature]]
name = "user.max_amount_30d"
entity = "user"
events = ["loan_application"]
agg = "max"
of = "event.amount"
window = "30d"
[[feature]]
name = "user.mean_amount"
entity = "user"
events = ["loan_application"]
agg = "mean"
of = "event.amount"
window = "lifetime"
[[feature]]
name = "user.devices_24h"
entity = "user"
agg = "distinct_count"
of = "entity.device_id"
window = "24h"
[[feature]]
name = "user.ips_7d"
entity = "user"
agg = "distinct_count"
of = "entity.ip"
window = "7d"
[[feature]]
name = "user.secs_since_prev_login"
entity = "user"
events = ["login"]
agg = "time_since"
window = "lifetime"
[[feature]]
name = "user.days_since_prev_application"
entity = "user"
events = ["loan_application"]
agg = "time_since"
unit = "d"
window = "lifetime"
[[feature]]
name = "user.first_seen_days"
entity = "user"
agg = "first_seen"
unit = "d"
window = "lifetime"
[[feature]]
name = "user.last_term"
entity = "user"
events = ["loan_application"]
agg = "last"
of = "event.term_months"
window = "lifetime"
[[feature]]
name = "device.users_24h"
entity = "device"
agg = "distinct_count"
of = "entity.user_id"
window = "24h"
[[feature]]
name = "device.users_30d"
entity = "device"
agg = "distinct_count"
of = "entity.user_id"
window = "30d"
[[feature]]
name = "device.applications_1h"
entity = "device"
events = ["loan_application"]
agg = "count"
window = "1h"
[[feature]]
name = "device.logins_10m"
entity = "device"
events = ["login"]
agg = "count"
window = "10m"
[[feature]]
name = "device.failed_logins_1h"
entity = "device"
events = ["login"]
where = { "event.success" = false }
agg = "count"
window = "1h"
[[feature]]
name = "device.first_seen_days"
entity = "device"
agg = "first_seen"
unit = "d"
window = "lifetime"
[[feature]]
name = "device.amount_24h"
entity = "device"
events = ["loan_application"]
agg = "sum"
of = "event.amount"
window = "24h"
[[feature]]
name = "ip.users_1h"
entity = "ip"
agg = "distinct_count"
of = "entity.user_id"
window = "1h"
[[feature]]
name = "ip.events_10m"
entity = "ip"
agg = "count"
window = "10m"
[[feature]]
name = "ip.applications_24h"
entity = "ip"
events = ["loan_application"]
agg = "count"
window = "24h"
[[feature]]
name = "ip24.users_24h"
entity = "ip24"
agg = "distinct_count"
of = "entity.user_id"
window = "24h"
[[feature]]
name = "ip24.failed_logins_10m"
entity = "ip24"
events = ["login"]
where = { "event.success" = false }
agg = "count"
window = "10m"
[[feature]]
name = "ip24.applications_1h"
entity = "ip24"
events = ["loan_application"]
agg = "count"
window = "1h"
[[feature]]
name = "user_device.events_30d"
entity = "user+device"
agg = "count"
window = "30d"
[[feature]]
name = "user_device.first_seen_hours"
entity = "user+device"
agg = "first_seen"
unit = "h"
window = "lifetime"
[[feature]]
name = "event.amount_per_application"
entity = "event"
agg = "ratio"
numerator = "user.amount_30d"
denominator = "user.applications_30d"
[[feature]]
name = "event.device_share"
entity = "event"
agg = "ratio"
numerator = "device.users_24h"
denominator = "device.users_30d"
"#;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

struct Workload {
    rng: rand_chacha::ChaCha8Rng,
    users: u32,
    clock: i64,
    n: u64,
}

impl Workload {
    /// One event: users spread evenly, each with a home device and address
    /// (a few shared ones), 70% logins, 30% applications, ~10 events/s per
    /// million users (so each entity sees the same rate whatever the size).
    fn next(&mut self) -> Event {
        let r = &mut self.rng;
        self.clock += r.gen_range(0..200i64) * 1_000_000 / i64::from(self.users);
        self.n += 1;
        let user = r.gen_range(0..self.users);
        let device = if r.gen_bool(0.02) { r.gen_range(0..1000) } else { user / 4 };
        let ip = if r.gen_bool(0.05) { r.gen_range(0..2000u32) } else { user / 5 * 2 + r.gen_range(0..2) };
        let (kind, payload) = if r.gen_bool(0.7) {
            (
                EventKind::Login,
                Payload::Login(Login { success: r.gen_bool(0.9), method: LoginMethod::Password, failure_reason: None }),
            )
        } else {
            (
                EventKind::LoanApplication,
                Payload::LoanApplication(LoanApplication {
                    application_id: CompactString::from("a"),
                    amount: f64::from(r.gen_range(500..20_000u32)),
                    term_months: r.gen_range(3..36),
                    repayment_method: RepaymentMethod::EqualInstallment,
                    purpose: Purpose::Consumption,
                    stated_monthly_income: 4000.0,
                    stated_region: None,
                    annual_rate: None,
                    fees: None,
                }),
            )
        };
        Event {
            id: CompactString::from("e"),
            kind,
            time_ms: self.clock,
            entities: Entities {
                user_id: CompactString::from(format!("u{user:08}")),
                device_id: Some(CompactString::from(format!("d{device:08}"))),
                ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + ip))),
                phone: None,
                id_number: None,
                bank_card: None,
            },
            payload,
        }
    }
}

/// The updates during which an entity table began or ended a growth or
/// shrink phase (its slot count changed), timed: resizing is spread over
/// many events, and none of them should stall.
struct Resizes {
    slots: Vec<(EntityKind, usize)>,
    ns: Vec<u64>,
}

impl Resizes {
    fn new(engine: &FeatureEngine) -> Self {
        Resizes { slots: engine.slots_by_kind(), ns: Vec::new() }
    }

    /// Updates with `ev`, keeping the time if a table's slot count changed.
    fn update(&mut self, engine: &mut FeatureEngine, ev: &Event, fv: &mut FeatureVector) {
        let t = Instant::now();
        engine.update(ev, fv);
        let took = t.elapsed().as_nanos() as u64;
        if !engine.table_slots().eq(self.slots.iter().copied()) {
            self.ns.push(took);
            self.slots.clear();
            self.slots.extend(engine.table_slots());
        }
    }

    /// How many, and their median and slowest, in us.
    fn summary(mut self) -> (usize, f64, f64) {
        self.ns.sort_unstable();
        let us = |ns: Option<&u64>| ns.copied().unwrap_or(0) as f64 / 1000.0;
        (self.ns.len(), us(self.ns.get(self.ns.len() / 2)), us(self.ns.last()))
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("feature_state: benchmark");
        return;
    }
    let users: u32 = std::env::var("RISKD_BENCH_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(400_000);
    let set = Arc::new(FeatureSet::from_sources(&[("bench.toml".into(), FEATURES.into())]).expect("features"));
    assert_eq!(set.len(), 30);
    let mut engine = FeatureEngine::new(set.clone(), [5; 16]);
    let mut fv = FeatureVector::default();
    let mut w = Workload { rng: rand_chacha::ChaCha8Rng::seed_from_u64(42), users, clock: 1_790_000_000_000, n: 0 };

    // Populate to steady state: 30 events per user is about 35 days of
    // event time, so every window, the longest (30 days) included, holds
    // what it holds in a long run.
    let before = rss_bytes();
    let t = Instant::now();
    let per_user: u64 = std::env::var("RISKD_BENCH_EVENTS_PER_USER").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let populate = u64::from(users) * per_user;
    // Timed too, for the updates during which an entity table started or
    // finished growing.
    let mut growth = Resizes::new(&engine);
    for _ in 0..populate {
        growth.update(&mut engine, &w.next(), &mut fv);
    }
    let (growth_events, growth_p50_us, growth_max_us) = growth.summary();
    let populate_secs = t.elapsed().as_secs_f64();
    let after = rss_bytes();
    let entities = engine.entity_count();
    let by_kind = engine.entities_by_kind();

    // Timed: events one by one against the populated state (event built outside the timing).
    let timed = 1_000_000;
    let mut ns: Vec<u64> = Vec::with_capacity(timed);
    for _ in 0..timed {
        let ev = w.next();
        let t = Instant::now();
        engine.update(&ev, &mut fv);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();

    // A checkpoint's state encoded at once, as at shutdown and in replay.
    let t = Instant::now();
    let snapshot = engine.encode_state();
    let snapshot_secs = t.elapsed().as_secs_f64();
    // A checkpoint as serve takes it: begun between two events, then 16
    // entities encoded after each event (and any entity an event is about
    // to change first), timed per event with the update, until complete.
    assert!(engine.begin_snapshot());
    let mut during: Vec<u64> = Vec::new();
    let t = Instant::now();
    let captured = loop {
        let ev = w.next();
        let t = Instant::now();
        engine.update(&ev, &mut fv);
        let done = engine.snapshot_step(16);
        during.push(t.elapsed().as_nanos() as u64);
        if let Some(bytes) = done {
            break bytes.len();
        }
    };
    let capture_secs = t.elapsed().as_secs_f64();
    during.sort_unstable();

    // An expiry wave: 31 days later, 1,000 users go on alone. Every other
    // address (the only kinds here without a lifetime feature) expires, and
    // the address table halves step by step; the updates during which a
    // halving began or ended are timed, like growth's.
    let ip_slots = |e: &FeatureEngine| e.table_slots().find(|(k, _)| *k == EntityKind::Ip).map_or(0, |(_, n)| n);
    let wave_before = ip_slots(&engine);
    let mut wave = Workload {
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(7),
        users: 1000,
        clock: w.clock + 31 * 86_400_000,
        n: 0,
    };
    let mut shrink = Resizes::new(&engine);
    for _ in 0..100_000 {
        shrink.update(&mut engine, &wave.next(), &mut fv);
    }
    let wave_after = ip_slots(&engine);
    let (shrink_events, shrink_p50_us, shrink_max_us) = shrink.summary();
    let dq = |p: f64| during[((during.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    let q = |p: f64| ns[((ns.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    let per_million = (after.saturating_sub(before)) as f64 / entities as f64 * 1e6 / (1u64 << 20) as f64;
    println!("feature_state: 30 features, {} entities ({:?})", entities, by_kind);
    println!(
        "  populate: {} events in {:.2} s ({:.0} events/s)",
        populate,
        populate_secs,
        populate as f64 / populate_secs
    );
    println!(
        "  update per event: median {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.1} us",
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    println!(
        "  entity tables: {} growth phases began or ended during populate; those updates p50 {:.1} us, max {:.0} us",
        growth_events, growth_p50_us, growth_max_us
    );
    println!(
        "  expiry wave: address table {} to {} slots; {} halving phases began or ended, those updates p50 {:.1} us, max {:.0} us",
        wave_before,
        wave_after,
        shrink_events,
        shrink_p50_us,
        shrink_max_us
    );
    println!(
        "  state memory: {:.0} MiB resident for {} entities = {:.0} MiB per million entities",
        (after.saturating_sub(before)) as f64 / (1u64 << 20) as f64,
        entities,
        per_million
    );
    println!(
        "  snapshot: {:.0} MiB encoded in {:.0} ms ({:.0} ms per million entities)",
        snapshot.len() as f64 / (1u64 << 20) as f64,
        snapshot_secs * 1e3,
        snapshot_secs * 1e3 / entities as f64 * 1e6
    );
    println!(
        "  checkpoint between events: {} events (update + 16 entities each, {:.1} s) to encode {:.0} MiB; per event p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.1} us",
        during.len(),
        capture_secs,
        captured as f64 / (1u64 << 20) as f64,
        dq(0.5),
        dq(0.99),
        dq(0.999),
        dq(1.0)
    );
    let json = serde_json::json!({
        "features": set.len(),
        "users": users,
        "entities": entities,
        "entities_by_kind": by_kind.iter().map(|(k, n)| (k.to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
        "populate_events": populate,
        "populate_events_per_s": populate as f64 / populate_secs,
        "timed_events": timed,
        "p50_us": q(0.5),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": q(1.0),
        "growth_events": growth_events,
        "growth_p50_us": growth_p50_us,
        "growth_max_us": growth_max_us,
        "wave_ip_slots_before": wave_before,
        "wave_ip_slots_after": wave_after,
        "shrink_events": shrink_events,
        "shrink_p50_us": shrink_p50_us,
        "shrink_max_us": shrink_max_us,
        "state_mib": (after.saturating_sub(before)) as f64 / (1u64 << 20) as f64,
        "mib_per_million_entities": per_million,
        "snapshot_mib": snapshot.len() as f64 / (1u64 << 20) as f64,
        "snapshot_ms": snapshot_secs * 1e3,
        "capture_events": during.len(),
        "capture_p50_us": dq(0.5),
        "capture_p99_us": dq(0.99),
        "capture_p999_us": dq(0.999),
        "capture_max_us": dq(1.0),
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("out");
    let _ = std::fs::create_dir_all(&out);
    let path = out.join("feature_state.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write feature_state.json");
    println!("wrote {}", path.display());
}
