//! The workload key: generated in memory for every attestation, bound into the TEE report.

use rcgen::{KeyPair, PublicKeyData, PKCS_ECDSA_P256_SHA256};
use wire::api::NONCE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating the workload ECDSA P-256 key failed: {0}")]
    Generate(#[source] rcgen::Error),
}

/// An ECDSA P-256 key that never leaves memory except as `key.pem` in the tls dir.
pub struct WorkloadKey {
    pair: KeyPair,
}

impl std::fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even by accident in a debug log.
        f.debug_struct("WorkloadKey").field("algorithm", &"ECDSA P-256").finish_non_exhaustive()
    }
}

impl WorkloadKey {
    pub fn generate() -> Result<Self, KeyError> {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map(|pair| Self { pair }).map_err(KeyError::Generate)
    }

    /// SubjectPublicKeyInfo, DER: what the report data binds and the certificate must carry.
    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// The private key as PKCS#8 PEM, for `key.pem`. Wiped by [`SecretBytes`] on drop.
    pub fn private_key_pem(&self) -> SecretBytes {
        SecretBytes(self.pair.serialize_pem().into_bytes())
    }

    /// Report data for the TEE: SHA-512(SPKI DER ‖ nonce), computed by the coordinator's
    /// own function so both ends of the binding are one piece of code.
    pub fn report_data(&self, nonce: &[u8; NONCE_LEN]) -> [u8; 64] {
        wire::api::report_data(&self.spki_der(), nonce)
    }
}

/// Bytes that are zeroed when dropped (private key PEM).
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keep the compiler from treating the wipe as a dead store.
        std::hint::black_box(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha512};

    #[test]
    fn spki_is_p256_and_report_data_binds_key_and_nonce() {
        let k = WorkloadKey::generate().unwrap();
        let spki = k.spki_der();
        let (_, parsed) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&spki).unwrap();
        assert_eq!(parsed.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        let n1 = [1u8; NONCE_LEN];
        let n2 = [2u8; NONCE_LEN];
        let mut expected = Sha512::new();
        expected.update(&spki);
        expected.update(n1);
        assert_eq!(k.report_data(&n1).as_slice(), expected.finalize().as_slice());
        assert_ne!(k.report_data(&n1), k.report_data(&n2));
        let other = WorkloadKey::generate().unwrap();
        assert_ne!(k.report_data(&n1), other.report_data(&n1));
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let k = WorkloadKey::generate().unwrap();
        let pem = String::from_utf8(k.private_key_pem().as_bytes().to_vec()).unwrap();
        assert!(pem.contains("PRIVATE KEY"));
        assert!(!format!("{k:?}").contains("PRIVATE"));
    }
}
