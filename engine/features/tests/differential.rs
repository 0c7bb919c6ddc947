//! Random event sequences (with out-of-order arrivals within the allowed
//! lateness) through the feature engine, checked against the naive
//! reference that rescans every event seen so far, for every aggregation,
//! both window kinds, composite entities and ratios. Also: snapshots restore
//! to the same values, and expiry and the entity cap behave as documented.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use compact_str::CompactString;
use rand::{Rng, SeedableRng};
use riskd_core::event::{Entities, Event, EventKind, Login, LoginMethod, Payload, Repayment};
use riskd_features::reference::Reference;
use riskd_features::{FeatureEngine, FeatureSet, FeatureVector, SnapshotError, SNAPSHOT_FORMAT};

const DEFS: &str = r#"
[settings]
allowed_lateness = "10m"

[[feature]]
name = "device.logins_1h"
entity = "device"
events = ["login"]
agg = "count"
window = "1h"

[[feature]]
name = "device.failed_logins_10m"
entity = "device"
events = ["login"]
where = { "event.success" = false }
agg = "count"
window = "10m"

[[feature]]
name = "device.distinct_users_24h"
entity = "device"
agg = "distinct_count"
of = "entity.user_id"
window = "24h"

[[feature]]
name = "device.first_seen_hours"
entity = "device"
agg = "first_seen"
unit = "h"
window = "lifetime"

[[feature]]
name = "user.logins_lifetime"
entity = "user"
events = ["login"]
agg = "count"
window = "lifetime"

[[feature]]
name = "user.repaid_1h"
entity = "user"
events = ["repayment"]
agg = "sum"
of = "event.amount"
window = "1h"

[[feature]]
name = "user.repaid_mean"
entity = "user"
events = ["repayment"]
agg = "mean"
of = "event.amount"
window = "lifetime"

[[feature]]
name = "user.repaid_sum"
entity = "user"
events = ["repayment"]
agg = "sum"
of = "event.amount"
window = "lifetime"

[[feature]]
name = "user.max_days_late_1h"
entity = "user"
events = ["repayment"]
agg = "max"
of = "event.days_late"
window = "1h"

[[feature]]
name = "user.min_amount"
entity = "user"
events = ["repayment"]
agg = "min"
of = "event.amount"
window = "lifetime"

[[feature]]
name = "user.mean_amount_10m"
entity = "user"
events = ["repayment"]
agg = "mean"
of = "event.amount"
window = "10m"

[[feature]]
name = "user.last_amount_1h"
entity = "user"
events = ["repayment"]
agg = "last"
of = "event.amount"
window = "1h"

[[feature]]
name = "user.last_amount"
entity = "user"
events = ["repayment"]
agg = "last"
of = "event.amount"
window = "lifetime"

[[feature]]
name = "user.secs_since_prev_login_1h"
entity = "user"
events = ["login"]
agg = "time_since"
window = "1h"

[[feature]]
name = "user.mins_since_prev_event"
entity = "user"
agg = "time_since"
unit = "m"
window = "lifetime"

[[feature]]
name = "user.min_days_late"
entity = "user"
events = ["repayment"]
agg = "min"
of = "event.days_late"
window = "1h"

[[feature]]
name = "ip24.first_seen_1h"
entity = "ip24"
agg = "first_seen"
window = "1h"

[[feature]]
name = "ip24.distinct_users"
entity = "ip24"
agg = "distinct_count"
of = "entity.user_id"
window = "lifetime"

[[feature]]
name = "ip.distinct_devices_1h"
entity = "ip"
agg = "distinct_count"
of = "entity.device_id"
window = "1h"

[[feature]]
name = "user_device.events_24h"
entity = "user+device"
agg = "count"
window = "24h"

[[feature]]
name = "event.repaid_per_login"
entity = "event"
agg = "ratio"
numerator = "user.repaid_1h"
denominator = "device.logins_1h"
"#;

