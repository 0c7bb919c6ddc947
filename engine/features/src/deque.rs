//! A sorted run of points that keeps its first few inline and the rest in
//! one contiguous buffer. A point is a `(time, value)` pair, or a time alone
//! for windows that only count or time their events (`count`, `time_since`,
//! `first_seen`): half the bytes, so such a run keeps four points inline
//! instead of two and its buffer spans half the cache lines.
//!
//! Most series of most entities hold a point or a few (a user's applications
//! in 30 days); keeping those inside the series, next to the entity's other
//! series, saves an allocation and a cache miss per feature per event.
//! Longer runs move to a buffer read as one slice: a window's points are
//! always contiguous, so reads fold over a plain slice (no ring wrap-around)
//! and a prefetch of the buffer brings in the points in memory order.
//! Points leave from the front by moving a head index; the buffer is
//! compacted only when a point would not fit otherwise, and grows when it is
//! more than three quarters full, so each point is moved a bounded number of
//! times on average.
//!
//! The two layouts share one enum, so a run stays 40 bytes and a series one
//! cache line. The methods that read or change points are generic over the
//! point type ([`Item`]); the caller picks it from [`Points::holds_times`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) type Point = (i64, u64);

/// Points kept inside the run: two pairs or four times, 32 bytes either way.
const PAIRS_INLINE: usize = 2;
const TIMES_INLINE: usize = 4;

#[derive(Debug, Clone)]
pub(crate) enum Points {
    Inline {
        len: u8,
        items: [Point; PAIRS_INLINE],
    },
    /// The points are `buf[head..]`.
    Heap {
        buf: Vec<Point>,
        head: u32,
    },
    TimesInline {
        len: u8,
        items: [i64; TIMES_INLINE],
    },
    /// The times are `buf[head..]`.
    TimesHeap {
        buf: Vec<i64>,
        head: u32,
    },
}

/// A run's storage seen as one point type, for changing it in place.
pub(crate) enum Run<'a, T> {
    Inline { len: &'a mut u8, items: &'a mut [T] },
    Heap { buf: &'a mut Vec<T>, head: &'a mut u32 },
}

/// A point type a run can hold.
pub(crate) trait Item: Copy + Default + PartialEq + std::fmt::Debug {
    fn new(time: i64, value: u64) -> Self;
    fn time(&self) -> i64;
    /// The value (0 for a time alone).
    fn value(&self) -> u64;
    /// The points of a run in this layout; empty for the other layout
    /// (callers pick the layout from [`Points::holds_times`]).
    fn slice(p: &Points) -> &[Self];
    /// Panics for the other layout.
    fn run(p: &mut Points) -> Run<'_, Self>;
    /// A run that has outgrown its inline points.
    fn heap(buf: Vec<Self>) -> Points;
}

/// The methods of [`Item`] that only name the layout's two variants.
macro_rules! layout {
    ($inline:ident, $heap:ident, $name:literal) => {
        #[inline]
        fn slice(p: &Points) -> &[Self] {
            match p {
                Points::$inline { len, items } => &items[..*len as usize],
                Points::$heap { buf, head } => &buf[*head as usize..],
                _ => {
                    debug_assert!(false, concat!("a run read as ", $name, " in the other layout"));
                    &[]
                }
            }
        }
        #[inline]
        fn run(p: &mut Points) -> Run<'_, Self> {
            match p {
                Points::$inline { len, items } => Run::Inline { len, items },
                Points::$heap { buf, head } => Run::Heap { buf, head },
                _ => unreachable!(concat!("a run changed as ", $name, " in the other layout")),
            }
        }
        fn heap(buf: Vec<Self>) -> Points {
            Points::$heap { buf, head: 0 }
        }
    };
}

impl Item for Point {
    #[inline]
    fn new(time: i64, value: u64) -> Self {
        (time, value)
    }
    #[inline]
    fn time(&self) -> i64 {
        self.0
    }
    #[inline]
    fn value(&self) -> u64 {
        self.1
    }
    layout!(Inline, Heap, "pairs");
}

impl Item for i64 {
    #[inline]
    fn new(time: i64, value: u64) -> Self {
        debug_assert_eq!(value, 0, "a point with a value kept as a time alone");
        time
    }
    #[inline]
    fn time(&self) -> i64 {
        *self
    }
    #[inline]
    fn value(&self) -> u64 {
        0
    }
    layout!(TimesInline, TimesHeap, "times");
}

impl Default for Points {
    /// An empty run of pairs.
    fn default() -> Self {
        Points::Inline { len: 0, items: [(0, 0); PAIRS_INLINE] }
    }
}

impl Points {
    /// An empty run of times.
    pub fn times() -> Points {
        Points::TimesInline { len: 0, items: [0; TIMES_INLINE] }
    }

    /// Whether the points are times alone (else `(time, value)` pairs).
    #[inline]
    pub fn holds_times(&self) -> bool {
        matches!(self, Points::TimesInline { .. } | Points::TimesHeap { .. })
    }

