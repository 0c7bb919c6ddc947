//! A sorted run of `(time, value)` points that keeps up to two points inline
//! and the rest in one contiguous buffer.
//!
//! Most series of most entities hold a point or two (a user's applications
//! in 30 days); keeping those inside the series, next to the entity's other
//! series, saves an allocation and a cache miss per feature per event.
//! Longer series move to a buffer read as one slice: a window's points are
//! always contiguous, so reads fold over a plain slice (no ring wrap-around)
//! and a prefetch of the buffer brings in the points in memory order.
//! Points leave from the front by moving a head index; the buffer is
//! compacted only when a point would not fit otherwise, and grows when it is
//! more than three quarters full, so each point is moved a bounded number of
//! times on average.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

type Point = (i64, u64);
const INLINE: usize = 2;

#[derive(Debug, Clone)]
pub(crate) enum Points {
    Inline {
        len: u8,
        items: [Point; INLINE],
    },
    /// The points are `buf[head..]`.
    Heap {
        buf: Vec<Point>,
        head: u32,
    },
}

impl Default for Points {
    fn default() -> Self {
        Points::Inline { len: 0, items: [(0, 0); INLINE] }
    }
}

impl Points {
    /// The points, oldest first.
    #[inline]
    pub fn as_slice(&self) -> &[Point] {
        match self {
            Points::Inline { len, items } => &items[..*len as usize],
            Points::Heap { buf, head } => &buf[*head as usize..],
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Points::Inline { len, .. } => *len as usize,
            Points::Heap { buf, head } => buf.len() - *head as usize,
        }
    }

    #[inline]
    pub fn front(&self) -> Option<&Point> {
        self.as_slice().first()
    }

    #[inline]
    pub fn back(&self) -> Option<&Point> {
        self.as_slice().last()
    }

    /// Appends `p`; the common case (room left) stays out of [`Points::insert`].
    #[inline]
    pub fn push_back(&mut self, p: Point) {
        match self {
            Points::Inline { len, items } if (*len as usize) < INLINE => {
                items[*len as usize] = p;
                *len += 1;
            }
            Points::Heap { buf, .. } if buf.len() < buf.capacity() => buf.push(p),
            _ => {
                let at = self.len();
                self.insert(at, p);
            }
        }
    }

    /// Inserts `p` so that it becomes the point at index `at`.
    pub fn insert(&mut self, at: usize, p: Point) {
        match self {
            Points::Inline { len, items } if (*len as usize) < INLINE => {
                let n = *len as usize;
                items.copy_within(at..n, at + 1);
                items[at] = p;
                *len += 1;
            }
            Points::Inline { len, items } => {
                let mut buf: Vec<Point> = Vec::with_capacity(2 * INLINE);
                buf.extend_from_slice(&items[..*len as usize]);
                buf.insert(at, p);
                *self = Points::Heap { buf, head: 0 };
            }
            Points::Heap { buf, head } => {
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
            }
        }
    }

    pub fn pop_front(&mut self) -> Option<Point> {
        match self {
            Points::Inline { len, items } => {
                let n = *len as usize;
                if n == 0 {
                    return None;
                }
                let first = items[0];
                items.copy_within(1..n, 0);
                *len -= 1;
                Some(first)
            }
            Points::Heap { buf, head } => {
                let first = *buf.get(*head as usize)?;
                *head += 1;
                if *head as usize == buf.len() {
                    buf.clear();
                    *head = 0;
                }
                Some(first)
            }
        }
    }

    /// Drops the `n` oldest points (`n` at most the length).
    #[inline]
    pub fn drop_front(&mut self, n: usize) {
        match self {
            Points::Inline { len, items } => {
                let live = *len as usize;
                debug_assert!(n <= live);
                items.copy_within(n..live, 0);
                *len -= n as u8;
            }
            Points::Heap { buf, head } => {
                debug_assert!(*head as usize + n <= buf.len());
                *head += n as u32;
                if *head as usize == buf.len() {
                    buf.clear();
                    *head = 0;
                }
            }
        }
    }

    /// The start and the last point of the buffer, if any (for prefetching).
    #[inline]
    pub fn heap_ptrs(&self) -> Option<(*const u8, *const u8)> {
        match self {
            Points::Inline { .. } => None,
            Points::Heap { buf, head } => {
                let live = &buf[*head as usize..];
                let first = live.as_ptr() as *const u8;
                Some((first, live.last().map_or(first, |p| p as *const Point as *const u8)))
            }
        }
    }
}

impl std::ops::Deref for Points {
    type Target = [Point];
    #[inline]
    fn deref(&self) -> &[Point] {
        self.as_slice()
    }
}

/// Serialized as a plain sequence of points.
impl Serialize for Points {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Points {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Point>::deserialize(d)?;
        let mut p = Points::default();
        if v.len() > INLINE {
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

    use super::Points;

    #[test]
    fn behaves_like_a_vec_deque() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for round in 0..400 {
            let (mut p, mut d) = (Points::default(), VecDeque::new());
            let mut most = 0;
            // Some rounds mostly push, some mostly pop, so buffers fill,
            // compact and grow in every order.
            let pop_share = [1, 4, 6][round % 3];
            for step in 0..120 {
                if rng.gen_range(0..10) < pop_share {
                    assert_eq!(p.pop_front(), d.pop_front());
                } else if rng.gen_range(0..10) == 0 {
                    let n = rng.gen_range(0..=d.len());
                    p.drop_front(n);
                    d.drain(..n);
                } else {
                    let at = if rng.gen_bool(0.8) { d.len() } else { rng.gen_range(0..=d.len()) };
                    let x = (rng.gen_range(0..100), step);
                    p.insert(at, x);
                    d.insert(at, x);
                }
                assert_eq!(p.len(), d.len());
                most = most.max(d.len());
                assert_eq!(p.as_slice(), d.iter().copied().collect::<Vec<_>>().as_slice());
                assert_eq!(p.front(), d.front());
                assert_eq!(p.back(), d.back());
                if let Points::Heap { buf, head } = &p {
                    assert!(buf.capacity() <= 4 * most.max(4), "a buffer stays within 4x the most points it held");
                    assert!(*head as usize <= buf.len());
                }
            }
        }
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
            p.pop_front();
            p.push_back((i, 0));
            if let (Some(a), Points::Heap { head: 0, .. }) = (before, &p) {
                if p.heap_ptrs().map(|(b, _)| b) != Some(a) {
                    compactions += 1;
                }
            }
        }
        assert!(compactions < 10_000 / 8, "{compactions} compactions");
        assert_eq!(p.len(), 30);
        assert_eq!(p.front(), Some(&(9_970, 0)));
    }
}