fn set(text: &str) -> Arc<FeatureSet> {
    Arc::new(FeatureSet::from_sources(&[("f.toml".into(), text.into())]).unwrap())
}

fn event(i: usize, t: i64, user: u32, device: Option<u32>, ip: Option<[u8; 4]>, kind: u32, x: u32) -> Event {
    let (kind, payload) = if kind == 0 {
        (
            EventKind::Login,
            Payload::Login(Login {
                success: !x.is_multiple_of(3),
                method: LoginMethod::Password,
                failure_reason: None,
            }),
        )
    } else {
        (
            EventKind::Repayment,
            Payload::Repayment(Repayment {
                loan_id: CompactString::from("l1"),
                amount: f64::from(x % 997) * 1.37 + 0.1,
                installment_no: 1,
                days_late: x % 40,
            }),
        )
    };
    Event {
        id: CompactString::from(format!("e{i}")),
        kind,
        time_ms: t,
        entities: Entities {
            user_id: CompactString::from(format!("u{user}")),
            device_id: device.map(|d| CompactString::from(format!("d{d}"))),
            ip: ip.map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            phone: None,
            id_number: None,
            bank_card: None,
        },
        payload,
    }
}

/// A random stream on a one-minute grid (so events land exactly on window
/// edges and share timestamps): bursts, idle gaps longer than every window,
/// and arrivals up to the allowed lateness out of order.
fn stream(seed: u64, n: usize) -> Vec<Event> {
    stream_over(seed, n, Spread { idle_one_in: 100, users: 8, devices: 6, subnets: 2, hosts: 3, burst_gap_minutes: 3 })
}

/// How many entities a generated stream spreads over, and how often it goes idle.
struct Spread {
    /// One gap of 26 hours (everything windowed expires) in this many events.
    idle_one_in: u32,
    users: u32,
    devices: u32,
    subnets: u8,
    hosts: u8,
    /// Gaps between most events: 0 to this many minutes, exclusive.
    burst_gap_minutes: i64,
}

fn stream_over(seed: u64, n: usize, spread: Spread) -> Vec<Event> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let minute = 60_000;
    let mut clock = 1_700_000_000_000i64 - 1_700_000_000_000i64 % minute;
    (0..n)
        .map(|i| {
            clock += match rng.gen_range(0..spread.idle_one_in) {
                0 => 26 * 60 * minute, // idle: everything windowed expires
                1..=5 => rng.gen_range(0..120) * minute,
                _ => rng.gen_range(0..spread.burst_gap_minutes) * minute,
            };
            let t = if rng.gen_bool(0.3) { clock - rng.gen_range(0..=10) * minute } else { clock };
            let device = rng.gen_bool(0.9).then(|| rng.gen_range(0..spread.devices));
            let ip =
                rng.gen_bool(0.8).then(|| [10, 0, rng.gen_range(0..spread.subnets), rng.gen_range(0..spread.hosts)]);
            event(i, t, rng.gen_range(0..spread.users), device, ip, rng.gen_range(0..2), rng.gen())
        })
        .collect()
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[test]
fn every_aggregation_equals_a_naive_rescan() {
    let set = set(DEFS);
    for seed in 0..12u64 {
        let mut engine = FeatureEngine::new(set.clone(), [7; 16]);
        let mut reference = Reference::new(set.clone());
        let mut fv = FeatureVector::default();
        for (i, ev) in stream(seed, 700).into_iter().enumerate() {
            let late = engine.update(&ev, &mut fv);
            assert!(!late, "the stream stays within the allowed lateness");
            reference.push(ev);
            let want = reference.values(i);
            if !same(&fv.0, &want) {
                let diff: Vec<String> = set
                    .defs
                    .iter()
                    .filter(|d| !same(&[fv.0[d.slot]], &[want[d.slot]]))
                    .map(|d| format!("{}: engine {} reference {}", d.name, fv.0[d.slot], want[d.slot]))
                    .collect();
                panic!("seed {seed}, event {i}: {diff:#?}");
            }
        }
        assert!(engine.stats().expired_entities > 0, "seed {seed}: idle gaps expire windowed entities");
    }
}

