//! Per-entity window state and the per-event update/read.
//!
//! State is one table per entity kind. A table maps the keyed hash of an
//! entity value to that entity's series, one per feature of the kind, and
//! keeps a queue of (last seen, key) that drives expiry and, at the entity
//! cap, eviction of the least recently seen entity.
//!
//! Exactness: a read at event time `t` sees exactly the counted events with
//! time in `(t - w, t]` (lifetime: `(-inf, t]`) among those that arrived so
//! far, provided `t` is no older than the watermark (newest event time minus
//! the allowed lateness). Points older than the watermark minus the window
//! are dropped; lifetime points older than the watermark are folded into
//! running aggregates.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use riskd_core::event::Event;
use riskd_core::fields::{FieldId, Value};
use serde::{Deserialize, Serialize};
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

/// History of one feature for one entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Series {
    /// Counted points `(time, value)`, sorted by time (ties in arrival order).
    Windowed(Points),
    /// Boxed: most series are windowed, and this keeps each at 32 bytes.
    Lifetime(Box<Lifetime>),
}

/// The points of a sliding window. `cursor` marks the first point inside
/// the window as of the latest in-order read (lower edge `lower`), so reads
/// that move the window forward cost amortised O(1) instead of a search. A
/// distinct count also keeps the multiplicity of each value in
/// `points[cursor..]`. Both are rebuilt after a restore.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Points {
    points: crate::deque::Points,
    #[serde(skip)]
    cursor: usize,
    /// The window's lower edge when `cursor` was last moved.
    #[serde(skip, default = "no_edge")]
    lower: i64,
    /// Boxed: 8 bytes in every windowed series instead of 40.
    #[allow(clippy::box_collection)]
    #[serde(skip)]
    counts: Option<Box<HashMap<u64, u32, BuildHasherDefault<FoldHasher>>>>,
}

fn no_edge() -> i64 {
    i64::MIN
}

impl Default for Points {
    fn default() -> Self {
        Points { points: Default::default(), cursor: 0, lower: no_edge(), counts: None }
    }
}

impl Points {
    /// Moves the window's lower edge forward to `lower`, keeping the counts.
    fn advance(&mut self, lower: i64) {
        while self.cursor < self.points.len() && self.points[self.cursor].0 <= lower {
            if let Some(c) = &mut self.counts {
                decrement(c, self.points[self.cursor].1);
            }
            self.cursor += 1;
        }
        self.lower = lower;
    }

    fn pop_front(&mut self) {
        let Some((_, v)) = self.points.pop_front() else { return };
        if self.cursor > 0 {
            self.cursor -= 1;
        } else if let Some(c) = &mut self.counts {
            decrement(c, v);
        }
    }
}

fn decrement(c: &mut HashMap<u64, u32, BuildHasherDefault<FoldHasher>>, v: u64) {
    if let Some(n) = c.get_mut(&v) {
        *n -= 1;
        if *n == 0 {
            c.remove(&v);
        }
    }
}

/// A lifetime series: points older than the watermark are settled into
/// running aggregates; newer ones are kept so late arrivals still land
/// exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Lifetime {
    settled: Settled,
    recent: crate::deque::Points,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settled {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: i64,
    last: Option<(i64, u64)>,
    #[serde(with = "sorted_set")]
    distinct: HashSet<u64>,
}

impl Default for Settled {
    fn default() -> Self {
        Settled {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first: i64::MAX,
            last: None,
            distinct: HashSet::new(),
        }
    }
}

