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

use riskd_core::event::{Event, KindMask};
use riskd_core::fields::{FieldId, Value};
use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::capture::{Capture, TableCapture};
use crate::def::{Aggregation, EntityKind, FeatureSet, FilterValue, Operand, Window};
use crate::deque::{Item, Point, Points};
use crate::table::CountTable;

/// One value per feature slot for one event; NaN means missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureVector(pub Vec<f64>);

impl FeatureVector {
    pub fn get(&self, slot: usize) -> f64 {
        self.0.get(slot).copied().unwrap_or(f64::NAN)
    }
}

/// A feature of an entity table compiled for the per-event loop: what
/// `update` needs from its definition, in one small value, with the
/// aggregation and the window resolved once instead of on every event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    /// The definition (`FeatureSet::defs`) when it has filters an event
    /// must pass.
    filtered: Option<u32>,
    /// Where the value goes in the feature vector.
    slot: usize,
    /// The event kinds it counts.
    counts: KindMask,
    /// What a counted event contributes.
    input: Input,
    agg: Agg,
    /// The sliding window's length; None: lifetime.
    window_ms: Option<i64>,
    /// The value for an entity with no counted events.
    empty: f64,
}

/// What a counted event contributes to a series.
#[derive(Clone, Copy, Debug)]
enum Input {
    /// Its time only (the point's value is 0).
    Time,
    /// A number field, as f64 bits; an event without it does not count.
    Num(FieldId),
    /// A field's keyed hash, for distinct counts.
    Hashed(FieldId),
    /// Nothing (a ratio, computed per event).
    Nothing,
}

/// An aggregation without its field (the [`Input`] holds that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agg {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Last,
    Distinct,
    TimeSince { unit_ms: i64 },
    FirstSeen { unit_ms: i64 },
    Ratio,
}

/// An aggregation split into what it computes and what it takes from a
/// counted event.
fn compile(agg: &Aggregation) -> (Agg, Input) {
    match *agg {
        Aggregation::Count => (Agg::Count, Input::Time),
        Aggregation::Sum(f) => (Agg::Sum, Input::Num(f)),
        Aggregation::Mean(f) => (Agg::Mean, Input::Num(f)),
        Aggregation::Min(f) => (Agg::Min, Input::Num(f)),
        Aggregation::Max(f) => (Agg::Max, Input::Num(f)),
        Aggregation::Last(f) => (Agg::Last, Input::Num(f)),
        Aggregation::DistinctCount(f) => (Agg::Distinct, Input::Hashed(f)),
        Aggregation::TimeSince { unit_ms } => (Agg::TimeSince { unit_ms }, Input::Time),
        Aggregation::FirstSeen { unit_ms } => (Agg::FirstSeen { unit_ms }, Input::Time),
        Aggregation::Ratio(..) => (Agg::Ratio, Input::Nothing),
    }
}

impl Op {
    fn new(def: usize, d: &crate::def::FeatureDef) -> Op {
        let (agg, input) = compile(&d.agg);
        Op {
            filtered: (!d.filters.is_empty()).then(|| u32::try_from(def).expect("fewer than 2^32 features")),
            slot: d.slot,
            counts: d.counts,
            input,
            agg,
            window_ms: match d.window {
                Window::Sliding { ms } => Some(ms),
                Window::Lifetime => None,
            },
            empty: empty_value(&d.agg),
        }
    }
}

impl Input {
    /// What the event contributes; None: it lacks the field, so it does
    /// not count. `hashed` remembers the event's hashed fields.
    #[inline]
    fn value(self, keys: (u64, u64), ev: &Event, hashed: &mut Vec<(FieldId, Option<u64>)>) -> Option<u64> {
        match self {
            Input::Time => Some(0),
            Input::Num(f) => {
                let v = f.get(ev).num_or_nan();
                (!v.is_nan()).then(|| v.to_bits())
            }
            Input::Hashed(field) => {
                if let Some(&(_, v)) = hashed.iter().find(|(f, _)| *f == field) {
                    return v;
                }
                let v = distinct_value(keys, field, ev);
                hashed.push((field, v));
                v
            }
            Input::Nothing => None,
        }
    }
}

