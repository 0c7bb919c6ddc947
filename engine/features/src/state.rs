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

use std::collections::{HashSet, VecDeque};
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use riskd_core::event::Event;
use riskd_core::fields::{FieldId, Value};
use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::capture::{Capture, TableCapture};
use crate::def::{Aggregation, EntityKind, FeatureSet, FilterValue, Operand, Window};
use crate::table::CountTable;

/// One value per feature slot for one event; NaN means missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureVector(pub Vec<f64>);

impl FeatureVector {
    pub fn get(&self, slot: usize) -> f64 {
        self.0.get(slot).copied().unwrap_or(f64::NAN)
    }
}

/// History of one feature for one entity: its points `(time, value)`,
/// sorted by time (ties in arrival order), and what its window keeps beside
/// them. 64 bytes, with no box of its own: an entity's series sit side by
/// side in one allocation, so reading one costs a cache line unless its
/// window holds more than two points.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Series {
    points: crate::deque::Points,
    state: State,
}

/// No time: a lifetime `last` that has settled nothing yet.
const NEVER: i64 = i64::MIN;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum State {
    /// A sliding window. `cursor` marks the first point inside the window
    /// as of the latest in-order read (lower edge `lower`), so reads that
    /// move the window forward cost amortised O(1) instead of a search. A
    /// distinct count also keeps the multiplicity of each value in
    /// `points[cursor..]`. All three are rebuilt after a restore.
    Window {
        #[serde(skip)]
        cursor: u32,
        #[serde(skip, default = "no_edge")]
        lower: i64,
        #[serde(skip)]
        counts: Option<Box<CountTable>>,
    },
    // A lifetime feature: points older than the watermark are settled into
    // one of these running aggregates, the aggregation's own; newer ones
    // stay in `points`, so late arrivals still land exactly.
    Count(u64),
    /// Sum and mean.
    Sum {
        count: u64,
        sum: f64,
    },
    Min {
        count: u64,
        min: f64,
    },
    Max {
        count: u64,
        max: f64,
    },
    /// The newest settled point; `time` is [`NEVER`] until one settles.
    Last {
        time: i64,
        value: u64,
    },
    /// Time of the newest settled point (time since).
    Newest(Option<i64>),
    /// Time of the oldest settled point (first seen).
    Oldest(Option<i64>),
    Distinct(#[serde(with = "sorted_set")] Box<HashSet<u64>>),
}

fn no_edge() -> i64 {
    i64::MIN
}

impl Series {
    pub(crate) fn new(agg: &Aggregation, window: Window) -> Series {
        let state = match (window, agg) {
            (Window::Sliding { .. }, _) => State::Window { cursor: 0, lower: no_edge(), counts: None },
            (Window::Lifetime, Aggregation::Sum(_) | Aggregation::Mean(_)) => State::Sum { count: 0, sum: 0.0 },
            (Window::Lifetime, Aggregation::Min(_)) => State::Min { count: 0, min: f64::INFINITY },
            (Window::Lifetime, Aggregation::Max(_)) => State::Max { count: 0, max: f64::NEG_INFINITY },
            (Window::Lifetime, Aggregation::Last(_)) => State::Last { time: NEVER, value: 0 },
            (Window::Lifetime, Aggregation::TimeSince { .. }) => State::Newest(None),
            (Window::Lifetime, Aggregation::FirstSeen { .. }) => State::Oldest(None),
            (Window::Lifetime, Aggregation::DistinctCount(_)) => State::Distinct(Box::default()),
            (Window::Lifetime, Aggregation::Count | Aggregation::Ratio(..)) => State::Count(0),
        };
        Series { points: Default::default(), state }
    }

    /// Whether this series has the shape a feature with `agg` and `window`
    /// keeps (a restored snapshot is checked with it).
    pub(crate) fn fits(&self, agg: &Aggregation, window: Window) -> bool {
        std::mem::discriminant(&self.state) == std::mem::discriminant(&Series::new(agg, window).state)
    }

    /// Drops the oldest point, keeping a window's cursor and counts.
    fn pop_front(&mut self) -> Option<(i64, u64)> {
        let (t, v) = self.points.pop_front()?;
        if let State::Window { cursor, counts, .. } = &mut self.state {
            if *cursor > 0 {
                *cursor -= 1;
            } else if let Some(c) = counts {
                c.decrement(v);
            }
        }
        Some((t, v))
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

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<HashSet<u64>>, D::Error> {
        Ok(Box::new(Vec::<u64>::deserialize(d)?.into_iter().collect()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entity {
    /// Newest time of an event counted for this entity.
    last_seen: i64,
    /// Time of this entity's live entry in the expiry queue.
    queued_at: i64,
    series: Box<[Series]>,
    /// The snapshot capture this entity was last encoded in (`capture`).
    #[serde(skip)]
    pub(crate) epoch: u32,
}

impl Entity {
    /// Whether the entity holds one series of the right shape for each of
    /// `features` (a restored snapshot is checked with it).
    pub(crate) fn fits(&self, set: &FeatureSet, features: &[usize]) -> bool {
        self.series.len() == features.len()
            && self.series.iter().zip(features).all(|(s, &i)| s.fits(&set.defs[i].agg, set.defs[i].window))
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
    /// The current capture epoch, and this table's part of a capture in progress.
    pub(crate) epoch: u32,
    pub(crate) capture: Option<TableCapture>,
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
    /// Per event, reused: each table's entity key, slot, and where its
    /// features' points start in `points`.
    found: Vec<(Option<u128>, Option<usize>, usize)>,
    /// Per event, reused: what the event contributes to each feature of
    /// each table with an entity in the event.
    points: Vec<Option<u64>>,
    /// Per event, reused: the fields hashed for distinct counts so far, so
    /// a field counted by several features is hashed once.
    hashed: Vec<(FieldId, Option<u64>)>,
    /// Entity fields (`entity.user_id`, ...) with the table keyed by their
    /// kind, if any: a distinct count of such a field counts the entity
    /// keys already computed for the event, instead of hashing the value
    /// again.
    entity_fields: Vec<(FieldId, EntityKind, Option<usize>)>,
    /// A snapshot being encoded between events, and the epoch it marks
    /// encoded entities with (see `capture`).
    pub(crate) capture: Option<Capture>,
    pub(crate) epoch: u32,
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
                    epoch: 0,
                    capture: None,
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
        let entity_fields = [
            ("entity.user_id", EntityKind::User),
            ("entity.device_id", EntityKind::Device),
            ("entity.ip", EntityKind::Ip),
        ]
        .into_iter()
        .filter_map(|(name, kind)| {
            let field = FieldId::lookup(name)?;
            let counted = set.defs.iter().any(|d| matches!(d.agg, Aggregation::DistinctCount(f) if f == field));
            counted.then(|| (field, kind, tables.iter().position(|t| t.entity == kind)))
        })
        .collect();
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
            hashed: Vec::new(),
            entity_fields,
            capture: None,
            epoch: 0,
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
        self.hashed.clear();
        self.points.clear();
        for table in &self.tables {
            let key = entity_key(self.keys, table.entity, ev);
            if let Some(key) = key {
                table.map.prefetch(key);
            }
            self.found.push((key, None, 0));
        }
        // Distinct counts of an entity field count that entity's key.
        for &(field, kind, table) in &self.entity_fields {
            let key = match table {
                Some(i) => self.found[i].0,
                None => entity_key(self.keys, kind, ev),
            };
            self.hashed.push((field, key.map(|k| k as u64 ^ (k >> 64) as u64)));
        }
        for ((key, slot, _), table) in self.found.iter_mut().zip(&self.tables) {
            *slot = key.and_then(|k| table.map.find(k));
            if let Some(i) = *slot {
                prefetch_lines(&table.map.at(i).series);
            }
        }
        // While the series arrive: what the event contributes to each
        // feature of each table (None: it does not count there).
        for ((key, _, at), table) in self.found.iter_mut().zip(&self.tables) {
            *at = self.points.len();
            if key.is_some() {
                self.points.extend(table.features.iter().map(|&i| {
                    let def = &set.defs[i];
                    (def.counts & ev.kind.bit() != 0 && passes(&def.filters, ev))
                        .then(|| point_value(self.keys, &def.agg, ev, &mut self.hashed))
                        .flatten()
                }));
            }
        }
        // Then what the series point to, for all entities at once.
        for (&(_, slot, at), table) in self.found.iter().zip(&self.tables) {
            if let Some(i) = slot {
                prefetch_series(&table.map.at(i).series, &self.points[at..]);
            }
        }
        for (&(key, slot, at), table) in self.found.iter().zip(self.tables.iter_mut()) {
            let Some(key) = key else {
                continue;
            };
            let points = &self.points[at..at + table.features.len()];
            let counted = points.iter().any(Option::is_some);
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
                    let series =
                        table.features.iter().map(|&i| Series::new(&set.defs[i].agg, set.defs[i].window)).collect();
                    table.queue.push_back((t, key));
                    // Born after any capture in progress began: not part of it.
                    let entity = Entity { last_seen: t, queued_at: t, series, epoch: table.epoch };
                    let slots = table.map.capacity();
                    let slot = table.map.insert(key, entity);
                    if table.map.capacity() != slots {
                        if let Some(c) = &mut table.capture {
                            c.restart_walk();
                        }
                    }
                    slot
                }
            };
            let epoch = table.epoch;
            let entity = table.map.at_mut(slot);
            if let Some(c) = &mut table.capture {
                // Encoded as it was before this event changes it.
                c.keep(epoch, key, entity);
            }
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
                let point = points[j];
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
            self.pop_queue();
            let Some(slot) = self.map.find(key) else { continue };
            let e = self.map.at_mut(slot);
            if e.queued_at != qt {
                continue; // a newer entry for this entity is further back
            }
            // Invisible: every read from now on starts after `cutoff`.
            if e.last_seen <= cutoff {
                self.remove_entity(key);
                stats.expired_entities += 1;
            } else {
                if let Some(c) = &mut self.capture {
                    c.keep(self.epoch, key, e);
                }
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
            if let Some(c) = &mut self.capture {
                c.before_rebuild(&self.queue);
            }
            self.queue = live.into();
        }
        while self.map.len() >= max_entities {
            let Some((qt, key)) = self.pop_queue() else { return };
            if self.map.find(key).is_some_and(|slot| self.map.at(slot).queued_at == qt) {
                self.remove_entity(key);
                stats.evicted_entities += 1;
            }
        }
    }

    /// Pops the expiry queue's front entry (a capture in progress encodes it first).
    fn pop_queue(&mut self) -> Option<(i64, u128)> {
        if let Some(c) = &mut self.capture {
            c.before_pop(&self.queue);
        }
        self.queue.pop_front()
    }

    /// Drops an entity. A capture in progress encodes it first if it has
    /// not yet, and any entity the deletion moves behind its walk.
    fn remove_entity(&mut self, key: u128) {
        let epoch = self.epoch;
        match &mut self.capture {
            None => {
                self.map.remove(&key);
            }
            Some(cap) => {
                if let Some(slot) = self.map.find(key) {
                    cap.keep(epoch, key, self.map.at_mut(slot));
                }
                self.map.remove_tracking(&key, |slot, k, e| {
                    if cap.passed(slot) {
                        cap.keep(epoch, k, e);
                    }
                });
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

/// Asks the CPU for every cache line of a slice.
#[inline]
fn prefetch_lines<T>(items: &[T]) {
    let start = items.as_ptr() as *const u8;
    for off in (0..std::mem::size_of_val(items)).step_by(64) {
        // SAFETY: stays inside the slice's own allocation.
        prefetch(unsafe { start.add(off) });
    }
}

/// Asks the CPU for every series' points buffer, and for the distinct-count
/// slot each new point will land in, at once, so their cache misses overlap
/// instead of coming one after another as they are read.
#[inline]
fn prefetch_series(series: &[Series], points: &[Option<u64>]) {
    for (s, point) in series.iter().zip(points) {
        if let Some((first, last)) = s.points.heap_ptrs() {
            prefetch(first);
            prefetch(last);
        }
        if let (State::Window { counts: Some(c), .. }, Some(v)) = (&s.state, point) {
            c.prefetch(*v);
        }
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
/// missing, so the event does not contribute. `hashed` remembers the
/// event's hashed fields.
fn point_value(
    keys: (u64, u64),
    agg: &Aggregation,
    ev: &Event,
    hashed: &mut Vec<(FieldId, Option<u64>)>,
) -> Option<u64> {
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
        Aggregation::DistinctCount(f) => *f,
    };
    if let Some(&(_, v)) = hashed.iter().find(|(f, _)| *f == field) {
        return v;
    }
    let v = distinct_value(keys, field, ev);
    hashed.push((field, v));
    v
}

/// A field's value as a keyed 64-bit hash, for distinct counts.
fn distinct_value(keys: (u64, u64), field: FieldId, ev: &Event) -> Option<u64> {
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

/// Inserts keeping time order; equal times keep arrival order.
#[inline]
fn insert_sorted(points: &mut crate::deque::Points, t: i64, v: u64) {
    if points.back().is_none_or(|&(last, _)| last <= t) {
        points.push_back((t, v));
    } else {
        let at = points.partition_point(|&(pt, _)| pt <= t);
        points.insert(at, (t, v));
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
    insert_sorted(&mut s.points, t, v);
    match (&mut s.state, window) {
        (State::Window { cursor, lower, counts }, Window::Sliding { ms }) => {
            if t <= *lower {
                *cursor += 1; // behind the window's edge
            } else if let Some(c) = counts {
                c.increment(v);
            }
            // No read at or after the watermark can see these points.
            let horizon = watermark.saturating_sub(ms);
            while s.points.front().is_some_and(|&(pt, _)| pt <= horizon) {
                s.pop_front();
            }
            while s.points.len() > max_points {
                s.pop_front();
                stats.dropped_points += 1;
            }
        }
        _ => {
            // Every read at or after the watermark sees these points. Strictly
            // older only, so an on-time event is still in `points` when read.
            while s.points.front().is_some_and(|&(pt, _)| pt < watermark) {
                let (pt, pv) = s.points.pop_front().expect("checked");
                settle(&mut s.state, pt, pv, agg);
            }
        }
    }
}

/// Folds a lifetime point into its running aggregate.
fn settle(state: &mut State, t: i64, v: u64, agg: &Aggregation) {
    let x = f64::from_bits(v);
    match state {
        State::Count(n) => *n += 1,
        State::Sum { count, sum } => {
            *count += 1;
            *sum += x;
        }
        State::Min { count, min } => {
            *count += 1;
            *min = min.min(x);
        }
        State::Max { count, max } => {
            *count += 1;
            *max = max.max(x);
        }
        State::Last { time, value } => {
            if *time <= t {
                (*time, *value) = (t, v);
            }
        }
        State::Newest(newest) => *newest = Some(newest.map_or(t, |n| n.max(t))),
        State::Oldest(oldest) => *oldest = Some(oldest.map_or(t, |o| o.min(t))),
        State::Distinct(set) => {
            set.insert(v);
        }
        State::Window { .. } => debug_assert!(false, "a sliding window never settles ({agg:?})"),
    }
}

/// Windows up to this many points count distinct values by rescanning.
const SMALL_WINDOW: usize = 16;

/// Distinct values among a few, without hashing or allocating.
fn distinct_small(points: &[(i64, u64)]) -> f64 {
    let mut n = 0usize;
    for (i, &(_, v)) in points.iter().enumerate() {
        if !points[..i].iter().any(|&(_, u)| u == v) {
            n += 1;
        }
    }
    n as f64
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
    let points = s.points.as_slice();
    let (lo, hi) = match (&mut s.state, window) {
        (State::Window { cursor, lower, counts }, Window::Sliding { ms }) => {
            // Reads that move the window forward use the cursor; a read at an
            // earlier time (an out-of-order event) searches.
            let forward = points.last().is_none_or(|&(last, _)| last <= t) && t - ms >= *lower;
            if !forward {
                let lo = points.partition_point(|&(pt, _)| pt <= t - ms);
                (lo, points.partition_point(|&(pt, _)| pt <= t).max(lo))
            } else {
                // Move the lower edge forward to `t - ms`, keeping the counts.
                let mut c = *cursor as usize;
                while c < points.len() && points[c].0 <= t - ms {
                    if let Some(counts) = counts {
                        counts.decrement(points[c].1);
                    }
                    c += 1;
                }
                *cursor = c as u32;
                *lower = t - ms;
                if let Aggregation::DistinctCount(_) = agg {
                    // Small windows are cheaper to rescan than to keep counts for.
                    if counts.is_none() && points.len() - c <= SMALL_WINDOW {
                        return distinct_small(&points[c..]);
                    }
                    let counts = counts.get_or_insert_with(|| {
                        let mut m: Box<CountTable> = Box::default();
                        for &(_, v) in &points[c..] {
                            m.increment(v);
                        }
                        m
                    });
                    return counts.len() as f64;
                }
                (c, points.len())
            }
        }
        (State::Window { .. }, Window::Lifetime) | (_, Window::Sliding { .. }) => return f64::NAN,
        // Lifetime: the settled aggregate, then the recent points up to `t`.
        (_, Window::Lifetime) => (0, points.partition_point(|&(pt, _)| pt <= t)),
    };
    let in_range = points[lo..hi].iter();
    let nums = || in_range.clone().map(|&(_, v)| f64::from_bits(v));
    let n = (hi - lo) as u64;
    match (agg, &s.state) {
        (Aggregation::Count, State::Window { .. }) => n as f64,
        (Aggregation::Count, State::Count(c)) => (c + n) as f64,
        (Aggregation::Sum(_), State::Window { .. }) => nums().fold(0.0, |a, x| a + x),
        (Aggregation::Sum(_), State::Sum { sum, .. }) => nums().fold(*sum, |a, x| a + x),
        (Aggregation::Mean(_), State::Window { .. }) if n > 0 => nums().fold(0.0, |a, x| a + x) / n as f64,
        (Aggregation::Mean(_), State::Sum { count, sum }) if count + n > 0 => {
            nums().fold(*sum, |a, x| a + x) / (count + n) as f64
        }
        (Aggregation::Min(_), State::Window { .. }) if n > 0 => nums().fold(f64::INFINITY, f64::min),
        (Aggregation::Min(_), State::Min { count, min }) if count + n > 0 => nums().fold(*min, f64::min),
        (Aggregation::Max(_), State::Window { .. }) if n > 0 => nums().fold(f64::NEG_INFINITY, f64::max),
        (Aggregation::Max(_), State::Max { count, max }) if count + n > 0 => nums().fold(*max, f64::max),
        (Aggregation::Last(_), State::Window { .. }) if n > 0 => f64::from_bits(points[hi - 1].1),
        (Aggregation::Last(_), State::Last { time, value }) => match hi {
            0 if *time == NEVER => f64::NAN,
            0 => f64::from_bits(*value),
            _ => f64::from_bits(points[hi - 1].1),
        },
        (Aggregation::DistinctCount(_), State::Window { .. }) => {
            scratch.clear();
            scratch.extend(in_range.map(|&(_, v)| v));
            scratch.len() as f64
        }
        (Aggregation::DistinctCount(_), State::Distinct(set)) => {
            scratch.clear();
            scratch.extend(in_range.map(|&(_, v)| v).filter(|v| !set.contains(v)));
            (set.len() + scratch.len()) as f64
        }
        (Aggregation::TimeSince { unit_ms }, state) => {
            // The previous counted point: the one before the current event
            // when it was just inserted (it is then the last at `t`).
            let prev = if counts_now { hi.checked_sub(2) } else { hi.checked_sub(1) };
            let prev_time = match (prev, state) {
                (Some(p), _) if p >= lo => Some(points[p].0),
                // Nothing earlier among the points: the newest settled one, unless
                // the only candidate there is the current event itself.
                (_, State::Newest(newest)) if !(counts_now && hi == 0) => newest.filter(|&nt| nt <= t),
                _ => None,
            };
            prev_time.map_or(f64::NAN, |p| per_unit(t - p, *unit_ms))
        }
        (Aggregation::FirstSeen { unit_ms }, State::Window { .. }) if n > 0 => per_unit(t - points[lo].0, *unit_ms),
        (Aggregation::FirstSeen { unit_ms }, State::Oldest(oldest)) => match (oldest, n) {
            (Some(first), _) => per_unit(t - first, *unit_ms),
            (None, 0) => f64::NAN,
            (None, _) => per_unit(t - points[0].0, *unit_ms),
        },
        _ => f64::NAN,
    }
}

// Every series is one 64-byte line's worth of state (see `Series`).
const _: () = assert!(std::mem::size_of::<Series>() == 64);
