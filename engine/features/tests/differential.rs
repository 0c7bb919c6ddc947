//! Random event sequences (with out-of-order arrivals within the allowed
//! lateness) through the feature engine, checked against a naive reference
//! that rescans every event seen so far.

use std::collections::HashSet;
use std::sync::Arc;

use compact_str::CompactString;
use rand::{Rng, SeedableRng};
use riskd_core::event::{Entities, Event, EventKind, Login, LoginMethod, Payload};
use riskd_features::{FeatureEngine, FeatureSet, FeatureVector};

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
name = "user.logins_lifetime"
entity = "user"
events = ["login"]
agg = "count"
window = "lifetime"
"#;

struct Ev {
    t: i64,
    user: u32,
    device: u32,
    success: bool,
}

fn event(i: usize, e: &Ev) -> Event {
    Event {
        id: CompactString::from(format!("e{i}")),
        kind: EventKind::Login,
        time_ms: e.t,
        entities: Entities {
            user_id: CompactString::from(format!("u{}", e.user)),
            device_id: Some(CompactString::from(format!("d{}", e.device))),
            ip: None,
            phone: None,
            id_number: None,
            bank_card: None,
        },
        payload: Payload::Login(Login { success: e.success, method: LoginMethod::Password, failure_reason: None }),
    }
}

#[test]
fn windows_equal_a_naive_rescan() {
    let set = Arc::new(FeatureSet::from_sources(&[("f.toml".into(), DEFS.into())]).unwrap());
    for seed in 0..20u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut engine = FeatureEngine::new(set.clone(), [7; 16]);
        let mut fv = FeatureVector::default();
        let mut seen: Vec<Ev> = Vec::new();
        let mut clock = 1_700_000_000_000i64;
        for i in 0..600 {
            clock += rng.gen_range(0..120_000);
            // Up to 9 minutes late: inside the allowed lateness.
            let late = if rng.gen_bool(0.2) { rng.gen_range(0..540_000) } else { 0 };
            let e = Ev {
                t: clock - late,
                user: rng.gen_range(0..6),
                device: rng.gen_range(0..3),
                success: rng.gen_bool(0.6),
            };
            engine.update(&event(i, &e), &mut fv);
            seen.push(e);
            let cur = seen.last().unwrap();
            let in_window = |w: i64, o: &&Ev| o.device == cur.device && o.t > cur.t - w && o.t <= cur.t;
            let logins_1h = seen.iter().filter(|o| in_window(3_600_000, o)).count() as f64;
            let failed_10m = seen.iter().filter(|o| in_window(600_000, o) && !o.success).count() as f64;
            let users_24h =
                seen.iter().filter(|o| in_window(86_400_000, o)).map(|o| o.user).collect::<HashSet<_>>().len() as f64;
            let lifetime = seen.iter().filter(|o| o.user == cur.user).count() as f64;
            assert_eq!(fv.0, vec![logins_1h, failed_10m, users_24h, lifetime], "seed {seed}, event {i}");
        }
        assert_eq!(engine.late_events(), 0);
    }
}