    /// The points, oldest first.
    #[inline]
    pub fn as_slice<T: Item>(&self) -> &[T] {
        T::slice(self)
    }

    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Points::Inline { len, .. } | Points::TimesInline { len, .. } => *len as usize,
            Points::Heap { buf, head } => buf.len() - *head as usize,
            Points::TimesHeap { buf, head } => buf.len() - *head as usize,
        }
    }

    /// Appends `p`; the common case (room left) stays out of [`Points::insert`].
    #[inline]
    pub fn push_back<T: Item>(&mut self, p: T) {
        match T::run(self) {
            Run::Inline { len, items } if (*len as usize) < items.len() => {
                items[*len as usize] = p;
                *len += 1;
                return;
            }
            Run::Heap { buf, .. } if buf.len() < buf.capacity() => {
                buf.push(p);
                return;
            }
            _ => {}
        }
        let at = self.len();
        self.insert(at, p);
    }

    /// Inserts `p` so that it becomes the point at index `at`.
    pub fn insert<T: Item>(&mut self, at: usize, p: T) {
        let spilled = match T::run(self) {
            Run::Inline { len, items } if (*len as usize) < items.len() => {
                let n = *len as usize;
                items.copy_within(at..n, at + 1);
                items[at] = p;
                *len += 1;
                None
            }
            Run::Inline { len, items } => {
                let mut buf: Vec<T> = Vec::with_capacity(2 * items.len());
                buf.extend_from_slice(&items[..*len as usize]);
                buf.insert(at, p);
                Some(buf)
            }
            Run::Heap { buf, head } => {
                if buf.len() == buf.capacity() && *head > 0 {
                    let live = buf.len() - *head as usize;
                    // Compacting a nearly full buffer would soon repeat:
                    // then the push below grows it instead.
                    buf.copy_within(*head as usize.., 0);
                    buf.truncate(live);
                    *head = 0;
                    if live * 4 > buf.capacity() * 3 {
                        buf.reserve(buf.capacity());
                    }
                }
                buf.insert(*head as usize + at, p);
                None
            }
        };
        if let Some(buf) = spilled {
            *self = T::heap(buf);
        }
    }

    pub fn pop_front<T: Item>(&mut self) -> Option<T> {
        let first = *self.as_slice::<T>().first()?;
        self.drop_front::<T>(1);
        Some(first)
    }

    /// Drops the `n` oldest points (`n` at most the length).
    #[inline]
    pub fn drop_front<T: Item>(&mut self, n: usize) {
        match T::run(self) {
            Run::Inline { len, items } => {
                let live = *len as usize;
                debug_assert!(n <= live);
                items.copy_within(n..live, 0);
                *len -= n as u8;
            }
            Run::Heap { buf, head } => {
                debug_assert!(*head as usize + n <= buf.len());
                *head += n as u32;
                if *head as usize == buf.len() {
                    buf.clear();
                    *head = 0;
                }
            }
        }
    }

    /// Where the buffer's points start and end (one past the last), if the
    /// run has a buffer (for prefetching).
    #[inline]
    pub fn heap_ptrs(&self) -> Option<(*const u8, *const u8)> {
        fn ends<T>(live: &[T]) -> (*const u8, *const u8) {
            let r = live.as_ptr_range();
            (r.start as *const u8, r.end as *const u8)
        }
        match self {
            Points::Heap { buf, head } => Some(ends(&buf[*head as usize..])),
            Points::TimesHeap { buf, head } => Some(ends(&buf[*head as usize..])),
            _ => None,
        }
    }

    /// Moves a run of pairs whose values are all 0 into the times layout
    /// (a snapshot writes times as such pairs); false if a value is not 0.
    pub fn make_times(&mut self) -> bool {
        if self.holds_times() {
            return true;
        }
        let pairs = self.as_slice::<Point>();
        if pairs.iter().any(|&(_, v)| v != 0) {
            return false;
        }
        let mut times = Points::times();
        if pairs.len() > TIMES_INLINE {
            times = Points::TimesHeap { buf: pairs.iter().map(|&(t, _)| t).collect(), head: 0 };
        } else {
            for &(t, _) in pairs {
                times.push_back(t);
            }
        }
        *self = times;
        true
    }
}

/// Serialized as a plain sequence of `(time, value)` pairs; times alone as
/// `(time, 0)`, so both layouts write the same format.
impl Serialize for Points {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.holds_times() {
            s.collect_seq(self.as_slice::<i64>().iter().map(|&t| (t, 0u64)))
        } else {
            s.collect_seq(self.as_slice::<Point>())
        }
    }
}

