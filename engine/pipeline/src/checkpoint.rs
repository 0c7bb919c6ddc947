//! Checkpoints: feature state together with the input position it reflects,
//! in one file written atomically.
//!
//! Layout of `state.ckpt`:
//!
//! ```text
//! "RISKDCKP" | u32 format | u32 meta length | meta (JSON) | feature state | SHA-256 of all before
//! ```
//!
//! The file is written to a temporary name, synced, renamed over the old one
//! and the directory synced, so a crash leaves either the old or the new
//! checkpoint, never a torn one. The state holds keyed hashes of entity
//! values, never the values (see `riskd_features::FeatureEngine::write_snapshot`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use riskd_features::{EncodedState, FeatureEngine, FeatureSet, SnapshotError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"RISKDCKP";
const FORMAT: u32 = 1;
const FILE_NAME: &str = "state.ckpt";

/// Where the input stood when the state was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The feature set version the state belongs to.
    pub feature_set: String,
    /// Kafka: the cluster and consumer group the offsets belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Kafka: next offset to read per `topic/partition`; every input before
    /// it is in the state and its output was acknowledged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offsets: BTreeMap<String, i64>,
    /// Replay: where in the input and the outputs the state stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayPoint>,
    /// Inputs reflected in the state since the engine first started.
    pub events: u64,
    /// Wall-clock time the checkpoint was written (information only).
    pub written_at: String,
}

/// A replay's position: the input line and byte offset the state reflects
/// (everything before is decided and written), and the output lengths at
/// that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayPoint {
    pub input: String,
    pub line: u64,
    pub input_offset: u64,
    pub decisions_bytes: u64,
    pub dead_letters_bytes: u64,
}

impl CheckpointMeta {
    pub fn partition_key(topic: &str, partition: i32) -> String {
        format!("{topic}/{partition}")
    }

    /// The inverse of [`CheckpointMeta::partition_key`]; None when malformed.
    pub fn parse_partition_key(key: &str) -> Option<(&str, i32)> {
        let (topic, partition) = key.rsplit_once('/')?;
        Some((topic, partition.parse().ok()?))
    }

    /// The offsets by (topic, partition); None when a key is malformed.
    pub fn partitions(&self) -> Option<Vec<((String, i32), i64)>> {
        self.offsets.iter().map(|(k, &o)| Self::parse_partition_key(k).map(|(t, p)| ((t.to_string(), p), o))).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error(
        "{path}: not a checkpoint file, or a damaged one ({what}); move it aside to start with empty feature state"
    )]
    Damaged { path: String, what: String },
    #[error("{path}: {cause}; move the file aside to start with empty feature state")]
    State { path: String, cause: SnapshotError },
}

