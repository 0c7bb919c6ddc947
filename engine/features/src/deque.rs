//! A deque of `(time, value)` points that keeps up to two points inline.
//!
//! Most series of most entities hold a point or two (a user's applications
//! in 30 days); keeping those inside the series, next to the entity's other
//! series, saves an allocation and a cache miss per feature per event.
//! Longer series move to a `VecDeque`.

use std::collections::vec_deque::{self, VecDeque};
use std::ops::{Bound, Index, RangeBounds};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

type Point = (i64, u64);
const INLINE: usize = 2;

#[derive(Debug, Clone)]
pub(crate) enum Points {
    Inline { len: u8, items: [Point; INLINE] },
    Heap(VecDeque<Point>),
}

impl Default for Points {
    fn default() -> Self {
        Points::Inline { len: 0, items: [(0, 0); INLINE] }
    }
}

/// Iterator over a range of points.
#[derive(Clone)]
pub(crate) enum Iter<'a> {
    Slice(std::slice::Iter<'a, Point>),
    Deque(vec_deque::Iter<'a, Point>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Point;
    #[inline]
    fn next(&mut self) -> Option<&'a Point> {
        match self {
            Iter::Slice(i) => i.next(),
            Iter::Deque(i) => i.next(),
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Slice(i) => i.size_hint(),
            Iter::Deque(i) => i.size_hint(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl Points {
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Points::Inline { len, .. } => *len as usize,
            Points::Heap(d) => d.len(),
        }
    }

    #[inline]
    pub fn front(&self) -> Option<&Point> {
        match self {
            Points::Inline { len, items } => items[..*len as usize].first(),
            Points::Heap(d) => d.front(),
        }
    }

    #[inline]
    pub fn back(&self) -> Option<&Point> {
        match self {
            Points::Inline { len, items } => items[..*len as usize].last(),
            Points::Heap(d) => d.back(),
        }
    }

    #[inline]
    pub fn partition_point(&self, pred: impl FnMut(&Point) -> bool) -> usize {
        match self {
            Points::Inline { len, items } => items[..*len as usize].partition_point(pred),
            Points::Heap(d) => d.partition_point(pred),
        }
    }

    pub fn push_back(&mut self, p: Point) {
        let at = self.len();
        self.insert(at, p);
    }

    pub fn insert(&mut self, at: usize, p: Point) {
        match self {
            Points::Inline { len, items } if (*len as usize) < INLINE => {
                let n = *len as usize;
                items.copy_within(at..n, at + 1);
                items[at] = p;
                *len += 1;
            }
            Points::Inline { len, items } => {
                let mut d: VecDeque<Point> = VecDeque::with_capacity(2 * INLINE);
                d.extend(&items[..*len as usize]);
                d.insert(at, p);
                *self = Points::Heap(d);
            }
            Points::Heap(d) => d.insert(at, p),
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
            Points::Heap(d) => d.pop_front(),
        }
    }

    #[inline]
    pub fn range(&self, r: impl RangeBounds<usize>) -> Iter<'_> {
        let start = match r.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match r.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len(),
        };
        match self {
            Points::Inline { items, .. } => Iter::Slice(items[start..end].iter()),
            Points::Heap(d) => Iter::Deque(d.range(start..end)),
        }
    }

    /// The heap buffer, if any (for prefetching).
    pub fn heap_ptrs(&self) -> Option<(*const u8, Option<*const u8>)> {
        match self {
            Points::Inline { .. } => None,
            Points::Heap(d) => {
                let (a, b) = d.as_slices();
                let last = b.last().or(a.last()).map(|p| p as *const Point as *const u8);
                Some((a.as_ptr() as *const u8, last))
            }
        }
    }
}

impl Index<usize> for Points {
    type Output = Point;
    #[inline]
    fn index(&self, i: usize) -> &Point {
        match self {
            Points::Inline { len, items } => &items[..*len as usize][i],
            Points::Heap(d) => &d[i],
        }
    }
}

/// Serialized as a plain sequence, like a `VecDeque`.
impl Serialize for Points {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.range(..))
    }
}

impl<'de> Deserialize<'de> for Points {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Point>::deserialize(d)?;
        let mut p = Points::default();
        if v.len() > INLINE {
            p = Points::Heap(v.into());
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
        for _ in 0..200 {
            let (mut p, mut d) = (Points::default(), VecDeque::new());
            for step in 0..40 {
                match rng.gen_range(0..4) {
                    0 => assert_eq!(p.pop_front(), d.pop_front()),
                    _ => {
                        let at = rng.gen_range(0..=d.len());
                        let x = (rng.gen_range(0..100), step);
                        p.insert(at, x);
                        d.insert(at, x);
                    }
                }
                assert_eq!(p.len(), d.len());
                assert_eq!(p.range(..).copied().collect::<Vec<_>>(), d.iter().copied().collect::<Vec<_>>());
                assert_eq!(p.front(), d.front());
                assert_eq!(p.back(), d.back());
                if !d.is_empty() {
                    let i = rng.gen_range(0..d.len());
                    assert_eq!(p[i], d[i]);
                    let lo = rng.gen_range(0..=d.len());
                    assert_eq!(p.range(lo..).count(), d.len() - lo);
                }
            }
        }
    }
}
