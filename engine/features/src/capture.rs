//! Snapshots taken a little at a time while events keep arriving.
//!
//! Encoding the whole state at once pauses the event loop for as long as
//! the state is large (seconds for a few million entities). A capture
//! instead fixes the instant the snapshot stands for (`begin`), then
//! encodes the entities in small steps between events; an event about to
//! change or drop an entity that is not encoded yet encodes it first, in
//! the state it had at that instant (copy-on-write at entity granularity).
//! The result decodes to exactly the state of that instant, whatever
//! happened in between.
//!
//! Bookkeeping:
//! - every entity carries the capture epoch it was last encoded in; a new
//!   entity is born in the current epoch (it did not exist at the instant);
//! - each table walks its slots in order with a cursor (`KeyTable::walk`);
//!   an entity that the table moves to a slot behind the cursor (a
//!   deletion shifts entries back) is encoded as it moves. A growing table
//!   numbers its new slots after its old ones, so an entity that growth
//!   moves is never behind the cursor, and the walk goes on in the new
//!   slots once the old ones are gone (entities already encoded are
//!   skipped);
//! - the expiry queue as it was at the instant is a prefix of the queue
//!   that only loses entries from the front: its entries are encoded in
//!   order, each at the latest just before it is popped.
//!
//! The bytes are those [`FeatureEngine::write_snapshot`] writes, except
//! that entities come in the order they were encoded instead of by key;
//! [`FeatureEngine::restore`] reads both.

use std::collections::VecDeque;

use serde::Serialize;

use crate::snapshot::table_head;
use crate::state::{Entity, FeatureEngine, Table};

/// Encoded bytes in pieces of [`CHUNK`] (or one value's size, if larger),
/// each its own anonymous memory mapping.
///
/// Two costs stay off the event loop this way. One growing buffer would
/// copy everything encoded so far at each doubling. And heap memory comes
/// from the allocator's huge-page arenas (`riskd_alloc`), where touching a
/// fresh 2 MiB page can stall for milliseconds while the kernel zeroes or
/// compacts memory for it (measured: 5 ms pauses mid-capture); a plain
/// mapping faults in 4 KiB pages, about a microsecond each, spread over the
/// writes. Values are encoded into a reused buffer, then copied in.
#[derive(Default)]
struct Chunks {
    full: Vec<Piece>,
    scratch: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

/// A mapping and how much of it is written.
struct Piece {
    map: memmap2::MmapMut,
    len: usize,
}

impl Chunks {
    fn put<T: Serialize + ?Sized>(&mut self, value: &T) {
        self.scratch.clear();
        put(&mut self.scratch, value);
        let n = self.scratch.len();
        if self.full.last().is_none_or(|p| p.map.len() - p.len < n) {
            // A mapping that cannot be made is an out-of-memory condition,
            // as a failed allocation would be.
            let map = memmap2::MmapMut::map_anon(n.max(CHUNK)).expect("an anonymous mapping for a checkpoint");
            self.full.push(Piece { map, len: 0 });
        }
        let piece = self.full.last_mut().expect("just ensured");
        piece.map[piece.len..piece.len + n].copy_from_slice(&self.scratch);
        piece.len += n;
    }
}

/// A piece of an [`EncodedState`].
enum Part {
    Heap(Vec<u8>),
    Mapped(Piece),
}

impl Part {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Heap(v) => v,
            Part::Mapped(p) => &p.map[..p.len],
        }
    }
}

/// A complete snapshot from [`FeatureEngine::snapshot_step`]: the bytes
/// [`FeatureEngine::restore`] reads, in pieces to be written one after the
/// other.
pub struct EncodedState {
    parts: Vec<Part>,
}

impl EncodedState {
    /// The pieces, in order.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        self.parts.iter().map(Part::bytes)
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts().map(<[u8]>::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All the bytes in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().collect::<Vec<_>>().concat()
    }
}

impl From<Vec<u8>> for EncodedState {
    fn from(bytes: Vec<u8>) -> Self {
        EncodedState { parts: vec![Part::Heap(bytes)] }
    }
}

/// A table's part of a capture in progress.
pub(crate) struct TableCapture {
    /// Encoded `(key, entity)` pairs, back to back.
    entries: Chunks,
    count: u64,
    /// The queue as it was at the instant: its length, how many of its
    /// entries are encoded (`queue`) and how many have been popped since.
    queue_len: usize,
    queue_written: usize,
    queue_popped: usize,
    queue: Chunks,
}

fn put<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    bincode::serialize_into(buf, value).expect("encoding into memory cannot fail");
}

impl TableCapture {
    fn new(queue_len: usize) -> Self {
        TableCapture {
            entries: Chunks::default(),
            count: 0,
            queue_len,
            queue_written: 0,
            queue_popped: 0,
            queue: Chunks::default(),
        }
    }

    /// Encodes the entity unless it already is (or was born after the
    /// instant); returns whether it did.
    #[inline]
    pub(crate) fn keep(&mut self, epoch: u32, key: u128, e: &mut Entity) -> bool {
        if e.epoch == epoch {
            return false;
        }
        e.epoch = epoch;
        self.entries.put(&(key, &*e));
        self.count += 1;
        true
    }

