//! An open-addressing table keyed by 128-bit keyed hashes, built so the
//! slot an entity lives in can be prefetched before it is read: the engine
//! asks for the slots of all of an event's entities at once, so their cache
//! misses overlap.
//!
//! Linear probing over a power-of-two array, at most 3/4 full, with
//! backward-shift deletion (no tombstones). Key 0 marks an empty slot; the
//! engine's keys are SipHash outputs, and a key of 0 is stored as 1. A slot
//! holds the key and its value side by side in one 64-byte line, so finding
//! an entity and reading it cost one cache miss, not two.
//!
//! The table grows a little at a time, so no single event pays for
//! doubling it (rebuilding a table of a million entities at once stalled
//! an event for tens of milliseconds, more the larger the table):
//! 1. *making*: an array twice the size is made (empty slots) on a helper
//!    thread when it is large, so that the kernel faults its pages in off
//!    the event loop (on fresh memory, a 2 MiB page can take
//!    milliseconds); the current array stays in use meanwhile, up to 15/16
//!    full;
//! 2. *moving*: the larger array becomes current, and the previous one is
//!    emptied into it run by run (a run is a block of occupied slots
//!    between empty ones), a few per operation. A key is looked for in
//!    both. Whole runs move at once, so every run left behind is intact and
//!    probing it stays exact. The emptied array is freed on a helper
//!    thread too.
//!
//! A large table that entries leave (an expiry wave) halves the same way,
//! once fewer than 3/16 of its slots hold entries, so its memory follows
//! its entities down as well as up. A halving array that inserts outgrow
//! while it is made is given up.
//!
//! Slots are numbered for [`KeyTable::find`] and for walks over the table
//! (a snapshot capture, `capture`): while moving, the previous array holds
//! numbers `0..previous size` and the current ones follow, so an entry that
//! growth moves gets a number after every one it could have had before: a
//! walk never misses it, and a walk starts over in the current array once
//! the previous one is dropped. An entry that a deletion's shift moves
//! behind the walk is reported to the caller's `moved` callback.

pub(crate) struct KeyTable<V> {
    slots: Vec<Slot<V>>,
    len: usize,
    growth: Option<Growth<V>>,
    /// The slot number a walk over the table has reached (see the module doc).
    pub(crate) walk: usize,
}

enum Growth<V> {
    /// The next array, of `size` slots, being made on a helper thread.
    Making { made: std::thread::JoinHandle<Array<V>>, size: usize },
    /// The previous array, being emptied into the current one: `done`
    /// slots from `start + 1` on (cyclically) are empty; `start` was empty
    /// when moving began and stays so, as nothing is inserted there.
    Moving { slots: Vec<Slot<V>>, start: usize, done: usize },
}

/// A key and its value side by side, so finding an entity and reading it
/// cost one cache line: an entity's slot is 64 bytes, and jemalloc, which
/// `riskd` runs on (`riskd-alloc`), starts arrays of this size on a line
/// boundary.
struct Slot<V> {
    key: u128,
    val: Option<V>,
}

type Array<V> = Vec<Slot<V>>;

// An entity's key and value (40 bytes) share one cache line.
const _: () = assert!(std::mem::size_of::<Slot<crate::state::Entity>>() == 64);

/// Arrays at least this large (in bytes) are made and freed on a helper thread.
const OFF_THREAD_BYTES: usize = 1 << 20;
/// Slots of the previous array emptied per growth step while moving (whole
/// runs, so a step may go a little over).
const MOVE_STEP: usize = 32;
/// A table of more slots than this halves when fewer than 3/16 of them
/// hold entries (it is then 3/8 full, as after doubling).
const SHRINK_ABOVE: usize = 1024;

/// An array of `size` empty slots, every page written (so that its pages
/// are faulted in here, not by their first writer).
fn make_array<V>(size: usize) -> Array<V> {
    (0..size).map(|_| Slot { key: 0, val: None }).collect()
}

