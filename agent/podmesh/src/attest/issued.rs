//! Checks on what the coordinator issued, before anything is written to the tls dir.

use super::cert_info::{parse_pem_chain, CertError, CertInfo};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IssuedError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("issued certificate carries a different public key than the one we attested")]
    KeyMismatch,
    #[error("issued certificate chain does not verify against the {anchor}: {reason}")]
    Untrusted { anchor: &'static str, reason: String },
    #[error("coordinator returned root CA {got}, but we trust {want}")]
    RootMismatch { got: String, want: String },
    #[error("{what} must hold exactly one certificate, found {n}")]
    Count { what: &'static str, n: usize },
}

/// The PEM documents the coordinator returned.
pub struct IssuedPem<'a> {
    pub mesh_ca: &'a str,
    pub cert_chain: &'a str,
    pub root_ca: &'a str,
}

/// Facts about a bundle that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub leaf: CertInfo,
    pub mesh_ca: CertInfo,
}

/// The leaf must carry our key and chain to the mesh CA (what peers check) and, through the
/// intermediate, to the root CA (what data owners check). When we already trust a root (from
/// configuration or a pin), the returned one must be that root.
pub fn verify(
    pem: &IssuedPem<'_>,
    our_spki_der: &[u8],
    trusted_root: Option<&CertificateDer<'_>>,
    now: UnixTime,
) -> Result<Verified, IssuedError> {
    let chain = parse_pem_chain("issued certChain.pem", pem.cert_chain.as_bytes())?;
    let mesh_ca = single("issued mesh-ca.pem", pem.mesh_ca)?;
    let root_ca = single("issued coordinator-root-ca.pem", pem.root_ca)?;
    let leaf = CertInfo::from_der("issued leaf certificate", &chain[0])?;
    if leaf.spki_der != our_spki_der {
        return Err(IssuedError::KeyMismatch);
    }
    if let Some(want) = trusted_root {
        if want.as_ref() != root_ca.as_ref() {
            return Err(IssuedError::RootMismatch {
                got: super::cert_info::sha256_fingerprint(&root_ca),
                want: super::cert_info::sha256_fingerprint(want),
            });
        }
    }
    chains_to("mesh CA", &chain, &mesh_ca, now)?;
    chains_to("coordinator root CA", &chain, &root_ca, now)?;
    Ok(Verified { leaf, mesh_ca: CertInfo::from_der("issued mesh CA", &mesh_ca)? })
}

fn single(what: &'static str, pem: &str) -> Result<CertificateDer<'static>, IssuedError> {
    let mut certs = parse_pem_chain(what, pem.as_bytes())?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        n => Err(IssuedError::Count { what, n }),
    }
}

