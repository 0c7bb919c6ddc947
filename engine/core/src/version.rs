//! Content hashes that identify the exact feature set, rule set, lists and
//! model a decision was made with.

use sha2::{Digest, Sha256};

/// Hashes named parts (e.g. file path and file bytes) in a stable order.
/// The result reads `sha256:` followed by 16 hex digits.
#[derive(Default)]
pub struct ContentHasher(Sha256);

impl ContentHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn part(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(&self) -> String {
        let digest = self.0.clone().finalize();
        format!("sha256:{}", hex::encode(&digest[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_unambiguous() {
        let a = ContentHasher::new().part("ab", b"c").finish();
        let b = ContentHasher::new().part("a", b"bc").finish();
        assert_ne!(a, b);
        assert!(a.starts_with("sha256:") && a.len() == 7 + 16);
    }
}
