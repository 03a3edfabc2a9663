//! The CA hierarchy against rustls' real WebPKI verifiers.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use pki::leaf::{new_workload_key, spki_of, DEFAULT_LIFETIME};
use pki::{
    AttestationClaims, CaError, IssueError, LeafRequest, MeshCa, Platform, PublicKeyInput, RootCa, SubjectAltNames,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::sync::Arc;
use std::time::Duration;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(anchor: &CertificateDer<'static>) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    store.add(anchor.clone()).unwrap();
    Arc::new(store)
}

/// Client-auth verification of `leaf` (+ `intermediates`) against the single trust anchor.
fn client_ok(
    anchor: &CertificateDer<'static>,
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
) -> bool {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(anchor), provider()).build().unwrap();
    verifier.verify_client_cert(leaf, intermediates, UnixTime::now()).is_ok()
}

fn server_ok(
    anchor: &CertificateDer<'static>,
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    name: &str,
) -> bool {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(anchor), provider()).build().unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    verifier.verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now()).is_ok()
}

fn snp_claims() -> AttestationClaims {
    AttestationClaims {
        platform: Platform::Snp,
        measurement: vec![0xaa; 48],
        runtime_measurements: vec![],
        host_data: vec![0x11; 32],
        report_data: vec![0x22; 64],
        tcb: vec![3, 0, 0, 0, 0, 0, 8, 115],
        policy: 0x30000u64.to_le_bytes().to_vec(),
        simulated: true,
        workload: "web".into(),
        initdata_digest: Some(vec![0x11; 32]),
    }
}

fn issue(mesh: &MeshCa, names: &[&str], claims: Option<&AttestationClaims>) -> pki::IssuedCertificate {
    let key = new_workload_key().unwrap();
    let input = PublicKeyInput::SpkiDer(spki_of(&key));
    let sans = SubjectAltNames::parse(names).unwrap();
    mesh.issue(&LeafRequest { public_key: &input, common_name: "web", sans: &sans, lifetime: DEFAULT_LIFETIME, claims })
        .unwrap()
}

#[test]
fn mesh_certificate_verifies_via_root_and_via_mesh_ca() {
    let root = RootCa::generate().unwrap();
    let mesh = MeshCa::generate(&root).unwrap();
    let leaf = issue(&mesh, &["web", "web.default.svc", "10.0.0.7", "spiffe://podmesh/web"], None);
    let int = [mesh.intermediate_der().clone()];
    assert!(client_ok(root.cert_der(), &leaf.leaf_der, &int), "leaf must chain to the root via the intermediate");
    assert!(client_ok(mesh.mesh_ca_der(), &leaf.leaf_der, &[]), "leaf must verify against the mesh CA directly");
    assert!(server_ok(mesh.mesh_ca_der(), &leaf.leaf_der, &[], "web.default.svc"));
    assert!(server_ok(root.cert_der(), &leaf.leaf_der, &int, "10.0.0.7"));
    assert!(!server_ok(mesh.mesh_ca_der(), &leaf.leaf_der, &[], "other"), "a name not in the SANs must fail");
    assert!(!client_ok(root.cert_der(), &leaf.leaf_der, &[]), "without the intermediate the root alone cannot verify");
    // the chain PEM is leaf + intermediate
    let chain = wire::pem::certificates("chain", &leaf.chain_pem).unwrap();
    assert_eq!(chain, vec![leaf.leaf_der.clone(), mesh.intermediate_der().clone()]);
}

#[test]
fn rotation_separates_mesh_cas_but_keeps_the_root() {
    let root = RootCa::generate().unwrap();
    let old = MeshCa::generate(&root).unwrap();
    let new = MeshCa::generate(&root).unwrap();
    let old_leaf = issue(&old, &["web"], None);
    let new_leaf = issue(&new, &["web"], None);
    assert!(client_ok(root.cert_der(), &old_leaf.leaf_der, &[old.intermediate_der().clone()]));
    assert!(client_ok(root.cert_der(), &new_leaf.leaf_der, &[new.intermediate_der().clone()]));
    assert!(!client_ok(new.mesh_ca_der(), &old_leaf.leaf_der, &[]));
    assert!(!client_ok(old.mesh_ca_der(), &new_leaf.leaf_der, &[]));
    assert!(!client_ok(old.mesh_ca_der(), &new_leaf.leaf_der, &[new.intermediate_der().clone()]));
}

