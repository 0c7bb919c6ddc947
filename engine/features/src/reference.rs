//! A naive reference implementation: it keeps every event and recomputes a
//! feature by rescanning them. Linear in the history, so only for
//! explanations (`riskd features explain`) and for checking the engine, but
//! it shares no window code with [`crate::FeatureEngine`]: entities are
//! compared by their clear rendering, distinct values by their text.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use riskd_core::event::Event;
use riskd_core::fields::{FieldId, Value};

use crate::def::{Aggregation, EntityKind, FeatureDef, FeatureSet, FilterValue, Operand, Window};

/// One feature's value for one event, with the events that produced it.
#[derive(Debug)]
pub struct Explained<'a> {
    pub value: f64,
    /// Counted events inside the window, oldest first (ties in arrival order).
    pub contributors: Vec<&'a Event>,
}

/// Every event seen so far, in arrival order, with the events of each
/// entity (by its clear rendering) listed for lookup.
pub struct Reference {
    set: Arc<FeatureSet>,
    events: Vec<Event>,
    kinds: Vec<EntityKind>,
    by_entity: HashMap<(EntityKind, String), Vec<usize>>,
}

fn render(kind: EntityKind, ev: &Event) -> Option<String> {
    let e = &ev.entities;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Some(match kind {
        EntityKind::User => e.user_id.to_string(),
        EntityKind::Device => e.device_id.as_ref()?.to_string(),
        EntityKind::Ip => e.ip?.to_string(),
        EntityKind::Ip24 => match e.ip? {
            IpAddr::V4(v) => {
                let o = v.octets();
                format!("{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            IpAddr::V6(v) => {
                let s = v.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        EntityKind::Phone => hex(&e.phone?.0),
        EntityKind::IdNumber => hex(&e.id_number?.0),
        EntityKind::BankCard => hex(&e.bank_card?.0),
        EntityKind::Event => return None,
        EntityKind::Composite(_) => {
            let parts: Option<Vec<String>> = kind.parts().map(|p| render(p, ev)).collect();
            parts?.join("|")
        }
    })
}

fn matches(filters: &[(FieldId, FilterValue)], ev: &Event) -> bool {
    filters.iter().all(|(f, want)| match (f.get(ev), want) {
        (Value::Bool(a), FilterValue::Bool(b)) => a == *b,
        (Value::Num(a), FilterValue::Num(b)) => a == *b,
        (Value::Str(a), FilterValue::Str(b)) => a == b,
        _ => false,
    })
}

/// The field a feature aggregates, if any.
fn of(agg: &Aggregation) -> Option<FieldId> {
    match agg {
        Aggregation::Sum(f)
        | Aggregation::Min(f)
        | Aggregation::Max(f)
        | Aggregation::Mean(f)
        | Aggregation::Last(f)
        | Aggregation::DistinctCount(f) => Some(*f),
        _ => None,
    }
}

fn num(def: &FeatureDef, ev: &Event) -> f64 {
    of(&def.agg).map_or(f64::NAN, |f| f.get(ev).num_or_nan())
}

impl Reference {
    pub fn new(set: Arc<FeatureSet>) -> Self {
        let mut kinds: Vec<EntityKind> = set.defs.iter().map(|d| d.entity).collect();
        kinds.sort();
        kinds.dedup();
        Reference { set, events: Vec::new(), kinds, by_entity: HashMap::new() }
    }

    pub fn push(&mut self, ev: Event) {
        let i = self.events.len();
        for &k in &self.kinds {
            if let Some(who) = render(k, &ev) {
                self.by_entity.entry((k, who)).or_default().push(i);
            }
        }
        self.events.push(ev);
    }

    /// Shares an entity of some feature with `other`, so it may count in one
    /// of `other`'s features.
    pub fn related(&self, ev: &Event, other: &Event) -> bool {
        self.kinds.iter().any(|&k| render(k, ev).is_some_and(|a| render(k, other).is_some_and(|b| a == b)))
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn feature_set(&self) -> &FeatureSet {
        &self.set
    }

    /// Every feature for the event at arrival index `at`, seeing only the
    /// events that had arrived by then.
    pub fn values(&self, at: usize) -> Vec<f64> {
        let mut out = vec![f64::NAN; self.set.defs.len()];
        for def in &self.set.defs {
            out[def.slot] = self.value(def, at, &out);
        }
        out
    }

    fn value(&self, def: &FeatureDef, at: usize, earlier: &[f64]) -> f64 {
        if let Aggregation::Ratio(n, d) = def.agg {
            let ev = &self.events[at];
            let get = |o: Operand| match o {
                Operand::Field(f) => f.get(ev).num_or_nan(),
                Operand::Feature(slot) => earlier[slot],
            };
            let (n, d) = (get(n), get(d));
            return if d == 0.0 || d.is_nan() || n.is_nan() { f64::NAN } else { n / d };
        }
        self.explain(def, at).value
    }

    /// One windowed feature for the event at arrival index `at`, with its
    /// contributing events. Ratios are not windowed: use [`Reference::values`].
    pub fn explain(&self, def: &FeatureDef, at: usize) -> Explained<'_> {
        let cur = &self.events[at];
        let t = cur.time_ms;
        let Some(who) = render(def.entity, cur) else {
            return Explained { value: f64::NAN, contributors: Vec::new() };
        };
        let field = of(&def.agg);
        let same_entity = self.by_entity.get(&(def.entity, who.clone())).map_or(&[][..], |v| v.as_slice());
        let mut hits: Vec<(usize, &Event)> = same_entity
            .iter()
            .take_while(|&&i| i <= at)
            .map(|&i| (i, &self.events[i]))
            .filter(|(_, e)| def.counts & e.kind.bit() != 0 && matches(&def.filters, e))
            .filter(|(_, e)| match (&def.agg, field) {
                (Aggregation::DistinctCount(_), Some(f)) => !matches!(f.get(e), Value::Missing),
                (_, Some(_)) => !num(def, e).is_nan(),
                (_, None) => true,
            })
            .filter(|(_, e)| match def.window {
                Window::Sliding { ms } => e.time_ms > t - ms && e.time_ms <= t,
                Window::Lifetime => e.time_ms <= t,
            })
            .collect();
        hits.sort_by_key(|(i, e)| (e.time_ms, *i));
        let nums = || hits.iter().map(|(_, e)| num(def, e));
        let n = hits.len();
        let value = match &def.agg {
            Aggregation::Count => n as f64,
            Aggregation::Sum(_) => nums().fold(0.0, |a, x| a + x),
            Aggregation::Mean(_) if n > 0 => nums().fold(0.0, |a, x| a + x) / n as f64,
            Aggregation::Min(_) if n > 0 => nums().fold(f64::INFINITY, f64::min),
            Aggregation::Max(_) if n > 0 => nums().fold(f64::NEG_INFINITY, f64::max),
            Aggregation::Last(_) if n > 0 => num(def, hits[n - 1].1),
            Aggregation::DistinctCount(f) => {
                let distinct: HashSet<String> = hits.iter().map(|(_, e)| format!("{:?}", f.get(e))).collect();
                distinct.len() as f64
            }
            Aggregation::TimeSince { unit_ms } => hits
                .iter()
                .rev()
                .find(|(i, _)| *i != at)
                .map_or(f64::NAN, |(_, e)| (t - e.time_ms) as f64 / *unit_ms as f64),
            Aggregation::FirstSeen { unit_ms } if n > 0 => (t - hits[0].1.time_ms) as f64 / *unit_ms as f64,
            _ => f64::NAN,
        };
        Explained { value, contributors: hits.into_iter().map(|(_, e)| e).collect() }
    }
}