/// History of one feature for one entity: its points `(time, value)`
/// (times alone for a sliding count, time since or first seen), sorted by
/// time (ties in arrival order), and what its window keeps beside them. 64
/// bytes, with no box of its own: an entity's series sit side by side in
/// one allocation, so reading one costs a cache line unless its window
/// holds more than two pairs or four times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Series {
    points: Points,
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
    /// Boxed: a set inline (48 bytes) would take every series past one
    /// cache line.
    #[allow(clippy::box_collection)]
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
        // Sliding windows whose events contribute their time only keep
        // times alone (their points' values would all be 0).
        let times = matches!(window, Window::Sliding { .. }) && matches!(compile(agg).1, Input::Time);
        Series { points: if times { Points::times() } else { Points::default() }, state }
    }

    /// Whether this restored series has the shape a feature with `agg` and
    /// `window` keeps; its points move to that feature's layout (a
    /// snapshot writes every point as a pair).
    fn restore(&mut self, agg: &Aggregation, window: Window) -> bool {
        let want = Series::new(agg, window);
        std::mem::discriminant(&self.state) == std::mem::discriminant(&want.state)
            && (!want.points.holds_times() || self.points.make_times())
    }

    /// Adds the event's point, if it counts, to a sliding window of `ms`,
    /// then reads the window at `t`, on one view of the points, in the
    /// layout the series keeps.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn slide(
        &mut self,
        agg: Agg,
        ms: i64,
        t: i64,
        point: Option<u64>,
        watermark: i64,
        max_points: usize,
        stats: &mut StateStats,
        scratch: &mut HashSet<u64>,
    ) -> f64 {
        if self.points.holds_times() {
            self.slide_in::<i64>(agg, ms, t, point, watermark, max_points, stats, scratch)
        } else {
            self.slide_in::<Point>(agg, ms, t, point, watermark, max_points, stats, scratch)
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn slide_in<T: Item>(
        &mut self,
        agg: Agg,
        ms: i64,
        t: i64,
        point: Option<u64>,
        watermark: i64,
        max_points: usize,
        stats: &mut StateStats,
        scratch: &mut HashSet<u64>,
    ) -> f64 {
        let Series { points, state } = self;
        let State::Window { cursor, lower, counts } = state else {
            debug_assert!(false, "a sliding window keeps a window state");
            return f64::NAN;
        };
        if let Some(v) = point {
            insert_sorted(points, T::new(t, v));
            if t <= *lower {
                *cursor += 1; // behind the window's edge
            } else if let Some(c) = counts {
                c.increment(v);
            }
            // No read at or after the watermark can see points at or before
            // the horizon; beyond `max_points` the oldest go too.
            let horizon = watermark.saturating_sub(ms);
            let live = points.as_slice::<T>();
            let old = live.iter().take_while(|p| p.time() <= horizon).count();
            let over = (live.len() - old).saturating_sub(max_points);
            let drop = old + over;
            if drop > 0 {
                // Points behind the cursor only move it; the others leave the counts.
                let behind = (*cursor as usize).min(drop);
                if let Some(c) = counts {
                    for p in &live[behind..drop] {
                        c.decrement(p.value());
                    }
                }
                *cursor -= behind as u32;
                points.drop_front::<T>(drop);
                stats.dropped_points += over as u64;
            }
        }
        let points = points.as_slice::<T>();
        let edge = t - ms;
        let (lo, hi) = if points.last().is_none_or(|last| last.time() <= t) && edge >= *lower {
            // Forward: move the lower edge to `t - ms`, keeping the counts.
            let mut c = *cursor as usize;
            while c < points.len() && points[c].time() <= edge {
                if let Some(counts) = counts {
                    counts.decrement(points[c].value());
                }
                c += 1;
            }
            *cursor = c as u32;
            *lower = edge;
            if agg == Agg::Distinct {
                // Small windows are cheaper to rescan than to keep counts for.
                if counts.is_none() && points.len() - c <= SMALL_WINDOW {
                    return distinct_small(&points[c..]);
                }
                let counts = counts.get_or_insert_with(|| {
                    let mut m: Box<CountTable> = Box::default();
                    for p in &points[c..] {
                        m.increment(p.value());
                    }
                    m
                });
                return counts.len() as f64;
            }
            (c, points.len())
        } else {
            // A read at an earlier time (an out-of-order event) searches.
            let lo = points.partition_point(|p| p.time() <= edge);
            (lo, points.partition_point(|p| p.time() <= t).max(lo))
        };
        let window = &points[lo..hi];
        let nums = || window.iter().map(|p| f64::from_bits(p.value()));
        match agg {
            Agg::Count => window.len() as f64,
            Agg::Sum => nums().fold(0.0, |a, x| a + x),
            _ if window.is_empty() => match agg {
                Agg::Distinct => 0.0,
                _ => f64::NAN,
            },
            Agg::Mean => nums().fold(0.0, |a, x| a + x) / window.len() as f64,
            Agg::Min => nums().fold(f64::INFINITY, f64::min),
            Agg::Max => nums().fold(f64::NEG_INFINITY, f64::max),
            Agg::Last => f64::from_bits(window[window.len() - 1].value()),
            Agg::Distinct => {
                scratch.clear();
                scratch.extend(window.iter().map(Item::value));
                scratch.len() as f64
            }
            Agg::TimeSince { unit_ms } => {
                // The previous counted point: the one before the current
                // event when it was just inserted (it is then the last at `t`).
                let prev = if point.is_some() { hi.checked_sub(2) } else { hi.checked_sub(1) };
                match prev {
                    Some(p) if p >= lo => per_unit(t - points[p].time(), unit_ms),
                    _ => f64::NAN,
                }
            }
            Agg::FirstSeen { unit_ms } => per_unit(t - window[0].time(), unit_ms),
            Agg::Ratio => f64::NAN,
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

    #[allow(clippy::box_collection)] // the boxed set of `State::Distinct`
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
    /// Whether this restored entity holds one series of the right shape
    /// for each of `features` (see [`Series::restore`]).
    pub(crate) fn restore(&mut self, set: &FeatureSet, features: &[usize]) -> bool {
        self.series.len() == features.len()
            && self.series.iter_mut().zip(features).all(|(s, &i)| s.restore(&set.defs[i].agg, set.defs[i].window))
    }
}

pub(crate) type KeyMap<V> = crate::table::KeyTable<V>;

/// The features of one entity kind and their state.
pub(crate) struct Table {
    pub(crate) entity: EntityKind,
    pub(crate) features: Vec<usize>,
    /// The features compiled for the per-event loop, in the same order.
    ops: Vec<Op>,
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
                    ops: Vec::new(),
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
            t.ops = t.features.iter().map(|&i| Op::new(i, &set.defs[i])).collect();
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

    /// Slots allocated per entity kind's table: a table holds at most 3/4
    /// as many entities, and while it doubles or halves both its arrays
    /// count.
    pub fn slots_by_kind(&self) -> Vec<(EntityKind, usize)> {
        self.table_slots().collect()
    }

    /// [`FeatureEngine::slots_by_kind`] without collecting it, for a
    /// caller that checks it after every event.
    pub fn table_slots(&self) -> impl Iterator<Item = (EntityKind, usize)> + '_ {
        self.tables.iter().map(|t| (t.entity, t.map.capacity()))
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
        // Every entity's key and a prefetch of its slot first; then expiry,
        // whose lookups miss the caches too, while those slots arrive; then
        // one lookup each and a prefetch of its series, so the cache misses
        // of an event's entities overlap.
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
        for table in &mut self.tables {
            // A growing entity table moves a little more.
            table.map.step();
            table.expire(watermark, &mut self.stats);
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
                let kind = ev.kind.bit();
                self.points.extend(table.ops.iter().map(|op| {
                    let counted =
                        op.counts & kind != 0 && op.filtered.is_none_or(|d| passes(&set.defs[d as usize].filters, ev));
                    if counted {
                        op.input.value(self.keys, ev, &mut self.hashed)
                    } else {
                        None
                    }
                }));
            }
        }
        // Then what the series point to, for all entities at once.
        for (&(_, slot, at), table) in self.found.iter().zip(&self.tables) {
            if let Some(i) = slot {
                prefetch_series(&table.map.at(i).series, &self.points[at..]);
            }
        }
        // Once the buffers arrive, the count-table slots of the points about
        // to leave the windows, for all entities at once, before any is read.
        for (&(_, slot, _), table) in self.found.iter().zip(&self.tables) {
            if let Some(i) = slot {
                prefetch_leaving(&table.map.at(i).series, &table.ops, t);
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
                    for op in &table.ops {
                        out.0[op.slot] = op.empty;
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
                    table.map.insert(key, entity)
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
            let max_points = set.limits.max_events_per_window;
            for ((op, s), &point) in table.ops.iter().zip(entity.series.iter_mut()).zip(points) {
                out.0[op.slot] = match op.window_ms {
                    Some(ms) => {
                        s.slide(op.agg, ms, t, point, watermark, max_points, &mut self.stats, &mut self.scratch)
                    }
                    None => {
                        if let Some(point) = point {
                            insert_lifetime(s, t, point, op.agg, watermark);
                        }
                        read_lifetime(s, t, point.is_some(), op.agg, &mut self.scratch)
                    }
                };
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
                self.map.remove_tracking(&key, |k, e| {
                    cap.keep(epoch, k, e);
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
        if let Some((first, end)) = s.points.heap_ptrs() {
            prefetch(first);
            prefetch(end.wrapping_sub(1));
            if point.is_some() {
                // Where an appended point goes: the next line when the last
                // point ends one (a hint: past a full buffer's end it only
                // asks for a line nobody reads).
                prefetch(end);
            }
        }
        if let (State::Window { counts: Some(c), .. }, Some(v)) = (&s.state, point) {
            c.prefetch(*v);
        }
    }
}

/// Asks the CPU for the count-table slots of the points a distinct count's
/// window at `t` is about to drop (up to 4 per series): a point's value is
/// only known once its buffer has arrived, so without this each drop would
/// wait for its slot in turn.
#[inline]
fn prefetch_leaving(series: &[Series], ops: &[Op], t: i64) {
    for (s, op) in series.iter().zip(ops) {
        if let (State::Window { counts: Some(c), cursor, .. }, Some(ms)) = (&s.state, op.window_ms) {
            let edge = t - ms;
            let ahead = s.points.as_slice::<Point>().get(*cursor as usize..).unwrap_or_default();
            for &(_, v) in ahead.iter().take_while(|&&(pt, _)| pt <= edge).take(4) {
                c.prefetch(v);
            }
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
fn insert_sorted<T: Item>(points: &mut Points, p: T) {
    let live = points.as_slice::<T>();
    if live.last().is_none_or(|last| last.time() <= p.time()) {
        points.push_back(p);
    } else {
        let at = live.partition_point(|q| q.time() <= p.time());
        points.insert(at, p);
    }
}

/// Adds a point to a lifetime series, settling into its running aggregate
/// the points every later read sees whole.
fn insert_lifetime(s: &mut Series, t: i64, v: u64, agg: Agg, watermark: i64) {
    if matches!(s.state, State::Oldest(Some(first)) if first <= t) {
        // A first seen settled at or before `t`: this point can change no
        // read (every read from the watermark on is past the settled
        // time), so it is not kept.
        return;
    }
    insert_sorted(&mut s.points, (t, v));
    // Every read at or after the watermark sees these points. Strictly
    // older only, so an on-time event is still in `points` when read.
    while s.points.as_slice::<Point>().first().is_some_and(|&(pt, _)| pt < watermark) {
        let (pt, pv) = s.points.pop_front().expect("checked");
        settle(&mut s.state, pt, pv, agg);
    }
}

/// Folds a lifetime point into its running aggregate.
fn settle(state: &mut State, t: i64, v: u64, agg: Agg) {
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
fn distinct_small<T: Item>(points: &[T]) -> f64 {
    let mut n = 0usize;
    for (i, p) in points.iter().enumerate() {
        if !points[..i].iter().any(|q| q.value() == p.value()) {
            n += 1;
        }
    }
    n as f64
}

fn per_unit(ms: i64, unit_ms: i64) -> f64 {
    ms as f64 / unit_ms as f64
}

/// Reads a lifetime feature at time `t`: its settled aggregate, then its
/// recent points up to `t`. `counts_now` says the current event was just
/// inserted (it is then the last point at `t`).
fn read_lifetime(s: &Series, t: i64, counts_now: bool, agg: Agg, scratch: &mut HashSet<u64>) -> f64 {
    let points = s.points.as_slice::<Point>();
    let hi = points.partition_point(|&(pt, _)| pt <= t);
    let recent = &points[..hi];
    let nums = || recent.iter().map(|&(_, v)| f64::from_bits(v));
    let n = hi as u64;
    match (agg, &s.state) {
        (Agg::Count, State::Count(c)) => (c + n) as f64,
        (Agg::Sum, State::Sum { sum, .. }) => nums().fold(*sum, |a, x| a + x),
        (Agg::Mean, State::Sum { count, sum }) if count + n > 0 => nums().fold(*sum, |a, x| a + x) / (count + n) as f64,
        (Agg::Min, State::Min { count, min }) if count + n > 0 => nums().fold(*min, f64::min),
        (Agg::Max, State::Max { count, max }) if count + n > 0 => nums().fold(*max, f64::max),
        (Agg::Last, State::Last { time, value }) => match hi {
            0 if *time == NEVER => f64::NAN,
            0 => f64::from_bits(*value),
            _ => f64::from_bits(points[hi - 1].1),
        },
        (Agg::Distinct, State::Distinct(set)) => {
            scratch.clear();
            scratch.extend(recent.iter().map(|&(_, v)| v).filter(|v| !set.contains(v)));
            (set.len() + scratch.len()) as f64
        }
        (Agg::TimeSince { unit_ms }, state) => {
            // The previous counted point: the one before the current event
            // when it was just inserted (it is then the last at `t`).
            let prev = if counts_now { hi.checked_sub(2) } else { hi.checked_sub(1) };
            let prev_time = match (prev, state) {
                (Some(p), _) => Some(points[p].0),
                // Nothing earlier among the points: the newest settled one, unless
                // the only candidate there is the current event itself.
                (_, State::Newest(newest)) if !(counts_now && hi == 0) => newest.filter(|&nt| nt <= t),
                _ => None,
            };
            prev_time.map_or(f64::NAN, |p| per_unit(t - p, unit_ms))
        }
        (Agg::FirstSeen { unit_ms }, State::Oldest(oldest)) => match (oldest, n) {
            (Some(first), _) => per_unit(t - first, unit_ms),
            (None, 0) => f64::NAN,
            (None, _) => per_unit(t - points[0].0, unit_ms),
        },
        _ => f64::NAN,
    }
}

// Every series is one 64-byte line's worth of state (see `Series`).
const _: () = assert!(std::mem::size_of::<Series>() == 64);

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use compact_str::CompactString;
    use riskd_core::event::{Entities, Event, EventKind, Login, LoginMethod, Payload};
    use riskd_core::pii::Protected;

    use super::entity_key;
    use crate::def::EntityKind;

    fn event(ip: IpAddr, device: Option<&str>) -> Event {
        Event {
            id: CompactString::from("e1"),
            kind: EventKind::Login,
            time_ms: 0,
            entities: Entities {
                user_id: CompactString::from("u-0042"),
                device_id: device.map(CompactString::from),
                ip: Some(ip),
                phone: Some(Protected([7; 16])),
                id_number: Some(Protected([8; 16])),
                bank_card: Some(Protected([9; 16])),
            },
            payload: Payload::Login(Login { success: true, method: LoginMethod::Password, failure_reason: None }),
        }
    }

    /// Entity keys are what state and snapshots are keyed by: a change to
    /// how they are hashed, however harmless it looks, would leave every
    /// snapshot written before it unable to find its entities. These are
    /// the keys earlier builds wrote, for every kind, both address
    /// families, a device id past the inline string size, and a missing
    /// device.
    #[test]
    fn entity_keys_are_those_earlier_snapshots_hold() {
        let keys = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let v4 = event(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), Some("device-with-a-name-longer-than-24-bytes"));
        let v6 = event(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)), None);
        // Every base kind, then user+device and ip24+bank card.
        let composites = [EntityKind::Composite(0b11), EntityKind::Composite(0b100_1000)];
        let kinds: Vec<EntityKind> = EntityKind::BASE.into_iter().chain(composites).collect();
        let got: Vec<String> = [&v4, &v6]
            .iter()
            .flat_map(|ev| kinds.iter().map(|&k| entity_key(keys, k, ev).map_or("-".into(), |k| format!("{k:032x}"))))
            .collect();
        let want = [
            // An IPv4 address and a device.
            "019b01f3e9a405eaab9dc64e16142392",
            "4fad34bf09f16799d1d06c0452b473de",
            "77a1964576a01b4951b4b0ccc7cca7d1",
            "a5763b94dadcad221ec6a12e9897ce59",
            "2901afa0e3a3c8c89de55d473261e341",
            "632b369c217d8213922e7fea988cc045",
            "f2159c9669e19ffc9a8b8392582b3c12",
            "21cfa90d2a1ef9961b1891cb20992fdc",
            "2916374466d742c6d09ff18b96cf94a4",
            // An IPv6 address and no device.
            "019b01f3e9a405eaab9dc64e16142392",
            "-",
            "eb469d80f890c960855d409520f40ec7",
            "35993bb58459601c9a1cfcafe2a9e412",
            "2901afa0e3a3c8c89de55d473261e341",
            "632b369c217d8213922e7fea988cc045",
            "f2159c9669e19ffc9a8b8392582b3c12",
            "-",
            "8c6aa0447c37c4151caff13bce20787d",
        ];
        assert_eq!(got, want);
        // Another hash key gives other keys.
        assert_ne!(entity_key((1, 2), EntityKind::User, &v4), entity_key(keys, EntityKind::User, &v4));
    }

    /// Count windows keep times alone; a snapshot writes them as pairs, and
    /// a restore must give them back their own layout, or every restored
    /// entity would keep twice the bytes until it expires.
    #[test]
    fn a_restore_gives_count_windows_back_their_times() {
        let text = r#"
[[feature]]
name = "user.logins_1h"
entity = "user"
events = ["login"]
agg = "count"
window = "1h"
[[feature]]
name = "user.devices_1h"
entity = "user"
agg = "distinct_count"
of = "entity.device_id"
window = "1h"
"#;
        let set = std::sync::Arc::new(
            crate::def::FeatureSet::from_sources(&[("f.toml".into(), text.into())]).expect("valid"),
        );
        let mut engine = super::FeatureEngine::new(set.clone(), [5; 16]);
        let mut fv = super::FeatureVector::default();
        let layouts = |e: &super::FeatureEngine| -> Vec<(bool, usize)> {
            let (_, entity) = e.tables[0].map.iter().next().expect("one user");
            entity.series.iter().map(|s| (s.points.holds_times(), s.points.len())).collect()
        };
        for (n, minute) in (0..6).enumerate() {
            let mut ev = event(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), Some(["d1", "d2"][minute % 2]));
            ev.time_ms = minute as i64 * 60_000;
            engine.update(&ev, &mut fv);
            assert_eq!(fv.0, [(n + 1) as f64, n.min(1) as f64 + 1.0]);
        }
        assert_eq!(layouts(&engine), [(true, 6), (false, 6)]);
        let mut bytes = Vec::new();
        engine.write_snapshot(&mut bytes).expect("write");
        let restored = super::FeatureEngine::restore(set, [5; 16], &mut bytes.as_slice()).expect("restore");
        assert_eq!(layouts(&restored), [(true, 6), (false, 6)]);
    }
}
