//! Feature state to bytes and back, for checkpoints.
//!
//! The encoding holds only keyed hashes of entity values, event times and
//! numbers: no clear-text entity value. Equal state gives equal bytes
//! (entities and sets are written in sorted order).

use std::collections::VecDeque;
use std::hash::Hasher;
use std::io::{Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use crate::def::FeatureSet;
use crate::state::{Entity, FeatureEngine, KeyMap, StateStats, Table};

/// Bumped whenever the encoding or the meaning of what it holds changes
/// (3: distinct counts of entity fields hold entity keys); older snapshots
/// are refused.
pub const SNAPSHOT_FORMAT: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot was taken with feature set {snapshot}, but the deployment has {current}; state cannot be carried over a feature change")]
    FeatureSetChanged { snapshot: String, current: String },
    #[error("the snapshot was taken with a different PII key (entity hashes would not match)")]
    KeyChanged,
    #[error("the snapshot format {found} is not the supported {SNAPSHOT_FORMAT}")]
    Format { found: u32 },
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What `write_snapshot` writes: [`StateBody`]'s layout, borrowing the state
/// instead of copying it. Bincode lays a struct out as its fields in order,
/// nested ones included, so a capture (`capture`) writes the same bytes by
/// encoding the heads below and the entries itself.
#[derive(Serialize)]
struct BodyRef<'a> {
    head: HeadRef<'a>,
    tables: Vec<TableBodyRef<'a>>,
}

/// A snapshot up to its tables.
#[derive(Serialize)]
pub(crate) struct HeadRef<'a> {
    format: u32,
    feature_set_version: &'a str,
    key_check: u64,
    max_event_time: i64,
    stats: StateStats,
}

#[derive(Serialize)]
struct TableBodyRef<'a> {
    head: TableHead<'a>,
    entries: Vec<(u128, &'a Entity)>,
    queue: &'a VecDeque<(i64, u128)>,
}

/// A table up to its entries: its entity kind and its features' names.
#[derive(Serialize)]
pub(crate) struct TableHead<'a> {
    entity: String,
    features: Vec<&'a str>,
}

pub(crate) fn table_head<'a>(set: &'a FeatureSet, t: &Table) -> TableHead<'a> {
    TableHead {
        entity: t.entity.to_string(),
        features: t.features.iter().map(|&i| set.defs[i].name.as_str()).collect(),
    }
}

/// What follows the format number. Read only once the format is known to
/// be this one: another version's layout would not parse as this one.
#[derive(Serialize, Deserialize)]
struct StateBody {
    feature_set_version: String,
    key_check: u64,
    max_event_time: i64,
    stats: StateStats,
    tables: Vec<TableBody>,
}

#[derive(Serialize, Deserialize)]
struct TableBody {
    entity: String,
    features: Vec<String>,
    entries: Vec<(u128, Entity)>,
    queue: VecDeque<(i64, u128)>,
}

pub(crate) fn key_check(keys: (u64, u64)) -> u64 {
    let mut h = SipHasher13::new_with_keys(keys.0, keys.1);
    h.write(b"riskd feature state key check");
    h.finish()
}

impl FeatureEngine {
    /// The snapshot's head as the state stands.
    pub(crate) fn snapshot_head(&self) -> HeadRef<'_> {
        HeadRef {
            format: SNAPSHOT_FORMAT,
            feature_set_version: &self.set.version,
            key_check: key_check(self.keys),
            max_event_time: self.max_event_time,
            stats: self.stats,
        }
    }

    /// Writes the whole state.
    pub fn write_snapshot(&self, w: &mut impl Write) -> Result<(), SnapshotError> {
        let tables = self
            .tables
            .iter()
            .map(|t| {
                let mut entries: Vec<(u128, &Entity)> = t.map.iter().collect();
                entries.sort_unstable_by_key(|(k, _)| *k);
                TableBodyRef { head: table_head(&self.set, t), entries, queue: &t.queue }
            })
            .collect();
        let body = BodyRef { head: self.snapshot_head(), tables };
        bincode::serialize_into(w, &body).map_err(|e| match *e {
            bincode::ErrorKind::Io(io) => SnapshotError::Io(io),
            other => SnapshotError::Corrupt(other.to_string()),
        })
    }

    /// Rebuilds an engine from a snapshot taken with the same feature set and key.
    pub fn restore(set: Arc<FeatureSet>, hash_key: [u8; 16], r: &mut impl Read) -> Result<Self, SnapshotError> {
        let read_error = |e: Box<bincode::ErrorKind>| match *e {
            bincode::ErrorKind::Io(io) if io.kind() != std::io::ErrorKind::UnexpectedEof => SnapshotError::Io(io),
            other => SnapshotError::Corrupt(other.to_string()),
        };
        // The format first: bincode lays `Body` out as the format number
        // followed by the state, so a snapshot of another format is told
        // apart from a damaged one before its state is parsed.
        let format: u32 = bincode::deserialize_from(&mut *r).map_err(read_error)?;
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format { found: format });
        }
        let body: StateBody = bincode::deserialize_from(r).map_err(read_error)?;
        if body.feature_set_version != set.version {
            return Err(SnapshotError::FeatureSetChanged {
                snapshot: body.feature_set_version,
                current: set.version.clone(),
            });
        }
        let mut engine = FeatureEngine::new(set, hash_key);
        if body.key_check != key_check(engine.keys) {
            return Err(SnapshotError::KeyChanged);
        }
        if body.tables.len() != engine.tables.len() {
            return Err(SnapshotError::Corrupt(format!(
                "{} entity tables, the feature set has {}",
                body.tables.len(),
                engine.tables.len()
            )));
        }
        for (table, tb) in engine.tables.iter_mut().zip(body.tables) {
            let want = table_head(&engine.set, table);
            if tb.entity != want.entity || tb.features != want.features {
                return Err(SnapshotError::Corrupt(format!("table `{}` does not match the feature set", tb.entity)));
            }
            let mut map = KeyMap::default();
            map.reserve(tb.entries.len());
            for (k, mut e) in tb.entries {
                if !e.restore(&engine.set, &table.features) {
                    return Err(SnapshotError::Corrupt(format!(
                        "an entity of `{}` does not hold the state its features keep",
                        tb.entity
                    )));
                }
                map.insert(k, e);
            }
            table.map = map;
            table.queue = tb.queue;
        }
        engine.max_event_time = body.max_event_time;
        engine.stats = body.stats;
        Ok(engine)
    }
}