fn off_thread<V>(size: usize) -> bool {
    size * std::mem::size_of::<Slot<V>>() >= OFF_THREAD_BYTES
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable { slots: Vec::new(), len: 0, growth: None, walk: 0 }
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

#[inline]
fn home(key: u128, size: usize) -> usize {
    ((key as u64) ^ ((key >> 64) as u64)) as usize & (size - 1)
}

/// The slot holding `key`, or the empty slot that ends its probe.
#[inline]
fn probe<V>(slots: &[Slot<V>], key: u128) -> Result<usize, usize> {
    let mask = slots.len() - 1;
    let mut i = home(key, slots.len());
    loop {
        match slots[i].key {
            0 => return Err(i),
            k if k == key => return Ok(i),
            _ => i = (i + 1) & mask,
        }
    }
}

/// Asks for the first two slots `probe` reads for `key`.
#[inline]
fn prefetch_probe<V>(slots: &[Slot<V>], key: u128) {
    if !slots.is_empty() {
        let i = home(key, slots.len());
        crate::state::prefetch(&slots[i] as *const Slot<V> as *const u8);
        crate::state::prefetch(&slots[(i + 1) & (slots.len() - 1)] as *const Slot<V> as *const u8);
    }
}

/// Puts a key that is not in the array into it; returns its slot.
fn place<V>(slots: &mut [Slot<V>], key: u128, val: Option<V>) -> usize {
    let Err(i) = probe(slots, key) else { unreachable!("the key is not in the array") };
    slots[i] = Slot { key, val };
    i
}

/// Empties slot `i` with a backward shift: later entries of its run move
/// into the hole when their home lies at or before it. Slot numbers of
/// this array start at `base`; `moved` hears of every entry shifted to a
/// number before `walk`.
fn take_at<V>(
    slots: &mut [Slot<V>],
    mut i: usize,
    base: usize,
    walk: usize,
    moved: &mut impl FnMut(u128, &mut V),
) -> Option<V> {
    let out = slots[i].val.take();
    slots[i].key = 0;
    let mask = slots.len() - 1;
    let mut j = i;
    loop {
        j = (j + 1) & mask;
        let k = slots[j].key;
        if k == 0 {
            break;
        }
        let h = home(k, slots.len());
        // Is `h` cyclically outside (i, j]? Then the entry may move to i.
        let in_range = if i <= j { h > i && h <= j } else { h > i || h <= j };
        if !in_range {
            slots[i].key = k;
            slots[i].val = slots[j].val.take();
            slots[j].key = 0;
            if base + i < walk {
                if let Some(v) = slots[i].val.as_mut() {
                    moved(k, v);
                }
            }
            i = j;
        }
    }
    out
}

/// Drops an array no longer used (emptied, or never used), on a helper
/// thread when it is large (freeing takes a while too; a failed spawn drops
/// it here).
fn free<V: Send + 'static>(mut slots: Vec<Slot<V>>) {
    debug_assert!(slots.iter().all(|s| s.key == 0 && s.val.is_none()), "only empty arrays are freed");
    // SAFETY: shortening a vector only skips dropping its elements, and
    // every slot here is empty: nothing to drop, and no pass over the
    // whole array to find that out.
    unsafe { slots.set_len(0) };
    if off_thread::<V>(slots.capacity()) {
        let _ = std::thread::Builder::new().name("riskd-table-free".into()).spawn(move || drop(slots));
    }
}

