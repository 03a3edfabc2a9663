//! Issuing over real TLS on loopback with tsm-sim SNP evidence: happy path and every rejection.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use pki::{AttestationClaims, Platform};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wire::api::{CertificateRequest, ErrorBody, Reason};
use wire::client::ClientError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn verifies(anchor_pem: &str, chain_pem: &str, name: Option<&str>) -> bool {
    let mut roots = RootCertStore::empty();
    roots.add(wire::pem::certificate("anchor", anchor_pem).unwrap()).unwrap();
    let roots = Arc::new(roots);
    let chain: Vec<CertificateDer<'static>> = wire::pem::certificates("chain", chain_pem).unwrap();
    let (leaf, rest) = chain.split_first().unwrap();
    match name {
        Some(name) => WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .unwrap()
            .verify_server_cert(leaf, rest, &ServerName::try_from(name.to_owned()).unwrap(), &[], UnixTime::now())
            .is_ok(),
        None => WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .unwrap()
            .verify_client_cert(leaf, rest, UnixTime::now())
            .is_ok(),
    }
}

/// A coordinator in `state` with the standard SNP manifest; `allow_sim` is its simulated-TEE opt-in.
async fn start_snp(state: &Path, allow_sim: bool, config: Config, limits: Limits) -> Running {
    start(state, Some(manifest(&manifest_json(allow_sim, &MEASUREMENT))), config, limits).await
}

fn leaf_only(chain_pem: &str) -> String {
    let chain = wire::pem::certificates("chain", chain_pem).unwrap();
    wire::pem::encode("CERTIFICATE", &chain[0])
}

/// The URI SANs of the leaf of `chain_pem`.
fn uri_sans(chain_pem: &str) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let leaf = &wire::pem::certificates("chain", chain_pem).unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let names = cert.subject_alternative_name().unwrap().map(|e| e.value.general_names.clone()).unwrap_or_default();
    names.iter().filter_map(|n| if let GeneralName::URI(u) = n { Some(u.to_string()) } else { None }).collect()
}

fn expect_rejection(result: Result<impl std::fmt::Debug, ClientError>, reason: Reason) {
    match result {
        Err(ClientError::Rejected { reason: got, status, detail, .. }) => {
            assert_eq!(got, reason, "wrong reason ({status}): {detail}");
            assert!((400..500).contains(&status), "{status}");
            assert!(!detail.is_empty());
        }
        other => panic!("expected rejection {reason}, got {other:?}"),
    }
}

#[tokio::test]
async fn issues_a_mesh_certificate_for_simulated_snp_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let running = start_snp(&tmp.path().join("state"), true, sim_config(&platform), Limits::default()).await;
    let client = running.client();
    let guest = platform.guest(MEASUREMENT, WEB_HOST_DATA);
    let workload = Workload::new();
    let issued = attest(&client, &guest, &workload).await.expect("certificate issued");

    assert_eq!(issued.workload, "web");
    assert_eq!(issued.root_ca_pem, running.root_pem);
    assert_eq!(wire::pem::certificates("chain", &issued.cert_chain_pem).unwrap().len(), 2);
    // the leaf verifies directly against the mesh CA, and via the intermediate against the root
    assert!(verifies(&issued.mesh_ca_pem, &leaf_only(&issued.cert_chain_pem), Some("web.default.svc")));
    assert!(verifies(&issued.mesh_ca_pem, &issued.cert_chain_pem, Some("10.0.0.7")));
    assert!(verifies(&issued.root_ca_pem, &issued.cert_chain_pem, None));
    assert!(!verifies(&issued.mesh_ca_pem, &issued.cert_chain_pem, Some("db")));
    // The SPIFFE ID under the default mesh name; the manifest lists it too: carried once.
    assert_eq!(uri_sans(&issued.cert_chain_pem), ["spiffe://podmesh/web"]);

    let leaf = &wire::pem::certificates("chain", &issued.cert_chain_pem).unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    assert_eq!(cert.public_key().raw, workload.spki.as_slice(), "certificate carries the workload key");
    let claims = AttestationClaims::from_certificate(leaf).unwrap();
    assert_eq!(claims.platform, Platform::Snp);
    assert_eq!(claims.measurement, MEASUREMENT);
    assert_eq!(claims.host_data, WEB_HOST_DATA);
    assert_eq!(
        claims.initdata_digest.as_deref(),
        Some(&WEB_HOST_DATA[..]),
        "the certificate names the initdata digest"
    );
    assert_eq!(claims.policy, 0x30000u64.to_le_bytes());
    assert!(claims.simulated);
    assert_eq!(claims.workload, "web");
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 24 * 3600 + 300);
    assert_eq!(cert.validity().not_after.timestamp() as u64, issued.not_after);

    // a workload without any DNS name, authenticated by CSR instead of a bare SPKI
    let db = platform.guest(MEASUREMENT, DB_HOST_DATA);
    let key = pki::leaf::new_workload_key().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    let nonce = client.nonce().await.unwrap().nonce;
    let request = CertificateRequest {
        evidence: snp_evidence(&db, &pki::leaf::spki_of(&key), &nonce),
        nonce,
        public_key: None,
        csr: Some(csr.der().to_vec()),
    };
    let issued = client.certificate(&request).await.expect("CSR issue");
    assert_eq!(issued.workload, "db");
    assert!(verifies(&issued.mesh_ca_pem, &issued.cert_chain_pem, Some("10.0.0.8")));
    assert_eq!(uri_sans(&issued.cert_chain_pem), ["spiffe://podmesh/db"], "a SPIFFE ID the manifest did not list");
    running.stop().await;
}

