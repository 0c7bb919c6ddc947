//! The fraud patterns documented in replay-data/README.md are really in the
//! stream: each is found by analysing the events alone, and agrees with the
//! generator's manifest. The labels carry their signal.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use riskd_gen::GenConfig;

fn sample() -> (Vec<Ev>, riskd_gen::GenStats) {
    let (lines, stats) = generate(&GenConfig::default());
    (events(&lines), stats)
}

fn applicants(evs: &[Ev]) -> BTreeMap<&str, Vec<&Ev>> {
    let mut m: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in evs.iter().filter(|e| e.ty() == "loan_application") {
        m.entry(e.user()).or_default().push(e);
    }
    m
}

#[test]
fn device_farm_one_device_many_users_applying_within_a_day() {
    let (evs, stats) = sample();
    let apps = applicants(&evs);
    let mut users_per_device: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &evs {
        if let Some(d) = e.entity("device_id") {
            users_per_device.entry(d).or_default().insert(e.user());
        }
    }
    let farms: Vec<(&str, &BTreeSet<&str>)> = users_per_device
        .iter()
        .filter(|(_, users)| users.len() >= 8)
        .filter(|(d, users)| {
            // Every user applies, from the device, all within 24 hours.
            let times: Option<Vec<i64>> = users
                .iter()
                .map(|u| apps.get(u)?.iter().find(|a| a.entity("device_id") == Some(d)).map(|a| a.time_ms))
                .collect();
            times.is_some_and(|t| t.iter().max().unwrap() - t.iter().min().unwrap() <= DAY)
        })
        .map(|(d, u)| (*d, u))
        .collect();
    assert_eq!(farms.len(), 1, "{farms:?}");
    let m = &stats.fraud.device_farms[0];
    assert_eq!(farms[0].0, m.device_id);
    assert_eq!(farms[0].1.iter().map(|u| u.to_string()).collect::<Vec<_>>(), {
        let mut u = m.users.clone();
        u.sort();
        u
    });
    // Ordinary sharing exists too, but is small.
    assert!(users_per_device.values().any(|u| u.len() == 2));
    assert!(users_per_device.values().filter(|u| u.len() > 3).count() == 1);
}

#[test]
fn emulator_and_rooted_devices_whose_users_apply() {
    let (evs, stats) = sample();
    let apps = applicants(&evs);
    let mut tainted: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for e in evs.iter().filter(|e| e.ty() == "device_report") {
        if e.payload("is_emulator") == true || e.payload("is_rooted") == true {
            tainted.insert(e.user(), (e.payload("is_emulator") == true, e.payload("is_rooted") == true));
        }
    }
    let applying: Vec<_> = tainted.iter().filter(|(u, _)| apps.contains_key(*u)).collect();
    assert!(applying.iter().filter(|(_, (emu, _))| *emu).count() >= 3, "{applying:?}");
    assert!(applying.iter().filter(|(_, (emu, rooted))| !*emu && *rooted).count() >= 3, "{applying:?}");
    assert!(stats.fraud.emulator_or_rooted.len() >= 6);
    for t in &stats.fraud.emulator_or_rooted {
        assert!(apps.contains_key(t.user_id.as_str()));
        assert_eq!(tainted.get(t.user_id.as_str()), Some(&(t.is_emulator, t.is_rooted)));
    }
}

#[test]
fn credential_stuffing_bursts_of_failed_logins() {
    let (evs, stats) = sample();
    let mut bursts: BTreeMap<&str, usize> = BTreeMap::new();
    for (user, evs) in by_user(&evs) {
        let fails: Vec<i64> =
            evs.iter().filter(|e| e.ty() == "login" && e.payload("success") == false).map(|e| e.time_ms).collect();
        let most = (0..fails.len()).map(|i| fails[i..].iter().take_while(|&&t| t - fails[i] <= 10 * MIN).count()).max();
        if let Some(n) = most.filter(|&n| n >= 5) {
            bursts.insert(user, n);
        }
    }
    assert!(bursts.len() >= 4, "{bursts:?}");
    let manifest: BTreeSet<&str> = stats.fraud.credential_stuffing.iter().map(|b| b.user_id.as_str()).collect();
    assert_eq!(bursts.keys().copied().collect::<BTreeSet<_>>(), manifest);
    // Some end in a takeover: a success from the attacker's device, then an
    // application from it.
    let takeovers: Vec<_> = stats.fraud.credential_stuffing.iter().filter(|b| b.takeover).collect();
    assert!(!takeovers.is_empty());
    for b in takeovers {
        let applied = evs.iter().any(|e| {
            e.ty() == "loan_application"
                && e.user() == b.user_id
                && e.entity("device_id") == Some(&b.attacker_device_id)
        });
        assert!(applied, "{b:?}");
    }
}