impl<V: Send + 'static> KeyTable<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The number of the current array's first slot.
    #[inline]
    fn base(&self) -> usize {
        match &self.growth {
            Some(Growth::Moving { slots, .. }) => slots.len(),
            _ => 0,
        }
    }

    /// Asks the CPU for the key's home slot and the one after it (a hint;
    /// never faults). A table is at most 3/4 full; at 3/8 to 3/4 full (as
    /// from one doubling to the next), 19% to 38% of the keys are not in
    /// their home slot, so their lookup reads the next one too;
    /// that is the next line, nearly always on the same page, so asking for
    /// it costs no page walk of its own.
    #[inline]
    pub fn prefetch(&self, key: u128) {
        let key = fix(key);
        prefetch_probe(&self.slots, key);
        if let Some(Growth::Moving { slots, .. }) = &self.growth {
            prefetch_probe(slots, key);
        }
    }

    /// The slot holding `key`. Valid until the next insert, remove or step.
    #[inline]
    pub fn find(&self, key: u128) -> Option<usize> {
        let key = fix(key);
        if !self.slots.is_empty() {
            if let Ok(i) = probe(&self.slots, key) {
                return Some(self.base() + i);
            }
        }
        match &self.growth {
            Some(Growth::Moving { slots, .. }) => probe(slots, key).ok(),
            _ => None,
        }
    }

    /// The array holding slot number `slot`, the slot's index in it, and
    /// the number of its first slot.
    #[inline]
    fn arrays_mut(&mut self, slot: usize) -> (&mut [Slot<V>], usize, usize) {
        let base = self.base();
        match &mut self.growth {
            Some(Growth::Moving { slots, .. }) if slot < base => (slots, slot, 0),
            _ => (&mut self.slots, slot - base, base),
        }
    }

    /// The value in a slot from [`KeyTable::find`] or [`KeyTable::insert`].
    #[inline]
    pub fn at_mut(&mut self, slot: usize) -> &mut V {
        let (slots, i, _) = self.arrays_mut(slot);
        slots[i].val.as_mut().expect("an occupied slot")
    }

    #[inline]
    pub fn at(&self, slot: usize) -> &V {
        let base = self.base();
        match &self.growth {
            Some(Growth::Moving { slots, .. }) if slot < base => slots[slot].val.as_ref(),
            _ => self.slots[slot - base].val.as_ref(),
        }
        .expect("an occupied slot")
    }

    /// Room for `n` more entries at once, without growing step by step (a
    /// restore). The walk starts over, as every entry may move.
    pub fn reserve(&mut self, n: usize) {
        self.finish_growth();
        let want = (self.len + n) * 4 / 3 + 1;
        if want > self.slots.len() {
            let size = want.next_power_of_two().max(16);
            let slots = std::mem::replace(&mut self.slots, make_array(size));
            for Slot { key, val } in slots {
                if key != 0 {
                    place(&mut self.slots, key, val);
                }
            }
            self.walk = 0;
        }
    }

    /// Inserts or replaces; returns the slot. Growth takes a step (see the
    /// module doc).
    pub fn insert(&mut self, key: u128, val: V) -> usize {
        let key = fix(key);
        if let Some(slot) = self.find(key) {
            *self.at_mut(slot) = val;
            return slot;
        }
        self.step();
        if self.slots.is_empty() {
            self.slots = make_array(16);
        }
        let cap = self.slots.len();
        match self.growth {
            None if (self.len + 1) * 4 > cap * 3 => self.begin_growth(2 * cap),
            Some(Growth::Making { .. }) if (self.len + 1) * 16 > cap * 15 => {
                // Inserts outran the making (many new entities at once,
                // while the kernel is slow to give fresh pages): wait for it.
                self.finish_making();
            }
            Some(Growth::Moving { .. }) if (self.len + 1) * 4 > cap * 3 => {
                // Inserts outran the moving (a table starting small): finish
                // it, then grow again.
                self.finish_growth();
                self.begin_growth(2 * self.slots.len());
            }
            _ => {}
        }
        let i = place(&mut self.slots, key, Some(val));
        self.len += 1;
        self.base() + i
    }

    /// Takes a step of a growth in progress, if any.
    #[inline]
    pub fn step(&mut self) {
        match &mut self.growth {
            None => {}
            Some(Growth::Making { ref made, .. }) if made.is_finished() => self.finish_making(),
            Some(Growth::Making { .. }) => {}
            Some(Growth::Moving { .. }) => self.move_runs(MOVE_STEP),
        }
    }

    /// Starts growing to `size` slots: makes the array on a helper thread
    /// when it is large (and a thread can be had), at once otherwise.
    fn begin_growth(&mut self, size: usize) {
        if off_thread::<V>(size) {
            let made = std::thread::Builder::new().name("riskd-table-grow".into()).spawn(move || make_array(size));
            if let Ok(made) = made {
                self.growth = Some(Growth::Making { made, size });
                return;
            }
        }
        let slots = make_array(size);
        self.start_moving(slots);
    }

    /// Waits for the array being made, then starts moving into it.
    fn finish_making(&mut self) {
        match self.growth.take() {
            Some(Growth::Making { made, size }) => {
                // A helper that failed (it only allocates) is made up for here.
                let slots = made.join().unwrap_or_else(|_| make_array(size));
                if (self.len + 1) * 4 > size * 3 {
                    // A halving array that inserts outgrew while it was
                    // made: given up (a later removal may try again).
                    free(slots);
                    return;
                }
                self.start_moving(slots);
            }
            other => self.growth = other,
        }
    }

    /// The new array becomes current; the previous one is to be emptied.
    fn start_moving(&mut self, slots: Vec<Slot<V>>) {
        let slots = std::mem::replace(&mut self.slots, slots);
        let start = slots.iter().position(|s| s.key == 0).expect("a table is never full");
        self.growth = Some(Growth::Moving { slots, start, done: 0 });
    }

    fn finish_growth(&mut self) {
        self.finish_making();
        self.move_runs(usize::MAX);
    }

    /// Moves whole runs of the previous array into the current one, about
    /// `budget` slots' worth; drops the previous array once empty.
    fn move_runs(&mut self, budget: usize) {
        let Some(Growth::Moving { slots, start, done }) = &mut self.growth else { return };
        let (size, base) = (slots.len(), slots.len());
        let mask = size - 1;
        let mut n = 0;
        while n < budget && *done < size {
            let mut j = (*start + 1 + *done) & mask;
            if slots[j].key == 0 {
                *done += 1;
                n += 1;
                continue;
            }
            // A run starts here (the slot before it is empty, or emptied).
            while slots[j].key != 0 {
                let k = std::mem::replace(&mut slots[j].key, 0);
                place(&mut self.slots, k, slots[j].val.take());
                *done += 1;
                n += 1;
                j = (j + 1) & mask;
            }
        }
        if *done == size {
            // The previous numbers are gone: the current ones start at 0.
            if let Some(Growth::Moving { slots, .. }) = self.growth.take() {
                free(slots);
            }
            self.walk = self.walk.saturating_sub(base);
        }
    }

    /// Starts halving the table when it is large and fewer than 3/16 of
    /// its slots hold entries (after an expiry wave), the way it grows.
    fn shrink_if_sparse(&mut self) {
        let cap = self.slots.len();
        if self.growth.is_none() && cap > SHRINK_ABOVE && self.len * 16 < cap * 3 {
            self.begin_growth(cap / 2);
        }
    }

    pub fn remove(&mut self, key: &u128) -> Option<V> {
        self.remove_tracking(key, |_, _| {})
    }

    /// Number of slot numbers: both arrays' while moving.
    pub fn capacity(&self) -> usize {
        self.base() + self.slots.len()
    }

    /// Like [`KeyTable::remove`], calling `moved(key, value)` for every
    /// entry the deletion shifts into a slot behind the walk.
    pub fn remove_tracking(&mut self, key: &u128, mut moved: impl FnMut(u128, &mut V)) -> Option<V> {
        let slot = self.find(*key)?;
        let walk = self.walk;
        let (slots, i, base) = self.arrays_mut(slot);
        let out = take_at(slots, i, base, walk, &mut moved);
        self.len -= 1;
        self.shrink_if_sparse();
        out
    }

    /// The key and value in a slot, if occupied.
    #[inline]
    pub fn slot_mut(&mut self, slot: usize) -> Option<(u128, &mut V)> {
        let (slots, i, _) = self.arrays_mut(slot);
        let Slot { key, val } = slots.get_mut(i)?;
        val.as_mut().map(|v| (*key, v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u128, &V)> {
        let previous = match &self.growth {
            Some(Growth::Moving { slots, .. }) => Some(slots.iter()),
            _ => None,
        };
        self.slots
            .iter()
            .chain(previous.into_iter().flatten())
            .filter(|s| s.key != 0)
            .filter_map(|s| s.val.as_ref().map(|v| (s.key, v)))
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

    /// Every entry once, by walking the slot numbers.
    fn by_slots(t: &mut KeyTable<u64>) -> HashMap<u128, u64> {
        let mut seen = HashMap::new();
        for slot in 0..t.capacity() {
            if let Some((k, v)) = t.slot_mut(slot) {
                assert!(seen.insert(k, *v).is_none(), "key {k} in two slots");
            }
        }
        seen
    }

    #[test]
    fn behaves_like_a_hash_map_under_random_inserts_and_removes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut t: KeyTable<u64> = KeyTable::default();
        let mut m: HashMap<u128, u64> = HashMap::new();
        // Checks made while making arrays and while moving.
        let mut checked = [0; 2];
        for step in 0..120_000u64 {
            // The key range widens, so the table keeps growing while keys
            // come and go; colliding low bits make runs long.
            let key = u128::from(rng.gen_range(1..2 + step / 8)) << 64 | u128::from(rng.gen_range(0..4u8));
            match rng.gen_range(0..5) {
                0..=2 => {
                    t.insert(key, step);
                    m.insert(key, step);
                }
                3 => assert_eq!(t.remove(&key), m.remove(&key), "step {step}"),
                _ => t.step(),
            }
            assert_eq!(t.len(), m.len());
            let growing = match t.growth {
                Some(super::Growth::Making { .. }) => Some(0),
                Some(super::Growth::Moving { .. }) => Some(1),
                None => None,
            };
            if step % 997 == 0 || growing == Some(0) || (growing.is_some() && step % 7 == 0) {
                if let Some(phase) = growing {
                    checked[phase] += 1;
                }
                for (k, v) in &m {
                    assert_eq!(t.find(*k).map(|i| t.at(i)), Some(v));
                }
                assert_eq!(t.iter().count(), m.len());
                assert_eq!(by_slots(&mut t), m);
            }
        }
        // Making is brief (a helper thread allocating); the table is then
        // the current arrays alone, as when not growing.
        assert!(checked[0] >= 1 && checked[1] >= 20, "checks while making and moving: {checked:?}");
        assert_eq!(t.find(0), None);
        let slot = t.insert(0, 7);
        assert_eq!(t.find(0), Some(slot));
        assert_eq!(t.at(slot), &7);
    }

    /// Whether the table is moving into smaller arrays.
    fn shrinking(t: &KeyTable<u64>) -> bool {
        matches!(&t.growth, Some(super::Growth::Moving { slots, .. }) if slots.len() > t.slots.len())
    }

    /// An expiry wave: most entries leave (a few arrive), and the table
    /// halves, again and again, while it stays exactly a map.
    #[test]
    fn shrinks_as_entries_leave_and_stays_a_hash_map() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let mut t: KeyTable<u64> = KeyTable::default();
        let mut m: HashMap<u128, u64> = HashMap::new();
        let mut keys: Vec<u128> = Vec::new();
        for i in 0..60_000u64 {
            let key = u128::from(rng.gen::<u64>()) << 64 | u128::from(rng.gen_range(0..4u8));
            t.insert(key, i);
            m.insert(key, i);
            keys.push(key);
        }
        let peak = t.capacity();
        let (mut checked, mut halvings, mut last) = (0, 0, t.slots.len());
        let mut step = 0u64;
        while keys.len() > 200 {
            step += 1;
            match rng.gen_range(0..10) {
                0 => {
                    let key = u128::from(rng.gen::<u64>()) << 64;
                    t.insert(key, step);
                    m.insert(key, step);
                    keys.push(key);
                }
                // The engine steps every table on every event; here, early
                // on, removals outrun the moving (only inserts step it).
                1..=4 if keys.len() < 8_000 => t.step(),
                _ => {
                    let key = keys.swap_remove(rng.gen_range(0..keys.len()));
                    assert_eq!(t.remove(&key), m.remove(&key), "step {step}");
                }
            }
            assert_eq!(t.len(), m.len());
            if t.slots.len() < last {
                halvings += 1;
            }
            last = t.slots.len();
            if step.is_multiple_of(4999) || (t.growth.is_some() && step.is_multiple_of(13)) {
                checked += usize::from(shrinking(&t));
                for (k, v) in &m {
                    assert_eq!(t.find(*k).map(|i| t.at(i)), Some(v), "step {step}");
                }
                assert_eq!(by_slots(&mut t), m, "step {step}");
            }
        }
        while t.growth.is_some() {
            t.step();
        }
        assert_eq!(by_slots(&mut t), m);
        assert!(halvings >= 5, "the table halved {halvings} times");
        assert!(checked >= 20, "{checked} checks while moving into smaller arrays");
        assert!(t.capacity() <= 2 * super::SHRINK_ABOVE, "{} slots left of {peak}", t.capacity());
        assert!(t.len() * 16 >= t.slots.len() * 3 || t.slots.len() <= super::SHRINK_ABOVE);
    }

    /// Halving arrays that inserts outgrow while they are made are given
    /// up, and the table carries on whole.
    #[test]
    fn a_halving_outgrown_while_made_is_given_up() {
        let mut t: KeyTable<u64> = KeyTable::default();
        let mut m: HashMap<u128, u64> = HashMap::new();
        for i in 1..=3000u64 {
            t.insert(u128::from(i) << 64, i);
            m.insert(u128::from(i) << 64, i);
        }
        while t.growth.is_some() {
            t.step();
        }
        // 4,096 slots; arrays of 1,024 cannot take 3,000 entries.
        assert_eq!(t.slots.len(), 4096);
        let made = std::thread::spawn(|| super::make_array::<u64>(1024));
        t.growth = Some(super::Growth::Making { made, size: 1024 });
        t.finish_making();
        assert!(t.growth.is_none());
        assert_eq!(t.slots.len(), 4096);
        assert_eq!(by_slots(&mut t), m);
    }

    /// A walk over the slot numbers while the table changes, grows and
    /// shrinks (a snapshot capture's): every entry there at its start is
    /// reached, by the walk itself or by being reported as moved behind it,
    /// or is seen before it is removed.
    #[test]
    fn a_walk_reaches_every_entry_while_the_table_grows_and_shrinks() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (mut grown, mut shrunk) = (0, 0);
        for round in 0..30 {
            // Rounds from 20 on remove far more than they insert.
            let wave = round >= 20;
            let mut t: KeyTable<u64> = KeyTable::default();
            let mut next_key = 1u128;
            let mut fresh = |rng: &mut rand_chacha::ChaCha8Rng| {
                next_key += 1;
                next_key << 64 | u128::from(rng.gen_range(0..4u8))
            };
            // A wave starts from 4,096 slots, 3/8 to 5/8 full.
            for _ in 0..if wave { rng.gen_range(1600..2500) } else { rng.gen_range(100..3000) } {
                let k = fresh(&mut rng);
                t.insert(k, 0);
            }
            let at_start: HashMap<u128, u64> = t.iter().map(|(k, v)| (k, *v)).collect();
            let mut reached: std::collections::HashSet<u128> = Default::default();
            let mut live: Vec<u128> = at_start.keys().copied().collect();
            t.walk = 0;
            let mut steps = 0;
            while t.walk < t.capacity() {
                steps += 1;
                grown += usize::from(matches!(t.growth, Some(super::Growth::Moving { .. })));
                shrunk += usize::from(shrinking(&t));
                let op = rng.gen_range(0..10);
                // Mostly inserts, so the table grows during the walk; in a
                // wave mostly removals, so it shrinks.
                let op = if wave { [5, 6, 5, 6, 5, 0, 6, 7, 8, 9][op] } else { op };
                match op {
                    0..=4 => {
                        let k = fresh(&mut rng);
                        t.insert(k, 1);
                        live.push(k);
                    }
                    5 | 6 if !live.is_empty() => {
                        let k = live.swap_remove(rng.gen_range(0..live.len()));
                        reached.insert(k);
                        t.remove_tracking(&k, |k, _| {
                            reached.insert(k);
                        });
                    }
                    7 => t.step(),
                    _ => {
                        // A few slots at a time, as a capture's step walks;
                        // faster in some rounds, so that the walk is in the
                        // larger arrays while entries still move there.
                        for _ in 0..if wave { 4 } else { [8, 64, 512][round % 3] } {
                            let slot = t.walk;
                            if let Some((k, _)) = t.slot_mut(slot) {
                                reached.insert(k);
                            }
                            t.walk += 1;
                        }
                    }
                }
            }
            let missed = at_start.keys().filter(|k| !reached.contains(k)).count();
            assert_eq!(missed, 0, "round {round}: {missed} of {} entries missed in {steps} steps", at_start.len());
        }
        assert!(grown > 100, "the walks saw entries moving between arrays in {grown} steps only");
        assert!(shrunk > 100, "the walks saw entries moving into smaller arrays in {shrunk} steps only");
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