#[test]
fn a_restored_snapshot_continues_exactly() {
    let set = set(DEFS);
    let events = stream(99, 1200);
    let mut whole = FeatureEngine::new(set.clone(), [3; 16]);
    let mut fv = FeatureVector::default();
    let expected: Vec<Vec<f64>> = events
        .iter()
        .map(|e| {
            whole.update(e, &mut fv);
            fv.0.clone()
        })
        .collect();

    let mut first = FeatureEngine::new(set.clone(), [3; 16]);
    for e in &events[..555] {
        first.update(e, &mut fv);
    }
    let mut bytes = Vec::new();
    first.write_snapshot(&mut bytes).unwrap();
    let mut second = FeatureEngine::restore(set.clone(), [3; 16], &mut bytes.as_slice()).unwrap();
    assert_eq!(second.entity_count(), first.entity_count());
    for (i, e) in events.iter().enumerate().skip(555) {
        second.update(e, &mut fv);
        assert!(same(&fv.0, &expected[i]), "event {i} after restore");
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    whole.write_snapshot(&mut a).unwrap();
    second.write_snapshot(&mut b).unwrap();
    assert_eq!(a, b, "the restored run ends in byte-identical state");

    // A snapshot is refused with another key, another feature set, or damage.
    let err = FeatureEngine::restore(set.clone(), [4; 16], &mut bytes.as_slice()).err().unwrap();
    assert!(err.to_string().contains("different PII key"), "{err}");
    let other = self::set(&DEFS.replace("\"10m\"\n\n[[feature]]", "\"15m\"\n\n[[feature]]"));
    let err = FeatureEngine::restore(other, [3; 16], &mut bytes.as_slice()).err().unwrap();
    assert!(err.to_string().contains("cannot be carried over a feature change"), "{err}");
    let err = FeatureEngine::restore(set.clone(), [3; 16], &mut &bytes[..bytes.len() / 2]).err().unwrap();
    assert!(err.to_string().contains("corrupt"), "{err}");
    // Another engine version's format is named as such, even when its state
    // would not parse in this layout (here: the format number, then garbage).
    let mut older = (SNAPSHOT_FORMAT - 1).to_le_bytes().to_vec();
    older.extend_from_slice(&[0xff; 64]);
    let err = FeatureEngine::restore(set, [3; 16], &mut older.as_slice()).err().unwrap();
    assert!(matches!(err, SnapshotError::Format { found } if found == SNAPSHOT_FORMAT - 1), "{err}");
}

#[test]
fn windowed_entities_expire_once_no_window_can_see_them() {
    let set = set("[settings]\nallowed_lateness = \"1m\"\n[[feature]]\nname = \"user.n_1h\"\nentity = \"user\"\nagg = \"count\"\nwindow = \"1h\"\n");
    let mut engine = FeatureEngine::new(set, [1; 16]);
    let mut fv = FeatureVector::default();
    let t0 = 1_700_000_000_000;
    for u in 0..50 {
        engine.update(&event(u, t0 + u as i64, u as u32, None, None, 0, 1), &mut fv);
    }
    assert_eq!(engine.entity_count(), 50);
    // Still visible at the edge of the window plus lateness: nothing expires.
    for i in 0..20 {
        engine.update(&event(100 + i, t0 + 3_659_999, 1000, None, None, 0, 1), &mut fv);
    }
    assert_eq!(engine.stats().expired_entities, 0);
    // Past it, every idle entity goes (a few per event).
    for i in 0..40 {
        engine.update(&event(200 + i, t0 + 3_700_000, 1000, None, None, 0, 1), &mut fv);
    }
    assert_eq!(engine.stats().expired_entities, 50);
    assert_eq!(engine.entity_count(), 1);
}

#[test]
fn a_late_event_before_the_first_seen_time_moves_it_back() {
    // Documented: an event later than the allowed lateness is still counted.
    // First seen settles once the watermark passes it; an on-time event
    // then leaves it alone, but a late one from before it moves it back.
    let text = "[settings]\nallowed_lateness = \"1m\"\n[[feature]]\nname = \"user.first_seen_hours\"\nentity = \"user\"\nagg = \"first_seen\"\nunit = \"h\"\nwindow = \"lifetime\"\n";
    let mut engine = FeatureEngine::new(set(text), [1; 16]);
    let mut fv = FeatureVector::default();
    let (t0, hour) = (1_700_000_000_000, 3_600_000);
    for (i, h) in [10, 11, 12].into_iter().enumerate() {
        engine.update(&event(i, t0 + h * hour, 1, None, None, 0, 1), &mut fv);
        assert_eq!(fv.0, [(h - 10) as f64], "on time, {h} h");
    }
    assert!(engine.update(&event(3, t0 + 4 * hour, 1, None, None, 0, 1), &mut fv), "the event is late");
    assert_eq!(fv.0, [0.0], "the late event is the first seen now");
    engine.update(&event(4, t0 + 13 * hour, 1, None, None, 0, 1), &mut fv);
    assert_eq!(fv.0, [9.0], "first seen at the late event's time");
}

#[test]
fn the_entity_cap_evicts_the_least_recently_seen() {
    let text = "[settings]\nmax_entities = 3\n[[feature]]\nname = \"user.n\"\nentity = \"user\"\nagg = \"count\"\nwindow = \"lifetime\"\n";
    let mut engine = FeatureEngine::new(set(text), [1; 16]);
    let mut fv = FeatureVector::default();
    let t0 = 1_700_000_000_000;
    let hour = 3_600_000;
    // u0, u1, u2 seen an hour apart; u0 again later, so u1 is the least recent.
    for (i, (u, t)) in [(0, 0), (1, hour), (2, 2 * hour), (0, 3 * hour)].into_iter().enumerate() {
        engine.update(&event(i, t0 + t, u, None, None, 0, 1), &mut fv);
    }
    engine.update(&event(10, t0 + 4 * hour, 3, None, None, 0, 1), &mut fv);
    assert_eq!(engine.stats().evicted_entities, 1);
    assert_eq!(engine.entity_count(), 3);
    engine.update(&event(11, t0 + 5 * hour, 0, None, None, 0, 1), &mut fv);
    assert_eq!(fv.0, vec![3.0], "u0 kept its history");
    engine.update(&event(12, t0 + 6 * hour, 1, None, None, 0, 1), &mut fv);
    assert_eq!(fv.0, vec![1.0], "u1 was evicted and starts again");
}

/// Like `stream`, over hundreds of users and devices, so tables grow.
fn wide_stream(seed: u64, n: usize) -> Vec<Event> {
    stream_over(
        seed,
        n,
        Spread { idle_one_in: 200, users: 400, devices: 150, subnets: 4, hosts: 60, burst_gap_minutes: 2 },
    )
}

/// A snapshot encoded a little at a time while events go on (as serve takes
/// it) decodes to exactly the state of the instant it began: compared, after
/// a restore, with the bytes of a snapshot written whole at that instant.
/// The streams expire entities, and one feature set caps them, so entities
/// are dropped, evicted, moved and rehashed while captures are in progress.
#[test]
fn a_snapshot_taken_between_events_is_the_state_of_its_instant() {
    let capped = DEFS.replace("[settings]\n", "[settings]\nmax_entities = 40\n");
    for (defs, seeds) in [(DEFS, 0..8u64), (capped.as_str(), 8..16)] {
        let set = set(defs);
        for seed in seeds {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + seed);
            let mut engine = FeatureEngine::new(set.clone(), [9; 16]);
            let mut plain = FeatureEngine::new(set.clone(), [9; 16]);
            let (mut fv, mut plain_fv) = (FeatureVector::default(), FeatureVector::default());
            let mut instant: Option<(usize, Vec<u8>)> = None;
            let mut checked = 0;
            let events = wide_stream(seed, 3000);
            for (i, ev) in events.iter().enumerate() {
                if instant.is_none() && rng.gen_bool(0.02) {
                    let mut whole = Vec::new();
                    engine.write_snapshot(&mut whole).unwrap();
                    assert!(engine.begin_snapshot());
                    assert!(!engine.begin_snapshot(), "one capture at a time");
                    instant = Some((i, whole));
                }
                engine.update(ev, &mut fv);
                plain.update(ev, &mut plain_fv);
                assert!(same(&fv.0, &plain_fv.0), "seed {seed}, event {i}: a capture changes no value");
                if instant.is_some() {
                    // Mostly no step, so events do much of the encoding and
                    // captures stay open across drops, moves and rehashes.
                    let budget = if rng.gen_bool(0.7) { 0 } else { rng.gen_range(1..12) };
                    if let Some(bytes) = engine.snapshot_step(budget) {
                        let (at, whole) = instant.take().unwrap();
                        let bytes = bytes.to_vec();
                        let restored = FeatureEngine::restore(set.clone(), [9; 16], &mut bytes.as_slice())
                            .unwrap_or_else(|e| panic!("seed {seed}: capture begun at {at}: {e}"));
                        let mut again = Vec::new();
                        restored.write_snapshot(&mut again).unwrap();
                        assert!(
                            again == whole,
                            "seed {seed}: the capture begun at event {at} differs from that instant's state"
                        );
                        checked += 1;
                    }
                }
            }
            assert!(checked >= 3, "seed {seed}: only {checked} captures completed");
            assert!(engine.stats().expired_entities + engine.stats().evicted_entities > 0);
        }
    }
}