    /// Called before the queue's front entry is popped.
    pub(crate) fn before_pop(&mut self, queue: &VecDeque<(i64, u128)>) {
        if self.queue_popped == self.queue_len {
            return; // the instant's entries are all gone already
        }
        if self.queue_written == self.queue_popped {
            if let Some(front) = queue.front() {
                self.queue.put(front);
            }
            self.queue_written += 1;
        }
        self.queue_popped += 1;
    }

    /// Called before the queue is rebuilt: every entry of the instant left
    /// in it is encoded now.
    pub(crate) fn before_rebuild(&mut self, queue: &VecDeque<(i64, u128)>) {
        self.write_queue(queue, usize::MAX);
        self.queue_popped = self.queue_len;
    }

    /// Encodes up to `budget` more entries of the instant's queue; returns how many.
    fn write_queue(&mut self, queue: &VecDeque<(i64, u128)>, budget: usize) -> usize {
        let mut n = 0;
        while self.queue_written < self.queue_len && n < budget {
            if let Some(entry) = queue.get(self.queue_written - self.queue_popped) {
                self.queue.put(entry);
            }
            self.queue_written += 1;
            n += 1;
        }
        n
    }

    /// Whether the walk (at `walk` of `slots`) and the queue are complete.
    fn done(&self, walk: usize, slots: usize) -> bool {
        walk >= slots && self.queue_written == self.queue_len
    }
}

/// A capture in progress: what the instant's header holds.
pub(crate) struct Capture {
    header: Vec<u8>,
}

impl Table {
    /// Encodes up to `budget` entities (and queue entries) of the walk;
    /// returns the budget left.
    fn capture_step(&mut self, mut budget: usize) -> usize {
        let epoch = self.epoch;
        let Some(cap) = self.capture.as_mut() else { return budget };
        budget -= cap.write_queue(&self.queue, budget);
        // Empty slots cost next to nothing; bound them too, so a step stays short.
        let mut slots = budget.saturating_mul(8);
        while budget > 0 && slots > 0 && self.map.walk < self.map.capacity() {
            if let Some((key, e)) = self.map.slot_mut(self.map.walk) {
                if cap.keep(epoch, key, e) {
                    budget -= 1;
                }
            }
            self.map.walk += 1;
            slots -= 1;
        }
        budget
    }
}

impl FeatureEngine {
    /// Starts a snapshot of the state as it is now, to be encoded by
    /// [`FeatureEngine::snapshot_step`] while events go on. Returns false
    /// (and changes nothing) when one is already in progress.
    pub fn begin_snapshot(&mut self) -> bool {
        if self.capture.is_some() {
            return false;
        }
        self.epoch = self.epoch.wrapping_add(1);
        let mut header = Vec::with_capacity(256);
        put(&mut header, &self.snapshot_head());
        put(&mut header, &(self.tables.len() as u64));
        for t in &mut self.tables {
            t.epoch = self.epoch;
            t.capture = Some(TableCapture::new(t.queue.len()));
            t.map.walk = 0;
        }
        self.capture = Some(Capture { header });
        true
    }

    /// Whether a snapshot begun with [`FeatureEngine::begin_snapshot`] is
    /// still being encoded.
    pub fn snapshot_in_progress(&self) -> bool {
        self.capture.is_some()
    }

    /// Encodes up to `budget` more entities of the snapshot in progress
    /// (0: none; events may still have encoded the rest meanwhile). Returns
    /// the snapshot's bytes once it is complete (the same format as
    /// [`FeatureEngine::write_snapshot`]), None while it is not (or when
    /// none is in progress).
    pub fn snapshot_step(&mut self, budget: usize) -> Option<EncodedState> {
        self.capture.as_ref()?;
        let mut left = budget;
        for t in &mut self.tables {
            if left == 0 {
                break;
            }
            left = t.capture_step(left);
        }
        let complete =
            self.tables.iter().all(|t| t.capture.as_ref().is_none_or(|c| c.done(t.map.walk, t.map.capacity())));
        if !complete {
            return None;
        }
        let Capture { header } = self.capture.take().expect("checked");
        let mut parts = vec![Part::Heap(header)];
        for t in &mut self.tables {
            let cap = t.capture.take().expect("every table captures");
            // No walk now: nothing moved needs telling.
            t.map.walk = 0;
            let mut head = Vec::new();
            put(&mut head, &table_head(&self.set, t));
            put(&mut head, &cap.count);
            parts.push(Part::Heap(head));
            parts.extend(cap.entries.full.into_iter().map(Part::Mapped));
            parts.push(Part::Heap(bincode::serialize(&(cap.queue_len as u64)).expect("in memory")));
            parts.extend(cap.queue.full.into_iter().map(Part::Mapped));
        }
        Some(EncodedState { parts })
    }

    /// The whole state as it is now, encoded at once, for a checkpoint that
    /// nothing waits on (shutdown, replay): a capture completed in one step,
    /// about four times faster than [`FeatureEngine::write_snapshot`] into
    /// one buffer, whose growth copies and faults in what it holds. Entities
    /// come in table order rather than sorted. A capture in progress is
    /// dropped.
    pub fn encode_state(&mut self) -> EncodedState {
        self.abort_snapshot();
        self.begin_snapshot();
        self.snapshot_step(usize::MAX).expect("a capture with an unbounded step completes")
    }

    /// Drops a snapshot in progress.
    pub fn abort_snapshot(&mut self) {
        self.capture = None;
        for t in &mut self.tables {
            t.capture = None;
            t.map.walk = 0;
        }
    }
}