/// The checkpoint file of one engine.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CheckpointStore { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// A whole checkpoint in one buffer, its entities sorted by key (equal
    /// state, equal bytes), for [`CheckpointStore::write`]. Serving and
    /// replay encode in pieces instead ([`CheckpointStore::write_state`]).
    pub fn encode(meta: &CheckpointMeta, engine: &FeatureEngine) -> Vec<u8> {
        let mut buf = Self::head(meta);
        engine.write_snapshot(&mut buf).expect("writing to memory cannot fail");
        let digest = Sha256::digest(&buf);
        buf.extend_from_slice(&digest);
        buf
    }

    /// What precedes the state: magic, format, metadata.
    fn head(meta: &CheckpointMeta) -> Vec<u8> {
        let meta_json = serde_json::to_vec(meta).expect("checkpoint metadata serializes");
        let mut buf = Vec::with_capacity(16 + meta_json.len());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FORMAT.to_le_bytes());
        buf.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
        buf.extend_from_slice(&meta_json);
        buf
    }

    /// Replaces the checkpoint atomically with `meta` and a state encoded in
    /// pieces (`FeatureEngine::snapshot_step`), without copying them into
    /// one buffer: the same file as [`CheckpointStore::encode`] gives.
    pub fn write_state(&self, meta: &CheckpointMeta, state: &EncodedState) -> Result<(), CheckpointError> {
        let head = Self::head(meta);
        let mut hasher = Sha256::new();
        hasher.update(&head);
        for part in state.parts() {
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let parts: Vec<&[u8]> =
            std::iter::once(head.as_slice()).chain(state.parts()).chain(std::iter::once(digest.as_slice())).collect();
        self.write_parts(&parts)
    }

    /// Replaces the checkpoint atomically with `bytes` from [`CheckpointStore::encode`].
    pub fn write(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        self.write_parts(&[bytes])
    }

    fn write_parts(&self, parts: &[&[u8]]) -> Result<(), CheckpointError> {
        let io = |path: &Path, e: std::io::Error| CheckpointError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        parts.iter().try_for_each(|p| f.write_all(p)).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
        drop(f);
        let path = self.path();
        fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io(&self.dir, e))?;
        Ok(())
    }

    /// Reads the metadata and restores the state. `Ok(None)`: no checkpoint yet.
    pub fn load(
        &self,
        set: Arc<FeatureSet>,
        hash_key: [u8; 16],
    ) -> Result<Option<(CheckpointMeta, FeatureEngine)>, CheckpointError> {
        let Some((meta, bytes, state)) = self.read()? else { return Ok(None) };
        let engine = FeatureEngine::restore(set, hash_key, &mut &bytes[state])
            .map_err(|cause| CheckpointError::State { path: self.path().display().to_string(), cause })?;
        Ok(Some((meta, engine)))
    }

    /// The metadata alone, the file checked as [`CheckpointStore::load`]
    /// checks it, without restoring the state. `Ok(None)`: no checkpoint yet.
    pub fn meta(&self) -> Result<Option<CheckpointMeta>, CheckpointError> {
        Ok(self.read()?.map(|(meta, _, _)| meta))
    }

    /// The file's bytes, checked (header, checksum, format), with its
    /// metadata and where the feature state lies in them.
    fn read(&self) -> Result<Option<Checked>, CheckpointError> {
        let path = self.path();
        let shown = path.display().to_string();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckpointError::Io { path: shown, message: e.to_string() }),
        };
        let damaged = |what: &str| CheckpointError::Damaged { path: shown.clone(), what: what.to_string() };
        if bytes.len() < MAGIC.len() + 8 + 32 || &bytes[..8] != MAGIC {
            return Err(damaged("no checkpoint header"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(damaged("checksum mismatch"));
        }
        let format = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if format != FORMAT {
            return Err(damaged(&format!("format {format}, this engine reads {FORMAT}")));
        }
        let meta_len = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
        let Some(meta_bytes) = body.get(16..16 + meta_len) else {
            return Err(damaged("metadata length"));
        };
        let meta: CheckpointMeta = serde_json::from_slice(meta_bytes).map_err(|e| damaged(&e.to_string()))?;
        let state = 16 + meta_len..body.len();
        Ok(Some((meta, bytes, state)))
    }
}

/// A checkpoint file read and checked: its metadata, its bytes, and where
/// the feature state lies in them.
type Checked = (CheckpointMeta, Vec<u8>, std::ops::Range<usize>);

/// Wall-clock time as RFC 3339, for the checkpoint's information field.
pub fn now_text() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    riskd_core::decision::Decision::event_time_text(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Arc<FeatureSet> {
        let text = "[[feature]]\nname = \"user.n\"\nentity = \"user\"\nagg = \"count\"\nwindow = \"1h\"\n";
        Arc::new(FeatureSet::from_sources(&[("f.toml".into(), text.into())]).unwrap())
    }

    #[test]
    fn a_checkpoint_round_trips_and_damage_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path().join("state"));
        assert!(store.load(set(), [1; 16]).unwrap().is_none(), "no checkpoint yet");
        let meta = CheckpointMeta {
            feature_set: set().version.clone(),
            offsets: [("in/0".to_string(), 42)].into(),
            events: 42,
            ..Default::default()
        };
        let mut engine = FeatureEngine::new(set(), [1; 16]);
        let bytes = CheckpointStore::encode(&meta, &engine);
        // A state captured between events is written in pieces to the same file.
        assert!(engine.begin_snapshot());
        let captured = engine.snapshot_step(usize::MAX).expect("an empty state is captured at once");
        store.write_state(&meta, &captured).unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), bytes);
        store.write(&bytes).unwrap();
        let (back, _) = store.load(set(), [1; 16]).unwrap().unwrap();
        assert_eq!(back, meta);
        assert_eq!(CheckpointMeta::parse_partition_key("in/0"), Some(("in", 0)));
        assert_eq!(CheckpointMeta::parse_partition_key("in"), None);

        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        std::fs::write(store.path(), &flipped).unwrap();
        let err = store.load(set(), [1; 16]).err().unwrap().to_string();
        assert!(err.contains("checksum mismatch") && err.contains("state.ckpt"), "{err}");

        std::fs::write(store.path(), &bytes[..10]).unwrap();
        let err = store.load(set(), [1; 16]).err().unwrap().to_string();
        assert!(err.contains("no checkpoint header"), "{err}");
    }
}
