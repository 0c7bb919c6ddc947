//! The streaming generator: a k-way merge of per-user timelines.
//!
//! Each user's timeline is their planned structural events merged with their
//! lazily drawn background events. A min-heap holds one entry per user (the
//! time of that user's next event), so memory is proportional to the number
//! of users and their plans, never to the number of events. Heap entries carry
//! a push sequence number, which breaks ties between users deterministically
//! (in generation order); within one user, planned events come before a
//! background event at the same millisecond.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::clock::TimeFmt;
use crate::malformed::{render_bad, BadCtx};
use crate::model::{BadReason, EventType, GenStats, LineKind, LineMeta};
use crate::plan::{plan, Act, World};
use crate::render::{render, Ctx};
use crate::GenConfig;

/// One generated line with its metadata (the convenient, allocating form).
#[derive(Clone, Debug, PartialEq)]
pub struct GenLine {
    /// The JSON line, without a trailing newline.
    pub text: String,
    pub meta: LineMeta,
}

impl GenLine {
    /// The line parsed as JSON (`None` for the malformed lines that are not
    /// JSON at all).
    pub fn to_value(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.text).ok()
    }
}

/// A seeded, deterministic stream of event lines in event-time order.
///
/// Use [`Generator::next_into`] in hot loops (it appends into a caller-owned
/// buffer and allocates nothing per event), or iterate to get [`GenLine`]s.
pub struct Generator {
    world: World,
    heap: BinaryHeap<Reverse<(i64, u64, u32)>>,
    push_seq: u64,
    bad_total: u64,
    tf: TimeFmt,
    last_time: Option<i64>,
    last_user: u32,
    stats: GenStats,
    first_time: Option<i64>,
}

impl Generator {
    /// Plans the workload. Fails only on an invalid configuration.
    pub fn new(cfg: &GenConfig) -> anyhow::Result<Self> {
        cfg.validate()?;
        let world = plan(cfg);
        let mut g = Generator {
            heap: BinaryHeap::with_capacity(world.users.len()),
            push_seq: 0,
            bad_total: cfg.bad,
            tf: TimeFmt::default(),
            last_time: None,
            last_user: 0,
            stats: GenStats { fraud: world.manifest.clone(), ..GenStats::default() },
            first_time: None,
            world,
        };
        for i in 0..g.world.users.len() {
            let t = g.world.users[i].next_time();
            g.schedule(t, i as u32);
        }
        Ok(g)
    }

    fn schedule(&mut self, t: i64, user: u32) {
        if t != i64::MAX {
            self.heap.push(Reverse((t, self.push_seq, user)));
            self.push_seq += 1;
        }
    }

    /// Number of valid events the whole stream holds.
    pub fn total_events(&self) -> u64 {
        self.world.total_events
    }

    /// Number of lines the whole stream holds (events plus malformed lines).
    pub fn total_lines(&self) -> u64 {
        self.world.total_events + self.bad_total
    }

    /// Statistics of what has been produced so far (everything, once the
    /// stream is exhausted), including the fraud manifest.
    pub fn stats(&self) -> GenStats {
        let mut s = self.stats.clone();
        s.first_event_time = self.first_time.map(TimeFmt::format);
        s.last_event_time = self.last_time.map(TimeFmt::format);
        s
    }

    /// Malformed line `i` (0-based) goes before valid event number
    /// `position(i)`: spread evenly through the stream.
    fn bad_position(&self, i: u64) -> u64 {
        ((u128::from(i + 1) * u128::from(self.world.total_events)) / u128::from(self.bad_total + 1)) as u64
    }

    /// Appends the next line (without a newline) to `buf` and describes it;
    /// `None` at the end of the stream.
    pub fn next_into(&mut self, buf: &mut String) -> Option<LineMeta> {
        let done_bad = self.stats.malformed;
        if done_bad < self.bad_total && self.stats.events >= self.bad_position(done_bad) {
            return Some(self.malformed(buf));
        }
        let Reverse((t, _, uidx)) = self.heap.pop()?;
        let world = &mut self.world;
        let user = &mut world.users[uidx as usize];
        let planned_first = user.plan.last().is_some_and(|p| p.t <= user.bg.next);
        let act = if planned_first {
            user.plan.pop().map(|p| p.act)?
        } else {
            let act = background_act(user);
            user.bg.advance(&mut user.rng, &world.diurnal, world.t1);
            act
        };
        let seq = self.stats.events + 1;
        let ctx = Ctx { devices: &world.devices, apps: &world.apps };
        let (ty, label) = render(buf, &mut self.tf, &ctx, seq, t, uidx, user, &act);
        let next = user.next_time();
        self.schedule(next, uidx);

        self.stats.events = seq;
        *self.stats.by_type.entry(ty).or_default() += 1;
        if let Some(bad) = label {
            self.stats.applications += 1;
            self.stats.bad_applications += u64::from(bad);
        }
        self.first_time.get_or_insert(t);
        self.last_time = Some(t);
        self.last_user = uidx;
        Some(LineMeta { kind: LineKind::Event(ty), time_ms: t, event_seq: Some(seq), bad: label })
    }

    fn malformed(&mut self, buf: &mut String) -> LineMeta {
        let i = self.stats.malformed;
        let reason = BadReason::CYCLE[(i % 8) as usize];
        let t = self.last_time.unwrap_or(self.world.t0);
        let time = TimeFmt::format(t);
        let user = &self.world.users[self.last_user as usize];
        let device = user.devices.first().map_or(0, |&d| self.world.devices[d as usize].id);
        let c = BadCtx { n: i + 1, time: &time, user: self.last_user, device, ip: user.home_ip };
        render_bad(buf, &c, reason, i / 8);
        self.stats.malformed += 1;
        *self.stats.malformed_by_reason.entry(reason).or_default() += 1;
        LineMeta { kind: LineKind::Malformed(reason), time_ms: t, event_seq: None, bad: None }
    }
}

/// A routine event: mostly logins, otherwise a device report.
fn background_act(user: &mut crate::plan::User) -> Act {
    let rng = &mut user.rng;
    let dev = if user.devices.len() == 1 || rng.chance(0.8) {
        user.devices[0]
    } else {
        user.devices[rng.below(user.devices.len() as u64) as usize]
    };
    let ip = if rng.chance(0.6) { user.home_ip } else { user.mobile_ip };
    if rng.chance(0.58) {
        let method = rng.weighted(&[50, 30, 20]) as u8;
        // Honest users mistype now and then; the failure matches the method.
        let failure = if rng.chance(0.03) { method + 1 } else { 0 };
        Act::Login { dev, ip, method, failure }
    } else {
        Act::DeviceReport { dev, ip }
    }
}

impl Iterator for Generator {
    type Item = GenLine;

    fn next(&mut self) -> Option<GenLine> {
        let mut text = String::with_capacity(320);
        let meta = self.next_into(&mut text)?;
        Some(GenLine { text, meta })
    }
}

/// Counts of each event type in a finished stream, in contract order.
pub fn type_counts(stats: &GenStats) -> Vec<(EventType, u64)> {
    EventType::ALL.iter().map(|t| (*t, stats.by_type.get(t).copied().unwrap_or(0))).collect()
}