/// The expiry queue is rebuilt once stale entries pile up (here: a few
/// users seen hourly under an entity cap); a capture open at that moment
/// still holds the queue of its instant.
#[test]
fn a_capture_holds_its_queue_across_a_rebuild() {
    let text = "[settings]\nmax_entities = 5\n[[feature]]\nname = \"user.n\"\nentity = \"user\"\nagg = \"count\"\nwindow = \"lifetime\"\n";
    let set = set(text);
    let mut engine = FeatureEngine::new(set.clone(), [2; 16]);
    let mut fv = FeatureVector::default();
    let t0 = 1_700_000_000_000;
    let hour = 3_600_000;
    for i in 0..1200 {
        engine.update(&event(i, t0 + i as i64 * hour, (i % 5) as u32, None, None, 0, 1), &mut fv);
    }
    let mut whole = Vec::new();
    engine.write_snapshot(&mut whole).unwrap();
    assert!(engine.begin_snapshot());
    // A sixth user: the cap evicts one and the queue (1,200 entries for 5 users) is rebuilt.
    engine.update(&event(5000, t0 + 1300 * hour, 77, None, None, 0, 1), &mut fv);
    assert_eq!(engine.stats().evicted_entities, 1);
    let bytes = loop {
        if let Some(b) = engine.snapshot_step(16) {
            break b.to_vec();
        }
    };
    let restored = FeatureEngine::restore(set, [2; 16], &mut bytes.as_slice()).unwrap();
    let mut again = Vec::new();
    restored.write_snapshot(&mut again).unwrap();
    assert!(again == whole, "the capture holds the queue and entities of its instant");
}

