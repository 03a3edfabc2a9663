//! The owner credential for `PUT /v1/manifest`.
//!
//! The owner holds a random bearer token (32 bytes, base64url). The coordinator is configured
//! only with the token's SHA-256 (hex, in `--owner-token-file`), so its state and config never
//! contain the secret. A request authenticates with `Authorization: Bearer <token>`; the
//! coordinator hashes what it got and compares the digests in constant time. Without a
//! configured hash, manifest updates over the API are disabled.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("owner token hash file {path}: {why}")]
    HashFile { path: String, why: String },
}

#[derive(Clone)]
pub struct OwnerToken {
    sha256: [u8; 32],
}

impl std::fmt::Debug for OwnerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerToken(..)")
    }
}

impl OwnerToken {
    /// Reads the hex SHA-256 of the owner token (surrounding whitespace ignored).
    pub fn from_hash_file(path: &Path) -> Result<Self, OwnerError> {
        let bad = |why: String| OwnerError::HashFile { path: path.display().to_string(), why };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Self::from_hash_hex(text.trim()).map_err(bad)
    }

    pub fn from_hash_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text).map_err(|e| format!("not hex SHA-256: {e}"))?;
        let sha256 = bytes.try_into().map_err(|b: Vec<u8>| format!("{} bytes, a SHA-256 is 32", b.len()))?;
        Ok(Self { sha256 })
    }

    /// True when `authorization` is `Bearer <token>` with the right token.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else { return false };
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        digest.ct_eq(&self.sha256).into()
    }
}

/// A fresh token and its SHA-256 hex: give the token to the owner, the hash to the coordinator.
pub fn generate() -> (String, String) {
    let raw: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks() {
        let (token, hash) = generate();
        let owner = OwnerToken::from_hash_hex(&hash).unwrap();
        assert!(owner.check(Some(&format!("Bearer {token}"))));
        assert!(!owner.check(Some(&format!("Bearer {token}x"))));
        assert!(!owner.check(Some(&token)));
        assert!(!owner.check(Some("Bearer ")));
        assert!(!owner.check(None));
        assert!(OwnerToken::from_hash_hex("abcd").is_err());
        assert!(OwnerToken::from_hash_hex("zz").is_err());
    }
}