#[test]
fn reloaded_cas_keep_issuing_under_the_same_anchors() {
    let root = RootCa::generate().unwrap();
    let mesh = MeshCa::generate(&root).unwrap();
    let root2 = RootCa::from_pem(&root.key_pem(), root.cert_pem()).unwrap();
    let mesh2 = MeshCa::from_pem(&mesh.key_pem(), mesh.intermediate_pem(), mesh.mesh_ca_pem(), &root2).unwrap();
    assert_eq!(root2.cert_der(), root.cert_der());
    assert_eq!(mesh2.mesh_ca_der(), mesh.mesh_ca_der());
    let leaf = issue(&mesh2, &["web"], None);
    assert!(client_ok(mesh.mesh_ca_der(), &leaf.leaf_der, &[]));
    assert!(client_ok(root.cert_der(), &leaf.leaf_der, &[mesh.intermediate_der().clone()]));
}

#[test]
fn claims_round_trip_through_the_certificate() {
    let root = RootCa::generate().unwrap();
    let mesh = MeshCa::generate(&root).unwrap();
    let snp = snp_claims();
    let leaf = issue(&mesh, &["web"], Some(&snp));
    assert_eq!(AttestationClaims::from_certificate(&leaf.leaf_der).unwrap(), snp);
    let tdx = AttestationClaims {
        platform: Platform::Tdx,
        measurement: vec![1; 48],
        runtime_measurements: vec![vec![2; 48], vec![3; 48], vec![4; 48], vec![5; 48]],
        host_data: vec![6; 48],
        report_data: vec![7; 64],
        tcb: vec![8; 16],
        policy: vec![0; 8],
        simulated: false,
        workload: "db".into(),
        initdata_digest: Some(vec![6; 48]),
    };
    let leaf = issue(&mesh, &["db"], Some(&tdx));
    assert_eq!(AttestationClaims::from_certificate(&leaf.leaf_der).unwrap(), tdx);
    // a certificate from before the initdata digest claim still parses, without it
    let old = AttestationClaims { initdata_digest: None, ..tdx.clone() };
    let leaf = issue(&mesh, &["db"], Some(&old));
    assert_eq!(AttestationClaims::from_certificate(&leaf.leaf_der).unwrap(), old);
    // a certificate without claims says which extension is missing
    let plain = issue(&mesh, &["web"], None);
    let err = AttestationClaims::from_certificate(&plain.leaf_der).unwrap_err().to_string();
    assert!(err.contains("1.3.6.1.4.1.4128800.1.1"), "{err}");
    assert!(AttestationClaims::from_certificate(b"not a certificate").is_err());
}

#[test]
fn leaf_profile_sans_ekus_lifetime() {
    let root = RootCa::generate().unwrap();
    let mesh = MeshCa::generate(&root).unwrap();
    // URI and IP before DNS in the input: the certificate still lists DNS, IP, URI.
    let leaf = issue(&mesh, &["spiffe://podmesh/web", "fd00::7", "Web.Example", "10.1.2.3"], None);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.leaf_der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let kinds: Vec<String> = san.value.general_names.iter().map(|n| format!("{n}")).collect();
    assert_eq!(kinds.len(), 4);
    assert_eq!(
        kinds,
        [
            "DNSName(web.example)",
            "IPAddress(fd:00:00:00:00:00:00:00:00:00:00:00:00:00:00:07)",
            "IPAddress(0a:01:02:03)",
            "URI(spiffe://podmesh/web)"
        ]
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 24 * 3600 + 300);
    assert!(!cert.is_ca());
}

#[test]
fn no_dns_name_and_no_sans_at_all_are_fine() {
    let root = RootCa::generate().unwrap();
    let mesh = MeshCa::generate(&root).unwrap();
    let ip_only = issue(&mesh, &["192.0.2.1"], None);
    assert!(server_ok(mesh.mesh_ca_der(), &ip_only.leaf_der, &[], "192.0.2.1"));
    let none = issue(&mesh, &[], None);
    assert!(client_ok(mesh.mesh_ca_der(), &none.leaf_der, &[]));
}