/// Read back as pairs; [`Points::make_times`] gives a window that keeps
/// times its own layout.
impl<'de> Deserialize<'de> for Points {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Point>::deserialize(d)?;
        let mut p = Points::default();
        if v.len() > PAIRS_INLINE {
            p = Points::Heap { buf: v, head: 0 };
        } else {
            for x in v {
                p.push_back(x);
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use rand::{Rng, SeedableRng};

    use super::{Item, Point, Points};

    /// Random pushes, inserts, pops and drops on `p` and on a `VecDeque`,
    /// compared after every step.
    fn behaves_like_a_vec_deque<T: Item>(empty: Points) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for round in 0..400 {
            let (mut p, mut d) = (empty.clone(), VecDeque::new());
            let mut most = 0;
            // Some rounds mostly push, some mostly pop, so buffers fill,
            // compact and grow in every order.
            let pop_share = [1, 4, 6][round % 3];
            for step in 0..120 {
                if rng.gen_range(0..10) < pop_share {
                    assert_eq!(p.pop_front::<T>(), d.pop_front());
                } else if rng.gen_range(0..10) == 0 {
                    let n = rng.gen_range(0..=d.len());
                    p.drop_front::<T>(n);
                    d.drain(..n);
                } else {
                    let at = if rng.gen_bool(0.8) { d.len() } else { rng.gen_range(0..=d.len()) };
                    // Pairs carry the step as their value; times carry none.
                    let x = T::new(rng.gen_range(0..100), if empty.holds_times() { 0 } else { step });
                    p.insert(at, x);
                    d.insert(at, x);
                }
                assert_eq!(p.len(), d.len());
                assert_eq!(p.holds_times(), empty.holds_times(), "a run keeps its layout");
                most = most.max(d.len());
                assert_eq!(p.as_slice::<T>(), d.iter().copied().collect::<Vec<_>>().as_slice());
                let (buf_len, cap, head) = match &p {
                    Points::Heap { buf, head } => (buf.len(), buf.capacity(), *head),
                    Points::TimesHeap { buf, head } => (buf.len(), buf.capacity(), *head),
                    _ => continue,
                };
                assert!(cap <= 4 * most.max(4), "a buffer stays within 4x the most points it held");
                assert!(head as usize <= buf_len);
            }
        }
    }

    #[test]
    fn pairs_behave_like_a_vec_deque() {
        behaves_like_a_vec_deque::<Point>(Points::default());
    }

    #[test]
    fn times_behave_like_a_vec_deque() {
        behaves_like_a_vec_deque::<i64>(Points::times());
    }

    #[test]
    fn times_keep_four_points_inline_and_pairs_two() {
        let (mut times, mut pairs) = (Points::times(), Points::default());
        for t in 0..4 {
            times.push_back(t);
            if t < 2 {
                pairs.push_back((t, 7));
            }
        }
        assert!(times.heap_ptrs().is_none() && pairs.heap_ptrs().is_none());
        times.push_back(4i64);
        pairs.push_back((2, 7));
        assert!(times.heap_ptrs().is_some() && pairs.heap_ptrs().is_some());
        assert_eq!(times.as_slice::<i64>(), &[0, 1, 2, 3, 4]);
    }

    #[test]
    fn times_are_written_as_pairs_and_taken_back() {
        for n in [0i64, 3, 4, 5, 40] {
            let mut times = Points::times();
            for t in 0..n {
                times.push_back(t * 10);
            }
            times.drop_front::<i64>(n.min(1) as usize);
            let bytes = bincode::serialize(&times).expect("encode");
            let mut back: Points = bincode::deserialize(&bytes).expect("decode");
            let pairs: Vec<Point> = times.as_slice::<i64>().iter().map(|&t| (t, 0)).collect();
            assert_eq!(back.as_slice::<Point>(), pairs.as_slice(), "the snapshot format holds pairs");
            assert!(back.make_times());
            assert!(back.holds_times());
            assert_eq!(back.as_slice::<i64>(), times.as_slice::<i64>());
        }
        let mut valued = Points::default();
        valued.push_back((5, 0));
        valued.push_back((6, 1));
        assert!(!valued.make_times(), "a pair with a value is not a time");
    }

    #[test]
    fn a_steady_window_does_not_move_its_points_on_every_push() {
        // A window holding 30 points, one in and one out per step: the
        // buffer grows once past three quarters full, then compacts rarely.
        let mut p = Points::default();
        for i in 0..30 {
            p.push_back((i, 0));
        }
        let mut compactions = 0;
        for i in 30..10_000 {
            let before = p.heap_ptrs().map(|(a, _)| a);
            p.pop_front::<Point>();
            p.push_back((i, 0));
            if let (Some(a), Points::Heap { head: 0, .. }) = (before, &p) {
                if p.heap_ptrs().map(|(b, _)| b) != Some(a) {
                    compactions += 1;
                }
            }
        }
        assert!(compactions < 10_000 / 8, "{compactions} compactions");
        assert_eq!(p.len(), 30);
        assert_eq!(p.as_slice::<Point>().first(), Some(&(9_970, 0)));
    }
}
