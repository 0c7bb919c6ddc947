//! Per-entity window state and the per-event update/read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use riskd_core::event::Event;
use riskd_core::fields::{FieldId, Value};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::def::{Aggregation, EntityKind, FeatureSet, FilterValue, Operand, Window};

/// One value per feature slot for one event; NaN means missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureVector(pub Vec<f64>);

impl FeatureVector {
    pub fn get(&self, slot: usize) -> f64 {
        self.0.get(slot).copied().unwrap_or(f64::NAN)
    }
}

/// History of one feature for one entity. Windowed features keep the counted
/// points, sorted by event time, until no read can still see them; lifetime
/// features keep running aggregates.
#[derive(Debug)]
enum Series {
    Windowed(VecDeque<(i64, u64)>),
    Lifetime(Lifetime),
}

#[derive(Debug, Default)]
struct Lifetime {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: Option<(i64, u64)>,
    distinct: HashSet<u64>,
}

/// The features of one entity kind, with the index of each in the set.
struct Group {
    entity: EntityKind,
    features: Vec<usize>,
}

/// Feature state and evaluation for one stream of events. Owned by one
/// pipeline worker; nothing here is shared between threads.
pub struct FeatureEngine {
    set: Arc<FeatureSet>,
    keys: (u64, u64),
    groups: Vec<Group>,
    per_event: Vec<usize>,
    tables: HashMap<(EntityKind, u128), Vec<Series>>,
    max_event_time: i64,
    late_events: u64,
    scratch: HashSet<u64>,
}