#[test]
fn csr_input_uses_the_csr_key_and_rejects_tampering() {
    let root = RootCa::generate().unwrap();
    let mesh = MeshCa::generate(&root).unwrap();
    let key = new_workload_key().unwrap();
    let csr =
        rcgen::CertificateParams::new(vec!["ignored.example".to_owned()]).unwrap().serialize_request(&key).unwrap();
    let input = PublicKeyInput::CsrDer(csr.der().to_vec());
    assert_eq!(input.spki_der().unwrap(), spki_of(&key));
    let sans = SubjectAltNames::parse(&["web"]).unwrap();
    let leaf = mesh
        .issue(&LeafRequest {
            public_key: &input,
            common_name: "web",
            sans: &sans,
            lifetime: Duration::from_secs(60),
            claims: None,
        })
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.leaf_der).unwrap();
    assert_eq!(cert.public_key().raw, spki_of(&key).as_slice());
    assert!(server_ok(mesh.mesh_ca_der(), &leaf.leaf_der, &[], "web"));
    assert!(!server_ok(mesh.mesh_ca_der(), &leaf.leaf_der, &[], "ignored.example"), "CSR names must be ignored");

    let mut tampered = csr.der().to_vec();
    let n = tampered.len();
    tampered[n - 5] ^= 0x40; // inside the signature
    assert!(matches!(PublicKeyInput::CsrDer(tampered).spki_der(), Err(IssueError::Csr(_))));
    assert!(matches!(PublicKeyInput::CsrDer(vec![0x30, 0x03, 1, 2, 3]).spki_der(), Err(IssueError::Csr(_))));
}

#[test]
fn bad_inputs_fail_with_clear_errors() {
    let root = RootCa::generate().unwrap();
    let mesh = MeshCa::generate(&root).unwrap();
    let sans = SubjectAltNames::default();
    let attempt = |input: PublicKeyInput, lifetime: Duration| {
        mesh.issue(&LeafRequest { public_key: &input, common_name: "x", sans: &sans, lifetime, claims: None })
    };
    assert!(matches!(attempt(PublicKeyInput::SpkiDer(vec![]), DEFAULT_LIFETIME), Err(IssueError::PublicKey(_))));
    assert!(matches!(
        attempt(PublicKeyInput::SpkiDer(b"garbage".to_vec()), DEFAULT_LIFETIME),
        Err(IssueError::PublicKey(_))
    ));
    let mut trailing = spki_of(&new_workload_key().unwrap());
    trailing.push(0);
    assert!(attempt(PublicKeyInput::SpkiDer(trailing), DEFAULT_LIFETIME).is_err());
    let good = PublicKeyInput::SpkiDer(spki_of(&new_workload_key().unwrap()));
    assert!(matches!(attempt(good.clone(), Duration::ZERO), Err(IssueError::Lifetime(_))));

    for bad in ["", "bad name", "-x-.", "sp ace:x", "a..b", "ünï.example", "1:"] {
        let err = SubjectAltNames::parse(&[bad]).expect_err(bad);
        assert!(err.to_string().contains("subject alternative name"), "{err}");
    }

    // persisted state that does not belong together
    let other_root = RootCa::generate().unwrap();
    let other_mesh = MeshCa::generate(&other_root).unwrap();
    assert!(matches!(RootCa::from_pem(&other_root.key_pem(), root.cert_pem()), Err(CaError::KeyMismatch { .. })));
    assert!(matches!(
        MeshCa::from_pem(&other_mesh.key_pem(), other_mesh.intermediate_pem(), other_mesh.mesh_ca_pem(), &root),
        Err(CaError::NotUnderRoot)
    ));
    assert!(matches!(
        MeshCa::from_pem(&mesh.key_pem(), other_mesh.intermediate_pem(), mesh.mesh_ca_pem(), &root),
        Err(CaError::KeyMismatch { .. })
    ));
    assert!(RootCa::from_pem("not pem", root.cert_pem()).is_err());
    assert!(RootCa::from_pem(&root.key_pem(), "not pem").is_err());
}

#[test]
fn coordinator_server_certificate_is_under_the_root() {
    let root = RootCa::generate().unwrap();
    let key = new_workload_key().unwrap();
    let input = PublicKeyInput::SpkiDer(spki_of(&key));
    let sans = SubjectAltNames::parse(&["coordinator", "127.0.0.1"]).unwrap();
    let cert = root
        .issue_server(&LeafRequest {
            public_key: &input,
            common_name: "podmesh coordinator",
            sans: &sans,
            lifetime: DEFAULT_LIFETIME,
            claims: None,
        })
        .unwrap();
    assert!(server_ok(root.cert_der(), &cert.leaf_der, &[], "127.0.0.1"));
    assert!(server_ok(root.cert_der(), &cert.leaf_der, &[], "coordinator"));
}