/// A set serialized in sorted order, so equal state gives equal bytes.
mod sorted_set {
    use std::collections::HashSet;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(set: &HashSet<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<u64> = set.iter().copied().collect();
        v.sort_unstable();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashSet<u64>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?.into_iter().collect())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entity {
    /// Newest time of an event counted for this entity.
    last_seen: i64,
    /// Time of this entity's live entry in the expiry queue.
    queued_at: i64,
    series: Box<[Series]>,
}

impl Entity {
    pub(crate) fn series_len(&self) -> usize {
        self.series.len()
    }
}

/// Keys are already keyed SipHash outputs: fold them instead of hashing again.
#[derive(Default)]
pub(crate) struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

pub(crate) type KeyMap<V> = crate::table::KeyTable<V>;

/// The features of one entity kind and their state.
pub(crate) struct Table {
    pub(crate) entity: EntityKind,
    pub(crate) features: Vec<usize>,
    /// An entity idle this long can no longer change any read; None: kept.
    expiry_ms: Option<i64>,
    /// Granularity of queue entries: an entity is re-queued at most once per
    /// this much event time.
    requeue_ms: i64,
    pub(crate) map: KeyMap<Entity>,
    pub(crate) queue: VecDeque<(i64, u128)>,
}

/// Counters about state, for metrics and `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateStats {
    /// Events later than the allowed lateness.
    pub late_events: u64,
    /// Entities dropped because no window could still see them.
    pub expired_entities: u64,
    /// Entities evicted because their kind reached `max_entities`.
    pub evicted_entities: u64,
    /// Points dropped because a window reached `max_events_per_window`.
    pub dropped_points: u64,
}

/// Feature state and evaluation for one stream of events. Owned by one
/// pipeline worker; nothing here is shared between threads.
pub struct FeatureEngine {
    pub(crate) set: Arc<FeatureSet>,
    pub(crate) keys: (u64, u64),
    pub(crate) tables: Vec<Table>,
    per_event: Vec<usize>,
    pub(crate) max_event_time: i64,
    pub(crate) stats: StateStats,
    scratch: HashSet<u64>,
    /// Per event, reused: each table's entity key and slot.
    found: Vec<(Option<u128>, Option<usize>)>,
    /// Per table, reused: what the event contributes to each feature.
    points: Vec<Option<u64>>,
}

/// Queue entries examined per event for expiry: bounded so no event pays
/// for a backlog.
const EXPIRY_STEPS: usize = 4;

