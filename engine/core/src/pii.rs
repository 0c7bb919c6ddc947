//! Protection of personal data: keyed hashing for identifiers and
//! authenticated encryption for anything the engine must keep in full.
//!
//! Identity numbers, phones and bank cards are replaced by a keyed hash
//! (HMAC-SHA-256, truncated to 128 bits) the moment an event is decoded, so
//! feature state, rules and decisions can join on them without ever holding
//! the clear value. Where the original bytes must be kept (dead letters) they
//! are sealed with AES-256-GCM under the primary key of the key ring; each
//! ciphertext names its key id so old keys keep decrypting after a rotation.
//!
//! Keys live in their own file, never in the engine config:
//!
//! ```toml
//! hmac_key = "<64 hex chars>"
//! primary = "k2"
//! [encryption_keys]
//! k1 = "<64 hex chars>"   # still decrypts older records
//! k2 = "<64 hex chars>"   # encrypts new ones
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A keyed hash standing in for a sensitive value. Equal inputs under the same
/// key give equal hashes; the clear value cannot be recovered from it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protected(pub [u8; 16]);

impl Protected {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protected({})", self.to_hex())
    }
}

impl fmt::Display for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Protected {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("key file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error("no encryption key with id `{0}` in the key ring")]
    UnknownKey(String),
    #[error("ciphertext failed authentication (tampered, truncated or wrong key)")]
    Tampered,
    #[error("sealed record is malformed: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    hmac_key: String,
    primary: String,
    encryption_keys: BTreeMap<String, String>,
}

/// The engine's secrets: one HMAC key for identifiers and a set of
/// encryption keys, one of which (the primary) encrypts new records.
#[derive(Clone)]
pub struct KeyRing {
    hmac: HmacSha256,
    keys: Vec<(String, Aes256Gcm)>,
    primary: usize,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("encryption_key_ids", &ids)
            .field("primary", &self.keys[self.primary].0)
            .finish_non_exhaustive()
    }
}

fn key32(path: &str, what: &str, hex_text: &str) -> Result<[u8; 32], PiiError> {
    let bytes = hex::decode(hex_text.trim())
        .map_err(|_| PiiError::Invalid { path: path.into(), message: format!("{what} is not hex") })?;
    bytes.try_into().map_err(|_| PiiError::Invalid {
        path: path.into(),
        message: format!("{what} must be 32 bytes (64 hex chars)"),
    })
}

