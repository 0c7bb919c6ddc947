//! An open-addressing table keyed by 128-bit keyed hashes, built so the
//! slot an entity lives in can be prefetched before it is read: the engine
//! asks for the slots of all of an event's entities at once, so their cache
//! misses overlap.
//!
//! Linear probing over a power-of-two array, at most 3/4 full, with
//! backward-shift deletion (no tombstones). Key 0 marks an empty slot; the
//! engine's keys are SipHash outputs, and a key of 0 is stored as 1.

pub(crate) struct KeyTable<V> {
    keys: Vec<u128>,
    vals: Vec<Option<V>>,
    len: usize,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable { keys: Vec::new(), vals: Vec::new(), len: 0 }
    }
}

#[inline]
fn fix(key: u128) -> u128 {
    if key == 0 {
        1
    } else {
        key
    }
}

impl<V> KeyTable<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, key: u128) -> usize {
        ((key as u64) ^ ((key >> 64) as u64)) as usize & (self.keys.len() - 1)
    }

    /// Asks the CPU for the key's home slot (a hint; never faults).
    #[inline]
    pub fn prefetch(&self, key: u128) {
        if self.keys.is_empty() {
            return;
        }
        let i = self.home(fix(key));
        crate::state::prefetch(&self.keys[i] as *const u128 as *const u8);
        crate::state::prefetch(&self.vals[i] as *const Option<V> as *const u8);
    }

    /// The slot holding `key`. Valid until the next insert or remove.
    #[inline]
    pub fn find(&self, key: u128) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        let key = fix(key);
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        loop {
            match self.keys[i] {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The value in a slot from [`KeyTable::find`] or [`KeyTable::insert`].
    #[inline]
    pub fn at_mut(&mut self, slot: usize) -> &mut V {
        self.vals[slot].as_mut().expect("an occupied slot")
    }

    #[inline]
    pub fn at(&self, slot: usize) -> &V {
        self.vals[slot].as_ref().expect("an occupied slot")
    }

    pub fn reserve(&mut self, n: usize) {
        let want = (self.len + n) * 4 / 3 + 1;
        if want > self.keys.len() {
            self.rehash(want.next_power_of_two().max(16));
        }
    }

    fn rehash(&mut self, size: usize) {
        let keys = std::mem::replace(&mut self.keys, vec![0; size]);
        let vals = std::mem::replace(&mut self.vals, (0..size).map(|_| None).collect());
        let mask = size - 1;
        for (k, v) in keys.into_iter().zip(vals) {
            if k == 0 {
                continue;
            }
            let mut i = self.home(k);
            while self.keys[i] != 0 {
                i = (i + 1) & mask;
            }
            self.keys[i] = k;
            self.vals[i] = v;
        }
    }

    /// Inserts or replaces; returns the slot.
    pub fn insert(&mut self, key: u128, val: V) -> usize {
        if (self.len + 1) * 4 > self.keys.len() * 3 {
            self.rehash((self.keys.len() * 2).max(16));
        }
        let key = fix(key);
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        loop {
            match self.keys[i] {
                0 => {
                    self.keys[i] = key;
                    self.vals[i] = Some(val);
                    self.len += 1;
                    return i;
                }
                k if k == key => {
                    self.vals[i] = Some(val);
                    return i;
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    pub fn remove(&mut self, key: &u128) -> Option<V> {
        self.remove_tracking(key, |_, _, _| {})
    }

    /// Number of slots; it changes only when the table is rebuilt (and every
    /// entry moves).
    pub fn capacity(&self) -> usize {
        self.keys.len()
    }

    /// Like [`KeyTable::remove`], calling `moved(slot, key, value)` for every
    /// entry the deletion shifts into an earlier slot (a walk over the
    /// slots in progress may have passed it).
    pub fn remove_tracking(&mut self, key: &u128, mut moved: impl FnMut(usize, u128, &mut V)) -> Option<V> {
        let mut i = self.find(*key)?;
        let out = self.vals[i].take();
        self.keys[i] = 0;
        self.len -= 1;
        // Backward shift: pull later entries of the run into the hole when
        // their home lies at or before it.
        let mask = self.keys.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let k = self.keys[j];
            if k == 0 {
                break;
            }
            let home = self.home(k);
            // Is `home` cyclically outside (i, j]? Then the entry may move to i.
            let in_range = if i <= j { home > i && home <= j } else { home > i || home <= j };
            if !in_range {
                self.keys[i] = k;
                self.vals[i] = self.vals[j].take();
                self.keys[j] = 0;
                if let Some(v) = self.vals[i].as_mut() {
                    moved(i, k, v);
                }
                i = j;
            }
        }
        out
    }

    /// The key and value in a slot, if occupied.
    #[inline]
    pub fn slot_mut(&mut self, slot: usize) -> Option<(u128, &mut V)> {
        let k = *self.keys.get(slot)?;
        self.vals[slot].as_mut().map(|v| (k, v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u128, &V)> {
        self.keys.iter().zip(&self.vals).filter(|(k, _)| **k != 0).filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
    }
}

/// How many times each 64-bit value (a keyed hash) occurs: the distinct
/// count of a long sliding window. Open addressing like [`KeyTable`], one
/// array of `(value, count)` whose slot for a value can be prefetched before
/// the event's update touches it. Slots with count 0 are empty; the value 0,
/// which marks nothing here, is counted like any other.
#[derive(Clone, Debug, Default)]
pub(crate) struct CountTable {
    slots: Vec<(u64, u32)>,
    len: usize,
}

impl CountTable {
    /// Distinct values with a count above zero.
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, v: u64) -> usize {
        // Values are keyed hashes already: their low bits are uniform.
        v as usize & (self.slots.len() - 1)
    }

    /// Asks the CPU for the value's home slot (a hint; never faults).
    #[inline]
    pub fn prefetch(&self, v: u64) {
        if !self.slots.is_empty() {
            crate::state::prefetch(&self.slots[self.home(v)] as *const (u64, u32) as *const u8);
        }
    }

    #[inline]
    fn find(&self, v: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(v);
        loop {
            match self.slots[i] {
                (_, 0) => return Err(i),
                (k, _) if k == v => return Ok(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    pub fn increment(&mut self, v: u64) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        match self.find(v) {
            Ok(i) => self.slots[i].1 += 1,
            Err(i) => {
                self.slots[i] = (v, 1);
                self.len += 1;
            }
        }
    }

    /// Counts one occurrence less; a value not counted is left alone.
    pub fn decrement(&mut self, v: u64) {
        if self.slots.is_empty() {
            return;
        }
        let Ok(mut i) = self.find(v) else { return };
        self.slots[i].1 -= 1;
        if self.slots[i].1 > 0 {
            return;
        }
        self.len -= 1;
        // Backward shift, as in `KeyTable::remove`.
        let mask = self.slots.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let (k, n) = self.slots[j];
            if n == 0 {
                break;
            }
            let home = self.home(k);
            let in_range = if i <= j { home > i && home <= j } else { home > i || home <= j };
            if !in_range {
                self.slots[i] = (k, n);
                self.slots[j].1 = 0;
                i = j;
            }
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, vec![(0, 0); size]);
        for (k, n) in old.into_iter().filter(|&(_, n)| n > 0) {
            let Err(i) = self.find(k) else { unreachable!("values are unique") };
            self.slots[i] = (k, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};

    use super::KeyTable;

    #[test]
    fn behaves_like_a_hash_map_under_random_inserts_and_removes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut t: KeyTable<u64> = KeyTable::default();
        let mut m: HashMap<u128, u64> = HashMap::new();
        for step in 0..60_000u64 {
            // Few distinct keys with colliding low bits, so runs are long.
            let key = u128::from(rng.gen_range(1..3000u32)) << 64 | u128::from(rng.gen_range(0..4u8));
            match rng.gen_range(0..3) {
                0 | 1 => {
                    t.insert(key, step);
                    m.insert(key, step);
                }
                _ => assert_eq!(t.remove(&key), m.remove(&key), "step {step}"),
            }
            assert_eq!(t.len(), m.len());
            if step % 997 == 0 {
                for (k, v) in &m {
                    assert_eq!(t.find(*k).map(|i| t.at(i)), Some(v));
                }
                assert_eq!(t.iter().count(), m.len());
            }
        }
        assert_eq!(t.find(0), None);
        let slot = t.insert(0, 7);
        assert_eq!(t.find(0), Some(slot));
        assert_eq!(t.at(slot), &7);
    }

    #[test]
    fn count_table_behaves_like_a_multiset() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut t = super::CountTable::default();
        let mut m: HashMap<u64, u32> = HashMap::new();
        for step in 0..60_000u64 {
            // Few values, colliding low bits and the value 0, so runs are long.
            let v = u64::from(rng.gen_range(0..400u32)) << 40 | u64::from(rng.gen_range(0..3u8));
            if rng.gen_bool(0.55) {
                t.increment(v);
                *m.entry(v).or_insert(0) += 1;
            } else {
                t.decrement(v);
                if let Some(n) = m.get_mut(&v) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&v);
                    }
                }
            }
            assert_eq!(t.len(), m.len(), "step {step}");
            if step % 991 == 0 {
                for (&v, &n) in &m {
                    assert_eq!(t.find(v).map(|i| t.slots[i].1), Ok(n));
                }
            }
        }
    }
}