#[tokio::test]
async fn every_bad_attestation_is_rejected_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let config = Config { nonce_ttl: Duration::from_secs(2), ..sim_config(&platform) };
    let running = start_snp(&tmp.path().join("state"), true, config, Limits::default()).await;
    let client = running.client();
    let good = platform.guest(MEASUREMENT, WEB_HOST_DATA);
    let workload = Workload::new();

    // wrong measurement
    let other = platform.guest([0xbb; 48], WEB_HOST_DATA);
    expect_rejection(attest(&client, &other, &workload).await, Reason::MeasurementMismatch);
    // unknown host data
    let stranger = platform.guest(MEASUREMENT, [0x99; 32]);
    expect_rejection(attest(&client, &stranger, &workload).await, Reason::UnknownHostData);

    // replayed nonce: a successful request, then the same request again
    let nonce = client.nonce().await.unwrap().nonce;
    let request = CertificateRequest {
        evidence: snp_evidence(&good, &workload.spki, &nonce),
        nonce: nonce.clone(),
        public_key: Some(workload.spki.clone()),
        csr: None,
    };
    client.certificate(&request).await.expect("first use succeeds");
    expect_rejection(client.certificate(&request).await, Reason::NonceReplayed);

    // a nonce the coordinator never issued
    let mut unknown = request.clone();
    unknown.nonce = vec![7; 32];
    expect_rejection(client.certificate(&unknown).await, Reason::NonceUnknown);

    // report data bound to another key: evidence for key A, certificate asked for key B
    let other_key = Workload::new();
    let nonce = client.nonce().await.unwrap().nonce;
    let request = CertificateRequest {
        evidence: snp_evidence(&good, &workload.spki, &nonce),
        nonce,
        public_key: Some(other_key.spki.clone()),
        csr: None,
    };
    expect_rejection(client.certificate(&request).await, Reason::ReportDataMismatch);

    // report data bound to another nonce
    let nonce = client.nonce().await.unwrap().nonce;
    let request = CertificateRequest {
        evidence: snp_evidence(&good, &workload.spki, &[0u8; 32]),
        nonce,
        public_key: Some(workload.spki.clone()),
        csr: None,
    };
    expect_rejection(client.certificate(&request).await, Reason::ReportDataMismatch);

    // tampered report: flip a measurement bit after signing
    let nonce = client.nonce().await.unwrap().nonce;
    let mut evidence = snp_evidence(&good, &workload.spki, &nonce);
    if let wire::api::Evidence::Snp { report, .. } = &mut evidence {
        report[0x90] ^= 1;
    }
    let request = CertificateRequest { evidence, nonce, public_key: Some(workload.spki.clone()), csr: None };
    expect_rejection(client.certificate(&request).await, Reason::EvidenceInvalid);

    // truncated report and a garbage certificate table
    let nonce = client.nonce().await.unwrap().nonce;
    let request = CertificateRequest {
        evidence: wire::api::Evidence::Snp { report: vec![0; 100], cert_table: Some(vec![1, 2, 3]) },
        nonce,
        public_key: Some(workload.spki.clone()),
        csr: None,
    };
    expect_rejection(client.certificate(&request).await, Reason::EvidenceInvalid);

    // TDX evidence without TDX reference values in the manifest
    let nonce = client.nonce().await.unwrap().nonce;
    let request = CertificateRequest {
        evidence: wire::api::Evidence::Tdx { quote: vec![0; 64] },
        nonce,
        public_key: Some(workload.spki.clone()),
        csr: None,
    };
    expect_rejection(client.certificate(&request).await, Reason::PlatformNotAllowed);

    // garbage public key, and both key fields at once
    let nonce = client.nonce().await.unwrap().nonce;
    let request = CertificateRequest {
        evidence: snp_evidence(&good, b"junk", &nonce),
        nonce,
        public_key: Some(b"junk".to_vec()),
        csr: None,
    };
    expect_rejection(client.certificate(&request).await, Reason::InvalidPublicKey);
    let mut both = request.clone();
    both.csr = Some(vec![1]);
    expect_rejection(client.certificate(&both).await, Reason::MalformedRequest);

    // expired nonce
    let nonce = client.nonce().await.unwrap().nonce;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let request = CertificateRequest {
        evidence: snp_evidence(&good, &workload.spki, &nonce),
        nonce,
        public_key: Some(workload.spki.clone()),
        csr: None,
    };
    expect_rejection(client.certificate(&request).await, Reason::NonceExpired);

    // and after all that, the honest workload still gets its certificate
    attest(&client, &good, &workload).await.expect("coordinator still serves");
    running.stop().await;
}