impl KeyRing {
    pub fn load(path: &Path) -> Result<Self, PiiError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PiiError::Read { path: shown.clone(), source })?;
        Self::from_toml(&text, &shown)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, PiiError> {
        let file: KeyFile = toml::from_str(text)
            .map_err(|e| PiiError::Invalid { path: origin.into(), message: e.message().to_string() })?;
        let hmac_key = key32(origin, "hmac_key", &file.hmac_key)?;
        let mut keys = Vec::new();
        for (id, hex_text) in &file.encryption_keys {
            let k = key32(origin, &format!("encryption key `{id}`"), hex_text)?;
            keys.push((id.clone(), Aes256Gcm::new(&k.into())));
        }
        let primary = keys.iter().position(|(id, _)| *id == file.primary).ok_or_else(|| PiiError::Invalid {
            path: origin.into(),
            message: format!("primary key `{}` is not among encryption_keys", file.primary),
        })?;
        Ok(KeyRing { hmac: <HmacSha256 as Mac>::new_from_slice(&hmac_key).expect("any key length"), keys, primary })
    }

    /// A fresh key file (TOML text) with random keys, for `riskd keys generate`.
    pub fn generate_file(key_id: &str) -> String {
        let mut rng = rand::rngs::OsRng;
        let mut h = [0u8; 32];
        let mut e = [0u8; 32];
        rng.fill_bytes(&mut h);
        rng.fill_bytes(&mut e);
        format!(
            "# riskd key file: keep it apart from the config and readable only by the engine.\n\
             hmac_key = \"{}\"\nprimary = \"{key_id}\"\n\n[encryption_keys]\n{key_id} = \"{}\"\n",
            hex::encode(h),
            hex::encode(e)
        )
    }

    /// Keyed hash of a sensitive value. The field name separates domains so the
    /// same digits as a phone and as a card do not collide.
    pub fn protect(&self, field: &str, value: &str) -> Protected {
        let mut mac = self.hmac.clone();
        mac.update(field.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag[..16]);
        Protected(out)
    }

    pub fn primary_key_id(&self) -> &str {
        &self.keys[self.primary].0
    }

    /// Encrypts with the primary key and a random 96-bit nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Sealed {
        let (id, cipher) = &self.keys[self.primary];
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let b64 = base64::engine::general_purpose::STANDARD;
        Sealed {
            alg: "AES-256-GCM".into(),
            key_id: id.clone(),
            nonce: b64.encode(nonce),
            ciphertext: b64.encode(ciphertext),
        }
    }

    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, PiiError> {
        if sealed.alg != "AES-256-GCM" {
            return Err(PiiError::Malformed(format!("unknown algorithm `{}`", sealed.alg)));
        }
        let cipher = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .map(|(_, c)| c)
            .ok_or_else(|| PiiError::UnknownKey(sealed.key_id.clone()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = b64.decode(&sealed.nonce).map_err(|_| PiiError::Malformed("nonce is not base64".into()))?;
        if nonce.len() != 12 {
            return Err(PiiError::Malformed("nonce must be 12 bytes".into()));
        }
        let ct = b64.decode(&sealed.ciphertext).map_err(|_| PiiError::Malformed("ciphertext is not base64".into()))?;
        cipher.decrypt(Nonce::from_slice(&nonce), ct.as_slice()).map_err(|_| PiiError::Tampered)
    }
}

/// An encrypted blob as stored in dead-letter records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub alg: String,
    pub key_id: String,
    pub nonce: String,
    pub ciphertext: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(primary: &str) -> KeyRing {
        let text = format!(
            "hmac_key = \"{}\"\nprimary = \"{primary}\"\n[encryption_keys]\nk1 = \"{}\"\nk2 = \"{}\"\n",
            "11".repeat(32),
            "22".repeat(32),
            "33".repeat(32)
        );
        KeyRing::from_toml(&text, "test").unwrap()
    }

    #[test]
    fn protect_is_keyed_and_domain_separated() {
        let r = ring("k1");
        assert_eq!(r.protect("phone", "+991234"), r.protect("phone", "+991234"));
        assert_ne!(r.protect("phone", "+991234"), r.protect("bank_card", "+991234"));
        let other = KeyRing::from_toml(&KeyRing::generate_file("k9"), "gen").unwrap();
        assert_ne!(r.protect("phone", "+991234"), other.protect("phone", "+991234"));
    }

    #[test]
    fn seal_round_trips_and_rotation_keeps_old_keys_readable() {
        let old = ring("k1");
        let sealed = old.seal(b"secret payload");
        assert_eq!(sealed.key_id, "k1");
        let rotated = ring("k2");
        assert_eq!(rotated.open(&sealed).unwrap(), b"secret payload");
        assert_eq!(rotated.seal(b"x").key_id, "k2");
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let r = ring("k1");
        let mut sealed = r.seal(b"secret payload");
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ct = b64.decode(&sealed.ciphertext).unwrap();
        ct[0] ^= 1;
        sealed.ciphertext = b64.encode(ct);
        assert!(matches!(r.open(&sealed), Err(PiiError::Tampered)));
    }

    #[test]
    fn altered_nonce_or_key_id_is_rejected() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let r = ring("k1");
        let sealed = r.seal(b"secret payload");
        let mut nonce = b64.decode(&sealed.nonce).unwrap();
        nonce[11] ^= 0x80;
        let moved = Sealed { nonce: b64.encode(nonce), ..sealed.clone() };
        assert!(matches!(r.open(&moved), Err(PiiError::Tampered)));
        let unknown = Sealed { key_id: "k7".into(), ..sealed.clone() };
        assert!(matches!(r.open(&unknown), Err(PiiError::UnknownKey(id)) if id == "k7"));
        // Relabelled to another key of the ring: authentication fails.
        let two = format!(
            "hmac_key = \"{}\"\nprimary = \"k1\"\n[encryption_keys]\nk1 = \"{}\"\nk2 = \"{}\"\n",
            "ab".repeat(32),
            "cd".repeat(32),
            "ef".repeat(32)
        );
        let r2 = KeyRing::from_toml(&two, "test").unwrap();
        let sealed = r2.seal(b"secret payload");
        assert_eq!(r2.open(&sealed).unwrap(), b"secret payload");
        let relabelled = Sealed { key_id: "k2".into(), ..sealed };
        assert!(matches!(r2.open(&relabelled), Err(PiiError::Tampered)));
    }

    #[test]
    fn bad_key_file_is_refused_with_reason() {
        let err = KeyRing::from_toml("hmac_key = \"zz\"\nprimary=\"a\"\n[encryption_keys]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hmac_key is not hex"), "{err}");
        let err = KeyRing::from_toml(
            &format!(
                "hmac_key = \"{}\"\nprimary=\"a\"\n[encryption_keys]\nb = \"{}\"\n",
                "00".repeat(32),
                "00".repeat(32)
            ),
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("primary key `a` is not among"), "{err}");
    }
}