#[test]
fn a_full_window_drops_its_oldest_points() {
    let text = "[settings]\nmax_events_per_window = 20\n\
        [[feature]]\nname = \"user.logins_1h\"\nentity = \"user\"\nevents = [\"login\"]\nagg = \"count\"\nwindow = \"1h\"\n\
        [[feature]]\nname = \"user.devices_1h\"\nentity = \"user\"\nagg = \"distinct_count\"\nof = \"entity.device_id\"\nwindow = \"1h\"\n\
        [[feature]]\nname = \"user.first_login_age_1h\"\nentity = \"user\"\nevents = [\"login\"]\nagg = \"first_seen\"\nunit = \"s\"\nwindow = \"1h\"\n";
    let mut engine = FeatureEngine::new(set(text), [1; 16]);
    let mut fv = FeatureVector::default();
    let t0 = 1_700_000_000_000;
    // 30 logins a second apart, each from another device: every window
    // holds the newest 20 (more than a small window's 16, so the distinct
    // count keeps a count table that must drop the oldest too).
    for i in 0..30usize {
        engine.update(&event(i, t0 + i as i64 * 1000, 0, Some(i as u32), None, 0, 1), &mut fv);
        let held = (i + 1).min(20);
        assert_eq!(fv.0[..2], [held as f64, held as f64], "after login {i}");
        assert_eq!(fv.0[2], (held - 1) as f64, "after login {i}: the oldest held is {} s old", held - 1);
    }
    assert_eq!(engine.stats().dropped_points, 3 * 10);
    // A repayment counts for the distinct count only: its window drops one
    // more, the others keep their 20 (and read them at a later time).
    engine.update(&event(30, t0 + 30_000, 0, Some(100), None, 1, 1), &mut fv);
    assert_eq!(fv.0, [20.0, 20.0, 20.0]);
    assert_eq!(engine.stats().dropped_points, 3 * 10 + 1);
}