#[test]
fn multi_lending_credit_reports_before_applications() {
    let (evs, stats) = sample();
    let heavy: BTreeSet<&str> = evs
        .iter()
        .filter(|e| e.ty() == "credit_report" && e.payload("applications_last_30d").as_u64().unwrap() >= 6)
        .map(|e| e.user())
        .collect();
    let apps = applicants(&evs);
    assert!(heavy.len() >= 8, "{heavy:?}");
    assert!(heavy.iter().all(|u| apps.contains_key(u)));
    for m in &stats.fraud.multi_lending {
        assert!(heavy.contains(m.user_id.as_str()));
    }
}

#[test]
fn ip_ring_one_slash_24_shared_by_applicants() {
    let (evs, stats) = sample();
    let mut per_range: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for e in evs.iter().filter(|e| e.ty() == "loan_application") {
        let ip = e.entity("ip").unwrap();
        if let Some((prefix, _)) = ip.rsplit_once('.').filter(|_| !ip.contains(':')) {
            per_range.entry(format!("{prefix}.0/24")).or_default().insert(e.user());
        }
    }
    let rings: Vec<_> = per_range.iter().filter(|(_, u)| u.len() >= 6).collect();
    assert_eq!(rings.len(), 1, "{rings:?}");
    let m = &stats.fraud.ip_rings[0];
    assert_eq!(rings[0].0, &m.cidr);
    assert_eq!(rings[0].1.len(), m.users.len());
}

#[test]
fn contact_changed_shortly_before_applying() {
    let (evs, stats) = sample();
    let mut found = BTreeSet::new();
    for (user, evs) in by_user(&evs) {
        for (i, c) in evs.iter().enumerate() {
            let field = c.payload("field").as_str();
            if c.ty() != "contact_change" || !matches!(field, Some("phone" | "bank_card")) {
                continue;
            }
            let key = field.unwrap();
            let new_value = c.entity(key).expect("new value in entities");
            let applied = evs[i..].iter().any(|a| {
                a.ty() == "loan_application" && a.time_ms - c.time_ms <= 3 * HOUR && a.entity(key) == Some(new_value)
            });
            if applied {
                found.insert(user);
            }
        }
    }
    assert!(found.len() >= 6, "{found:?}");
    for s in &stats.fraud.contact_change_before_apply {
        assert!(found.contains(s.user_id.as_str()), "{s:?}");
    }
}

#[test]
fn labels_carry_the_risk_signal() {
    let (evs, stats) = sample();
    let f = &stats.fraud;
    let mut fraud_users: BTreeSet<&str> = BTreeSet::new();
    fraud_users.extend(f.device_farms.iter().flat_map(|d| d.users.iter().map(String::as_str)));
    fraud_users.extend(f.emulator_or_rooted.iter().map(|t| t.user_id.as_str()));
    fraud_users.extend(f.ip_rings.iter().flat_map(|r| r.users.iter().map(String::as_str)));
    fraud_users.extend(f.multi_lending.iter().map(|m| m.user_id.as_str()));
    fraud_users.extend(f.contact_change_before_apply.iter().map(|c| c.user_id.as_str()));
    let (mut fraud, mut other) = ((0, 0), (0, 0));
    for e in evs.iter().filter(|e| e.ty() == "loan_application") {
        let bucket = if fraud_users.contains(e.user()) { &mut fraud } else { &mut other };
        bucket.0 += 1;
        bucket.1 += usize::from(e.bad.unwrap());
    }
    let rate = |(n, b): (usize, usize)| b as f64 / n as f64;
    assert!(fraud.0 >= 40 && other.0 >= 100, "{fraud:?} {other:?}");
    assert!(rate(fraud) > 3.0 * rate(other), "fraud {fraud:?} vs other {other:?}");
}