impl FeatureEngine {
    /// `hash_key` keys the hashing of entity values into state keys.
    pub fn new(set: Arc<FeatureSet>, hash_key: [u8; 16]) -> Self {
        let mut tables: Vec<Table> = Vec::new();
        let mut per_event = Vec::new();
        for (i, d) in set.defs.iter().enumerate() {
            if d.entity == EntityKind::Event {
                per_event.push(i);
                continue;
            }
            match tables.iter_mut().find(|g| g.entity == d.entity) {
                Some(g) => g.features.push(i),
                None => tables.push(Table {
                    entity: d.entity,
                    features: vec![i],
                    expiry_ms: None,
                    requeue_ms: 0,
                    map: KeyMap::default(),
                    queue: VecDeque::new(),
                }),
            }
        }
        for t in &mut tables {
            let mut longest = Some(0i64);
            for &i in &t.features {
                longest = match (longest, set.defs[i].window) {
                    (Some(l), Window::Sliding { ms }) => Some(l.max(ms)),
                    _ => None,
                };
            }
            t.expiry_ms = match longest {
                // The watermark already allows for lateness.
                Some(w) => Some(w),
                None => set.limits.lifetime_idle_expiry_ms,
            };
            // Lifetime-only tables still queue for cap eviction: hourly is fine-grained enough.
            t.requeue_ms = t.expiry_ms.map_or(3_600_000, |e| (e / 8).max(1));
        }
        let k0 = u64::from_le_bytes(hash_key[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(hash_key[8..].try_into().expect("8 bytes"));
        FeatureEngine {
            set,
            keys: (k0, k1),
            tables,
            per_event,
            max_event_time: i64::MIN,
            stats: StateStats::default(),
            scratch: HashSet::new(),
            found: Vec::new(),
            points: Vec::new(),
        }
    }

    pub fn feature_set(&self) -> &FeatureSet {
        &self.set
    }

    /// Number of entities with state, over all entity kinds.
    pub fn entity_count(&self) -> usize {
        self.tables.iter().map(|t| t.map.len()).sum()
    }

    /// Entities with state per entity kind.
    pub fn entities_by_kind(&self) -> Vec<(EntityKind, usize)> {
        self.tables.iter().map(|t| (t.entity, t.map.len())).collect()
    }

    /// Events that arrived later than the allowed lateness.
    pub fn late_events(&self) -> u64 {
        self.stats.late_events
    }

    pub fn stats(&self) -> StateStats {
        self.stats
    }

    /// Newest event time seen, if any.
    pub fn max_event_time(&self) -> Option<i64> {
        (self.max_event_time != i64::MIN).then_some(self.max_event_time)
    }

    /// Adds the event to every feature that counts it, then reads every
    /// feature for this event into `out`. Returns true when the event was
    /// later than the allowed lateness.
    pub fn update(&mut self, ev: &Event, out: &mut FeatureVector) -> bool {
        out.0.clear();
        out.0.resize(self.set.defs.len(), f64::NAN);
        let set = &*self.set;
        let lateness = set.allowed_lateness_ms;
        let late = self.max_event_time != i64::MIN && ev.time_ms < self.max_event_time.saturating_sub(lateness);
        if late {
            self.stats.late_events += 1;
        }
        self.max_event_time = self.max_event_time.max(ev.time_ms);
        let watermark = self.max_event_time.saturating_sub(lateness);
        let t = ev.time_ms;
        // Expiry first; then every entity's key and a prefetch of its slot,
        // then one lookup each and a prefetch of its series, so the cache
        // misses of an event's entities overlap.
        for table in &mut self.tables {
            table.expire(watermark, &mut self.stats);
        }
        self.found.clear();
        for table in &self.tables {
            let key = entity_key(self.keys, table.entity, ev);
            if let Some(key) = key {
                table.map.prefetch(key);
            }
            self.found.push((key, None));
        }
        for ((key, slot), table) in self.found.iter_mut().zip(&self.tables) {
            *slot = key.and_then(|k| table.map.find(k));
            if let Some(i) = *slot {
                prefetch(table.map.at(i).series.as_ptr() as *const u8);
            }
        }
        for (&(key, slot), table) in self.found.iter().zip(self.tables.iter_mut()) {
            let Some(key) = key else {
                continue;
            };
            // What the event contributes to each of this table's features
            // (None: it does not count there).
            self.points.clear();
            self.points.extend(table.features.iter().map(|&i| {
                let def = &set.defs[i];
                (def.counts & ev.kind.bit() != 0 && passes(&def.filters, ev))
                    .then(|| point_value(self.keys, &def.agg, ev))
                    .flatten()
            }));
            let counted = self.points.iter().any(Option::is_some);
            let slot = match slot {
                Some(i) => i,
                None if !counted => {
                    for &i in &table.features {
                        let def = &set.defs[i];
                        out.0[def.slot] = empty_value(&def.agg);
                    }
                    continue;
                }
                None => {
                    table.make_room(set.limits.max_entities, &mut self.stats);
                    let series = table.features.iter().map(|&i| new_series(set.defs[i].window)).collect();
                    table.queue.push_back((t, key));
                    table.map.insert(key, Entity { last_seen: t, queued_at: t, series })
                }
            };
            let entity = table.map.at_mut(slot);
            prefetch_series(&entity.series);
            if counted && t > entity.last_seen {
                entity.last_seen = t;
                if t >= entity.queued_at.saturating_add(table.requeue_ms) {
                    entity.queued_at = t;
                    table.queue.push_back((t, key));
                }
            }
            for (j, &i) in table.features.iter().enumerate() {
                let def = &set.defs[i];
                let s = &mut entity.series[j];
                let point = self.points[j];
                let counts_now = point.is_some();
                if let Some(point) = point {
                    insert(
                        s,
                        t,
                        point,
                        &def.agg,
                        def.window,
                        watermark,
                        set.limits.max_events_per_window,
                        &mut self.stats,
                    );
                }
                out.0[def.slot] = read(s, t, counts_now, &def.agg, def.window, &mut self.scratch);
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

impl Table {
    /// Drops a few entities no window can still see.
    fn expire(&mut self, watermark: i64, stats: &mut StateStats) {
        let Some(expiry) = self.expiry_ms else { return };
        let cutoff = watermark.saturating_sub(expiry);
        for _ in 0..EXPIRY_STEPS {
            let Some(&(qt, key)) = self.queue.front() else { return };
            if qt > cutoff {
                return;
            }
            self.queue.pop_front();
            let Some(slot) = self.map.find(key) else { continue };
            let e = self.map.at_mut(slot);
            if e.queued_at != qt {
                continue; // a newer entry for this entity is further back
            }
            // Invisible: every read from now on starts after `cutoff`.
            if e.last_seen <= cutoff {
                self.map.remove(&key);
                stats.expired_entities += 1;
            } else {
                e.queued_at = e.last_seen;
                self.queue.push_back((e.last_seen, key));
            }
        }
    }

    /// At the cap, evicts the least recently seen entity (to within the
    /// requeue granularity). Compacts the queue when stale entries pile up.
    fn make_room(&mut self, max_entities: usize, stats: &mut StateStats) {
        if self.queue.len() > 2 * self.map.len() + 1024 {
            let mut live: Vec<(i64, u128)> = self.map.iter().map(|(k, e)| (e.queued_at, k)).collect();
            live.sort_unstable();
            self.queue = live.into();
        }
        while self.map.len() >= max_entities {
            let Some((qt, key)) = self.queue.pop_front() else { return };
            if self.map.find(key).is_some_and(|slot| self.map.at(slot).queued_at == qt) {
                self.map.remove(&key);
                stats.evicted_entities += 1;
            }
        }
    }
}

#[inline]
pub(crate) fn prefetch(p: *const u8) {
    // SAFETY: prefetching is only a hint and never faults.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU for every series' buffer at once, so their cache misses
/// overlap instead of coming one after another as the features are read.
#[inline]
fn prefetch_series(series: &[Series]) {
    for s in series {
        match s {
            Series::Windowed(w) => {
                if let Some((first, last)) = w.points.heap_ptrs() {
                    prefetch(first);
                    if let Some(last) = last {
                        prefetch(last);
                    }
                }
            }
            Series::Lifetime(l) => prefetch(&**l as *const Lifetime as *const u8),
        }
    }
}

fn new_series(window: Window) -> Series {
    match window {
        Window::Sliding { .. } => Series::Windowed(Points::default()),
        Window::Lifetime => Series::Lifetime(Box::default()),
    }
}

/// The value of a feature for an entity with no counted events.
pub(crate) fn empty_value(agg: &Aggregation) -> f64 {
    match agg {
        Aggregation::Count | Aggregation::Sum(_) | Aggregation::DistinctCount(_) => 0.0,
        _ => f64::NAN,
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

fn write_part(h: &mut SipHasher13, entity: EntityKind, ev: &Event) -> bool {
    let e = &ev.entities;
    match entity {
        EntityKind::User => h.write(e.user_id.as_bytes()),
        EntityKind::Device => match &e.device_id {
            Some(d) => h.write(d.as_bytes()),
            None => return false,
        },
        EntityKind::Ip | EntityKind::Ip24 => {
            let Some(ip) = e.ip else { return false };
            let prefix = entity == EntityKind::Ip24;
            match ip {
                IpAddr::V4(v4) => h.write(&v4.octets()[..if prefix { 3 } else { 4 }]),
                IpAddr::V6(v6) => h.write(&v6.octets()[..if prefix { 8 } else { 16 }]),
            }
        }
        EntityKind::Phone => match e.phone {
            Some(p) => h.write(&p.0),
            None => return false,
        },
        EntityKind::IdNumber => match e.id_number {
            Some(p) => h.write(&p.0),
            None => return false,
        },
        EntityKind::BankCard => match e.bank_card {
            Some(p) => h.write(&p.0),
            None => return false,
        },
        EntityKind::Event | EntityKind::Composite(_) => return false,
    }
    // Separates the parts of a composite.
    h.write_u8(0xff);
    true
}

/// The state key of the event's entity of this kind: a keyed hash, so state
/// never holds the clear value. None when the event lacks the entity.
pub(crate) fn entity_key(keys: (u64, u64), entity: EntityKind, ev: &Event) -> Option<u128> {
    let mut h = SipHasher13::new_with_keys(keys.0, keys.1);
    match entity {
        EntityKind::Event => return None,
        EntityKind::Composite(mask) => {
            h.write_u8(0x80 | mask);
            for part in entity.parts() {
                if !write_part(&mut h, part, ev) {
                    return None;
                }
            }
        }
        base => {
            h.write_u8(EntityKind::BASE.iter().position(|b| *b == base).unwrap_or(0) as u8);
            if !write_part(&mut h, base, ev) {
                return None;
            }
        }
    }
    Some(h.finish128().as_u128())
}

/// The value a counted event contributes: numbers as f64 bits, anything
/// else (distinct counts) as a keyed 64-bit hash. None: the field is
/// missing, so the event does not contribute.
fn point_value(keys: (u64, u64), agg: &Aggregation, ev: &Event) -> Option<u64> {
    let field = match agg {
        Aggregation::Count | Aggregation::TimeSince { .. } | Aggregation::FirstSeen { .. } => return Some(0),
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
    let mut h = siphasher::sip::SipHasher13::new_with_keys(keys.1, keys.0);
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

/// Inserts keeping time order; equal times keep arrival order. Returns the position.
fn insert_sorted(points: &mut crate::deque::Points, t: i64, v: u64) -> usize {
    if points.back().is_none_or(|&(last, _)| last <= t) {
        points.push_back((t, v));
        points.len() - 1
    } else {
        let at = points.partition_point(|&(pt, _)| pt <= t);
        points.insert(at, (t, v));
        at
    }
}

#[allow(clippy::too_many_arguments)]
fn insert(
    s: &mut Series,
    t: i64,
    v: u64,
    agg: &Aggregation,
    window: Window,
    watermark: i64,
    max_points: usize,
    stats: &mut StateStats,
) {
    match s {
        Series::Windowed(w) => {
            insert_sorted(&mut w.points, t, v);
            if t <= w.lower {
                w.cursor += 1; // behind the window's edge
            } else if let Some(c) = &mut w.counts {
                *c.entry(v).or_insert(0) += 1;
            }
            if let Window::Sliding { ms } = window {
                // No read at or after the watermark can see these points.
                let horizon = watermark.saturating_sub(ms);
                while w.points.front().is_some_and(|&(pt, _)| pt <= horizon) {
                    w.pop_front();
                }
            }
            while w.points.len() > max_points {
                w.pop_front();
                stats.dropped_points += 1;
            }
        }
        Series::Lifetime(l) => {
            insert_sorted(&mut l.recent, t, v);
            // Every read at or after the watermark sees these points. Strictly
            // older only, so an on-time event is still in `recent` when read.
            while l.recent.front().is_some_and(|&(pt, _)| pt < watermark) {
                let (pt, pv) = l.recent.pop_front().expect("checked");
                settle(&mut l.settled, pt, pv, agg);
            }
        }
    }
}

fn settle(s: &mut Settled, t: i64, v: u64, agg: &Aggregation) {
    let x = f64::from_bits(v);
    s.count += 1;
    match agg {
        Aggregation::Sum(_) | Aggregation::Mean(_) => s.sum += x,
        Aggregation::Min(_) => s.min = s.min.min(x),
        Aggregation::Max(_) => s.max = s.max.max(x),
        Aggregation::DistinctCount(_) => {
            s.distinct.insert(v);
        }
        _ => {}
    }
    s.first = s.first.min(t);
    if s.last.is_none_or(|(lt, _)| lt <= t) {
        s.last = Some((t, v));
    }
}

/// Windows up to this many points count distinct values by rescanning.
const SMALL_WINDOW: usize = 16;

/// Distinct values among a few, without hashing or allocating.
fn distinct_small(values: impl Iterator<Item = u64> + Clone) -> f64 {
    let mut n = 0usize;
    for (i, v) in values.clone().enumerate() {
        if !values.clone().take(i).any(|u| u == v) {
            n += 1;
        }
    }
    n as f64
}

/// Distinct values in `points[cursor..]`, kept incrementally once built.
fn distinct_in_window(w: &mut Points) -> f64 {
    let counts = match &mut w.counts {
        Some(c) => c,
        None => {
            let mut c: Box<HashMap<u64, u32, BuildHasherDefault<FoldHasher>>> = Box::default();
            for &(_, v) in w.points.range(w.cursor..) {
                *c.entry(v).or_insert(0) += 1;
            }
            w.counts.insert(c)
        }
    };
    counts.len() as f64
}

fn per_unit(ms: i64, unit_ms: i64) -> f64 {
    ms as f64 / unit_ms as f64
}

/// Reads a feature at time `t`; `counts_now` says the current event was
/// just inserted (it is then the last point at `t`).
fn read(
    s: &mut Series,
    t: i64,
    counts_now: bool,
    agg: &Aggregation,
    window: Window,
    scratch: &mut HashSet<u64>,
) -> f64 {
    match s {
        Series::Windowed(w) => {
            let Window::Sliding { ms } = window else { return f64::NAN };
            // Reads that move the window forward use the cursor; a read at an
            // earlier time (an out-of-order event) searches.
            let forward = w.points.back().is_none_or(|&(last, _)| last <= t) && t - ms >= w.lower;
            if forward {
                w.advance(t - ms);
                if let Aggregation::DistinctCount(_) = agg {
                    // Small windows are cheaper to rescan than to keep counts for.
                    if w.counts.is_none() && w.points.len() - w.cursor <= SMALL_WINDOW {
                        return distinct_small(w.points.range(w.cursor..).map(|&(_, v)| v));
                    }
                    return distinct_in_window(w);
                }
            }
            let points = &w.points;
            let (lo, hi) = if forward {
                (w.cursor, points.len())
            } else {
                let lo = points.partition_point(|&(pt, _)| pt <= t - ms);
                (lo, points.partition_point(|&(pt, _)| pt <= t).max(lo))
            };
            let in_window = points.range(lo..hi);
            let nums = || in_window.clone().map(|&(_, v)| f64::from_bits(v));
            let n = hi - lo;
            match agg {
                Aggregation::Count => n as f64,
                Aggregation::Sum(_) => nums().fold(0.0, |a, x| a + x),
                Aggregation::Mean(_) if n > 0 => nums().fold(0.0, |a, x| a + x) / n as f64,
                Aggregation::Min(_) if n > 0 => nums().fold(f64::INFINITY, f64::min),
                Aggregation::Max(_) if n > 0 => nums().fold(f64::NEG_INFINITY, f64::max),
                Aggregation::Last(_) if n > 0 => f64::from_bits(points[hi - 1].1),
                Aggregation::DistinctCount(_) => {
                    scratch.clear();
                    scratch.extend(in_window.map(|&(_, v)| v));
                    scratch.len() as f64
                }
                Aggregation::TimeSince { unit_ms } => {
                    let prev = if counts_now { hi.checked_sub(2) } else { hi.checked_sub(1) };
                    match prev {
                        Some(p) if p >= lo => per_unit(t - points[p].0, *unit_ms),
                        _ => f64::NAN,
                    }
                }
                Aggregation::FirstSeen { unit_ms } if n > 0 => per_unit(t - points[lo].0, *unit_ms),
                _ => f64::NAN,
            }
        }
        Series::Lifetime(l) => {
            let l = &**l;
            let st = &l.settled;
            let hi = l.recent.partition_point(|&(pt, _)| pt <= t);
            let recent = l.recent.range(..hi);
            let nums = || recent.clone().map(|&(_, v)| f64::from_bits(v));
            let n = st.count + hi as u64;
            match agg {
                Aggregation::Count => n as f64,
                Aggregation::Sum(_) => nums().fold(st.sum, |a, x| a + x),
                Aggregation::Mean(_) if n > 0 => nums().fold(st.sum, |a, x| a + x) / n as f64,
                Aggregation::Min(_) if n > 0 => nums().fold(st.min, f64::min),
                Aggregation::Max(_) if n > 0 => nums().fold(st.max, f64::max),
                Aggregation::Last(_) => match hi {
                    0 => st.last.map_or(f64::NAN, |(_, v)| f64::from_bits(v)),
                    _ => f64::from_bits(l.recent[hi - 1].1),
                },
                Aggregation::DistinctCount(_) => {
                    scratch.clear();
                    scratch.extend(recent.map(|&(_, v)| v).filter(|v| !st.distinct.contains(v)));
                    (st.distinct.len() + scratch.len()) as f64
                }
                Aggregation::TimeSince { unit_ms } => {
                    let prev = if counts_now { hi.checked_sub(2) } else { hi.checked_sub(1) };
                    let prev_time = match prev {
                        Some(p) => Some(l.recent[p].0),
                        // Nothing earlier in `recent`: the newest settled point, unless
                        // the only candidate there is the current event itself.
                        None if counts_now && hi == 0 => None,
                        None => st.last.map(|(lt, _)| lt).filter(|&lt| lt <= t),
                    };
                    prev_time.map_or(f64::NAN, |p| per_unit(t - p, *unit_ms))
                }
                Aggregation::FirstSeen { unit_ms } if n > 0 => {
                    let first = if st.count > 0 { st.first } else { l.recent[0].0 };
                    per_unit(t - first, *unit_ms)
                }
                _ => f64::NAN,
            }
        }
    }
}