#[tokio::test]
async fn simulated_evidence_needs_the_manifest_opt_in() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let guest = platform.guest(MEASUREMENT, WEB_HOST_DATA);
    let workload = Workload::new();

    // anchor loaded, manifest does not opt in: recognised and refused
    let running = start_snp(&tmp.path().join("a"), false, sim_config(&platform), Limits::default()).await;
    expect_rejection(attest(&running.client(), &guest, &workload).await, Reason::SimulatedNotAllowed);
    running.stop().await;

    // no anchor at all: just untrusted evidence
    let running = start_snp(&tmp.path().join("b"), false, Default::default(), Limits::default()).await;
    expect_rejection(attest(&running.client(), &guest, &workload).await, Reason::EvidenceInvalid);
    running.stop().await;

    // opting in without an anchor is a configuration error, caught before anything is written
    let err = coordinator::service::Coordinator::open(
        &tmp.path().join("c"),
        Some(manifest(&manifest_json(true, &MEASUREMENT))),
        Default::default(),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("--sim-anchor"), "{err}");
    assert!(!tmp.path().join("c").exists());
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_json_4xx() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let limits = Limits { body_bytes: 32 * 1024, ..Limits::default() };
    let running = start_snp(&tmp.path().join("state"), true, sim_config(&platform), limits).await;
    let client = running.client();
    let json = [("content-type", "application/json")];
    let cases: Vec<(&str, &str, Vec<u8>, u16, Reason)> = vec![
        ("POST", "/v1/certificate", b"{".to_vec(), 400, Reason::MalformedRequest),
        ("POST", "/v1/certificate", b"".to_vec(), 400, Reason::MalformedRequest),
        ("POST", "/v1/certificate", b"\xff\xfe\x00".to_vec(), 400, Reason::MalformedRequest),
        (
            "POST",
            "/v1/certificate",
            br#"{"nonce":"%%%","evidence":{"platform":"snp","report":""}}"#.to_vec(),
            400,
            Reason::MalformedRequest,
        ),
        (
            "POST",
            "/v1/certificate",
            br#"{"nonce":"","evidence":{"platform":"sgx"}}"#.to_vec(),
            400,
            Reason::MalformedRequest,
        ),
        ("POST", "/v1/certificate", vec![b'a'; 40_000], 413, Reason::BodyTooLarge),
        ("PUT", "/v1/manifest", vec![b'{'; 40_000], 413, Reason::BodyTooLarge),
        ("PUT", "/v1/manifest", b"{}".to_vec(), 403, Reason::ManifestUpdateDisabled),
        ("GET", "/v1/nope", vec![], 404, Reason::NotFound),
        ("GET", "/v1/certificate", vec![], 405, Reason::MethodNotAllowed),
        ("DELETE", "/v1/manifest", vec![], 405, Reason::MethodNotAllowed),
    ];
    for (method, path, body, status, reason) in cases {
        let (got, bytes) = client.raw(method, path, body, &json).await.expect("server answers");
        let parsed: ErrorBody = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {}", String::from_utf8_lossy(&bytes)));
        assert_eq!((got, parsed.reason), (status, reason), "{method} {path}: {}", parsed.detail);
    }
    // the read-only endpoints work, and the coordinator survived all of the above
    let ca = client.ca().await.unwrap();
    assert_eq!(ca.root_ca_pem, running.root_pem);
    assert_eq!(ca.manifest_generation, 1);
    let m = client.manifest().await.unwrap();
    assert_eq!(m.manifest["allow_simulated_tee"], true);
    attest(&client, &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new()).await.unwrap();
    running.stop().await;
}

#[tokio::test]
async fn a_stalled_request_times_out_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let limits = Limits { request_timeout: Duration::from_millis(500), ..Limits::default() };
    let running = start_snp(&tmp.path().join("state"), true, sim_config(&platform), limits).await;

    let mut roots = RootCertStore::empty();
    roots.add(wire::pem::certificate("root", &running.root_pem).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = running.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    // headers promise a body that never comes
    tls.write_all(b"POST /v1/certificate HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{\"nonce\":")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "server did not answer a stalled request");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"reason\":\"timeout\""), "{text}");
    running.stop().await;
}