/// Verify the chain the way a mesh peer does: as a client certificate (clientAuth) against
/// one anchor, with the remaining chain elements as intermediates.
fn chains_to(
    anchor_name: &'static str,
    chain: &[CertificateDer<'static>],
    anchor: &CertificateDer<'static>,
    now: UnixTime,
) -> Result<(), IssuedError> {
    let untrusted = |reason: String| IssuedError::Untrusted { anchor: anchor_name, reason };
    let mut roots = RootCertStore::empty();
    roots.add(anchor.clone()).map_err(|e| untrusted(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| untrusted(e.to_string()))?;
    verifier.verify_client_cert(&chain[0], &chain[1..], now).map_err(|e| untrusted(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

    /// A miniature of the coordinator's PKI: root → intermediate, mesh CA = self-signed
    /// intermediate (same key and name), leaf signed by the intermediate.
    pub(crate) struct Pki {
        pub root_pem: String,
        pub mesh_ca_pem: String,
        pub chain_pem: String,
        pub leaf_key: KeyPair,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    pub(crate) fn pki(leaf_key: KeyPair) -> Pki {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let root_key = KeyPair::generate_for(alg).unwrap();
        let root = ca_params("root").self_signed(&root_key).unwrap();
        let int_key = KeyPair::generate_for(alg).unwrap();
        let root_issuer = Issuer::new(ca_params("root"), &root_key);
        let intermediate = ca_params("mesh").signed_by(&int_key, &root_issuer).unwrap();
        let mesh_ca = ca_params("mesh").self_signed(&int_key).unwrap();
        let mut lp = CertificateParams::new(vec!["web".into()]).unwrap();
        lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let int_issuer = Issuer::new(ca_params("mesh"), &int_key);
        let leaf = lp.signed_by(&leaf_key, &int_issuer).unwrap();
        Pki {
            root_pem: root.pem(),
            mesh_ca_pem: mesh_ca.pem(),
            chain_pem: format!("{}{}", leaf.pem(), intermediate.pem()),
            leaf_key,
        }
    }

    fn key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn issued(p: &Pki) -> IssuedPem<'_> {
        IssuedPem { mesh_ca: &p.mesh_ca_pem, cert_chain: &p.chain_pem, root_ca: &p.root_pem }
    }

    use rcgen::PublicKeyData;

    #[test]
    fn a_good_bundle_verifies_against_mesh_ca_and_root() {
        let p = pki(key());
        let v = verify(&issued(&p), &p.leaf_key.subject_public_key_info(), None, UnixTime::now()).unwrap();
        assert_eq!(v.leaf.sans, vec!["DNS:web"]);
        let pinned = parse_pem_chain("r", p.root_pem.as_bytes()).unwrap().remove(0);
        verify(&issued(&p), &p.leaf_key.subject_public_key_info(), Some(&pinned), UnixTime::now()).unwrap();
    }

    #[test]
    fn a_certificate_for_another_key_is_rejected() {
        let p = pki(key());
        let err = verify(&issued(&p), &key().subject_public_key_info(), None, UnixTime::now()).unwrap_err();
        assert!(matches!(err, IssuedError::KeyMismatch), "{err}");
    }

    #[test]
    fn a_chain_from_another_mesh_is_rejected() {
        let p = pki(key());
        let other = pki(key());
        let mixed = IssuedPem { mesh_ca: &other.mesh_ca_pem, cert_chain: &p.chain_pem, root_ca: &p.root_pem };
        let err = verify(&mixed, &p.leaf_key.subject_public_key_info(), None, UnixTime::now()).unwrap_err();
        assert!(err.to_string().contains("does not verify against the mesh CA"), "{err}");
        let mixed = IssuedPem { mesh_ca: &p.mesh_ca_pem, cert_chain: &p.chain_pem, root_ca: &other.root_pem };
        let err = verify(&mixed, &p.leaf_key.subject_public_key_info(), None, UnixTime::now()).unwrap_err();
        assert!(err.to_string().contains("coordinator root CA"), "{err}");
    }

    #[test]
    fn a_different_root_than_the_trusted_one_is_rejected() {
        let p = pki(key());
        let other = pki(key());
        let pinned = parse_pem_chain("r", other.root_pem.as_bytes()).unwrap().remove(0);
        let err =
            verify(&issued(&p), &p.leaf_key.subject_public_key_info(), Some(&pinned), UnixTime::now()).unwrap_err();
        assert!(matches!(err, IssuedError::RootMismatch { .. }), "{err}");
    }

    #[test]
    fn malformed_documents_are_named() {
        let p = pki(key());
        let spki = p.leaf_key.subject_public_key_info();
        let bad = IssuedPem { mesh_ca: "garbage", cert_chain: &p.chain_pem, root_ca: &p.root_pem };
        assert!(verify(&bad, &spki, None, UnixTime::now()).unwrap_err().to_string().contains("mesh-ca.pem"));
        let two = format!("{}{}", p.root_pem, p.root_pem);
        let bad = IssuedPem { mesh_ca: &p.mesh_ca_pem, cert_chain: &p.chain_pem, root_ca: &two };
        assert!(verify(&bad, &spki, None, UnixTime::now()).unwrap_err().to_string().contains("exactly one"));
        let bad = IssuedPem { mesh_ca: &p.mesh_ca_pem, cert_chain: "", root_ca: &p.root_pem };
        assert!(verify(&bad, &spki, None, UnixTime::now()).unwrap_err().to_string().contains("no certificate"));
    }
}