/// After an expiry wave a table gives its slots back: 6,000 devices seen,
/// then a day later one device's events expire them all, and the device
/// table halves until it is small again, its feature still exact.
#[test]
fn tables_shrink_after_an_expiry_wave() {
    let text = "[[feature]]\nname = \"device.logins_1h\"\nentity = \"device\"\nevents = [\"login\"]\nagg = \"count\"\nwindow = \"1h\"\n";
    let mut engine = FeatureEngine::new(set(text), [4; 16]);
    let mut fv = FeatureVector::default();
    let t0 = 1_700_000_000_000;
    for i in 0..6000u32 {
        engine.update(&event(i as usize, t0 + i64::from(i), i, Some(i), None, 0, 1), &mut fv);
    }
    let slots = |e: &FeatureEngine| e.slots_by_kind()[0].1;
    let peak = slots(&engine);
    assert!(peak >= 8192, "{peak} slots for 6,000 devices");
    let later = t0 + 26 * 3_600_000;
    for i in 0..3000usize {
        engine.update(&event(i, later + i as i64 * 1000, 1, Some(7), None, 0, 1), &mut fv);
        let held = (i + 1).min(3600) as f64;
        assert_eq!(fv.0, [held], "event {i} a day later");
    }
    assert_eq!(engine.entity_count(), 1, "every other device expired");
    assert!(slots(&engine) <= 2048, "{} slots left of {peak}", slots(&engine));
}

/// The slots each entity table reports (`slots_by_kind`, the
/// `risk_feature_table_slots` gauge) hold its entities with room to spare
/// while the tables grow: at most 15/16 of the current arrays are ever
/// used, and the count is a power of two, or three times one while a
/// table moves into arrays twice the size of its old ones.
#[test]
fn table_slots_hold_their_entities_as_tables_grow() {
    let set = set(DEFS);
    let mut engine = FeatureEngine::new(set, [9; 16]);
    let mut fv = FeatureVector::default();
    let mut grew = 0;
    let mut last = engine.slots_by_kind();
    for ev in wide_stream(3, 3000) {
        engine.update(&ev, &mut fv);
        let slots = engine.slots_by_kind();
        for ((kind, n), (same_kind, s)) in engine.entities_by_kind().into_iter().zip(&slots) {
            assert_eq!(kind, *same_kind);
            let current = if s.is_power_of_two() { *s } else { s / 3 * 2 };
            assert!(current.is_power_of_two() && current >= 16, "{kind}: {s} slots");
            assert!(n * 16 <= current * 15, "{kind}: {n} entities in {current} slots");
        }
        grew += usize::from(slots != last);
        last = slots;
    }
    assert!(grew >= 4, "the tables grew {grew} times only");
}