impl FeatureEngine {
    /// `hash_key` keys the hashing of entity values into state keys.
    pub fn new(set: Arc<FeatureSet>, hash_key: [u8; 16]) -> Self {
        let mut groups: Vec<Group> = Vec::new();
        let mut per_event = Vec::new();
        for (i, d) in set.defs.iter().enumerate() {
            if d.entity == EntityKind::Event {
                per_event.push(i);
                continue;
            }
            match groups.iter_mut().find(|g| g.entity == d.entity) {
                Some(g) => g.features.push(i),
                None => groups.push(Group { entity: d.entity, features: vec![i] }),
            }
        }
        let k0 = u64::from_le_bytes(hash_key[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(hash_key[8..].try_into().expect("8 bytes"));
        FeatureEngine {
            set,
            keys: (k0, k1),
            groups,
            per_event,
            tables: HashMap::new(),
            max_event_time: i64::MIN,
            late_events: 0,
            scratch: HashSet::new(),
        }
    }

    pub fn feature_set(&self) -> &FeatureSet {
        &self.set
    }

    /// Number of entities with state, over all entity kinds.
    pub fn entity_count(&self) -> usize {
        self.tables.len()
    }

    /// Events that arrived later than the allowed lateness.
    pub fn late_events(&self) -> u64 {
        self.late_events
    }

    /// Adds the event to every feature that counts it, then reads every
    /// feature for this event into `out`. Returns true when the event was
    /// later than the allowed lateness.
    pub fn update(&mut self, ev: &Event, out: &mut FeatureVector) -> bool {
        out.0.clear();
        out.0.resize(self.set.defs.len(), f64::NAN);
        let lateness = self.set.allowed_lateness_ms;
        let late = self.max_event_time != i64::MIN && ev.time_ms < self.max_event_time.saturating_sub(lateness);
        if late {
            self.late_events += 1;
        }
        self.max_event_time = self.max_event_time.max(ev.time_ms);
        for g in 0..self.groups.len() {
            let entity = self.groups[g].entity;
            let Some(key) = entity_key(self.keys, entity, ev) else {
                continue;
            };
            let n = self.groups[g].features.len();
            let series = self.tables.entry((entity, key)).or_insert_with(|| {
                self.groups[g]
                    .features
                    .iter()
                    .map(|&i| match self.set.defs[i].window {
                        Window::Sliding { .. } => Series::Windowed(VecDeque::new()),
                        Window::Lifetime => Series::Lifetime(Lifetime {
                            min: f64::INFINITY,
                            max: f64::NEG_INFINITY,
                            ..Default::default()
                        }),
                    })
                    .collect()
            });
            for j in 0..n {
                let def = &self.set.defs[self.groups[g].features[j]];
                let s = &mut series[j];
                if def.counts & ev.kind.bit() != 0 && passes(&def.filters, ev) {
                    if let Some(v) = point_value(&def.agg, ev) {
                        insert(s, ev.time_ms, v, &def.agg, def.window, lateness);
                    }
                }
                out.0[def.slot] = read(s, ev.time_ms, &def.agg, def.window, &mut self.scratch);
            }
        }
        for &i in &self.per_event {
            let def = &self.set.defs[i];
            if let Aggregation::Ratio(n, d) = def.agg {
                let get = |o: Operand| match o {
                    Operand::Field(f) => f.get(ev).num_or_nan(),
                    Operand::Feature(slot) => out.0[slot],
                };
                let (n, d) = (get(n), get(d));
                out.0[def.slot] = if d == 0.0 || d.is_nan() || n.is_nan() { f64::NAN } else { n / d };
            }
        }
        late
    }
}

fn passes(filters: &[(FieldId, FilterValue)], ev: &Event) -> bool {
    filters.iter().all(|(f, want)| match (f.get(ev), want) {
        (Value::Bool(a), FilterValue::Bool(b)) => a == *b,
        (Value::Num(a), FilterValue::Num(b)) => a == *b,
        (Value::Str(a), FilterValue::Str(b)) => a == b,
        _ => false,
    })
}

fn hash_bytes(keys: (u64, u64), tag: u8, bytes: &[u8]) -> u128 {
    let mut h = SipHasher13::new_with_keys(keys.0, keys.1);
    h.write_u8(tag);
    h.write(bytes);
    h.finish128().as_u128()
}

fn entity_key(keys: (u64, u64), entity: EntityKind, ev: &Event) -> Option<u128> {
    let e = &ev.entities;
    let tag = entity as u8;
    match entity {
        EntityKind::User => Some(hash_bytes(keys, tag, e.user_id.as_bytes())),
        EntityKind::Device => e.device_id.as_ref().map(|d| hash_bytes(keys, tag, d.as_bytes())),
        EntityKind::Ip => e.ip.map(|ip| match ip {
            IpAddr::V4(v4) => hash_bytes(keys, tag, &v4.octets()),
            IpAddr::V6(v6) => hash_bytes(keys, tag, &v6.octets()),
        }),
        EntityKind::Ip24 => e.ip.map(|ip| match ip {
            IpAddr::V4(v4) => hash_bytes(keys, tag, &v4.octets()[..3]),
            IpAddr::V6(v6) => hash_bytes(keys, tag, &v6.octets()[..8]),
        }),
        EntityKind::Phone => e.phone.map(|p| hash_bytes(keys, tag, &p.0)),
        EntityKind::IdNumber => e.id_number.map(|p| hash_bytes(keys, tag, &p.0)),
        EntityKind::BankCard => e.bank_card.map(|p| hash_bytes(keys, tag, &p.0)),
        EntityKind::Event => None,
    }
}

/// The value a counted event contributes: numbers as f64 bits, anything
/// else (distinct counts) as a 64-bit hash. None: the field is missing, so
/// the event does not contribute.
fn point_value(agg: &Aggregation, ev: &Event) -> Option<u64> {
    let field = match agg {
        Aggregation::Count => return Some(0),
        Aggregation::Ratio(..) => return None,
        Aggregation::Sum(f)
        | Aggregation::Min(f)
        | Aggregation::Max(f)
        | Aggregation::Mean(f)
        | Aggregation::Last(f) => {
            let v = f.get(ev).num_or_nan();
            return (!v.is_nan()).then(|| v.to_bits());
        }
        Aggregation::DistinctCount(f) => f,
    };
    let mut h = siphasher::sip::SipHasher13::new();
    match field.get(ev) {
        Value::Missing => return None,
        Value::Num(v) => h.write_u64(v.to_bits()),
        Value::Bool(b) => h.write_u8(u8::from(b)),
        Value::Str(s) => h.write(s.as_bytes()),
        Value::Ip(IpAddr::V4(v4)) => h.write(&v4.octets()),
        Value::Ip(IpAddr::V6(v6)) => h.write(&v6.octets()),
    }
    Some(h.finish())
}

fn insert(s: &mut Series, t: i64, v: u64, agg: &Aggregation, window: Window, lateness: i64) {
    match s {
        Series::Windowed(points) => {
            if points.back().is_none_or(|&(last, _)| last <= t) {
                points.push_back((t, v));
            } else {
                // Out of order: keep points sorted; equal times keep arrival order.
                let at = points.partition_point(|&(pt, _)| pt <= t);
                points.insert(at, (t, v));
            }
            if let (Window::Sliding { ms }, Some(&(newest, _))) = (window, points.back()) {
                // No read at or after `newest - lateness` can see these points.
                let horizon = newest.saturating_sub(ms).saturating_sub(lateness);
                while points.front().is_some_and(|&(pt, _)| pt <= horizon) {
                    points.pop_front();
                }
            }
        }
        Series::Lifetime(l) => {
            let x = f64::from_bits(v);
            l.count += 1;
            match agg {
                Aggregation::Sum(_) | Aggregation::Mean(_) => l.sum += x,
                Aggregation::Min(_) => l.min = l.min.min(x),
                Aggregation::Max(_) => l.max = l.max.max(x),
                Aggregation::DistinctCount(_) => {
                    l.distinct.insert(v);
                }
                _ => {}
            }
            if l.last.is_none_or(|(lt, _)| lt <= t) {
                l.last = Some((t, v));
            }
        }
    }
}

fn read(s: &Series, t: i64, agg: &Aggregation, window: Window, scratch: &mut HashSet<u64>) -> f64 {
    match s {
        Series::Windowed(points) => {
            let Window::Sliding { ms } = window else { return f64::NAN };
            let lo = points.partition_point(|&(pt, _)| pt <= t - ms);
            let hi = points.partition_point(|&(pt, _)| pt <= t);
            let in_window = points.range(lo..hi.max(lo));
            let nums = || in_window.clone().map(|&(_, v)| f64::from_bits(v));
            let n = hi.saturating_sub(lo);
            match agg {
                Aggregation::Count => n as f64,
                Aggregation::Sum(_) => nums().sum(),
                Aggregation::Mean(_) if n > 0 => nums().sum::<f64>() / n as f64,
                Aggregation::Min(_) if n > 0 => nums().fold(f64::INFINITY, f64::min),
                Aggregation::Max(_) if n > 0 => nums().fold(f64::NEG_INFINITY, f64::max),
                Aggregation::Last(_) if n > 0 => f64::from_bits(points[hi - 1].1),
                Aggregation::DistinctCount(_) => {
                    scratch.clear();
                    scratch.extend(in_window.map(|&(_, v)| v));
                    scratch.len() as f64
                }
                _ => f64::NAN,
            }
        }
        Series::Lifetime(l) => match agg {
            Aggregation::Count => l.count as f64,
            Aggregation::Sum(_) => l.sum,
            Aggregation::Mean(_) if l.count > 0 => l.sum / l.count as f64,
            Aggregation::Min(_) if l.count > 0 => l.min,
            Aggregation::Max(_) if l.count > 0 => l.max,
            Aggregation::Last(_) => l.last.map_or(f64::NAN, |(_, v)| f64::from_bits(v)),
            Aggregation::DistinctCount(_) => l.distinct.len() as f64,
            _ => f64::NAN,
        },
    }
}
