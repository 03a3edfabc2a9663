//! TDX quotes, version 4 with a TD 1.0 body (Intel TDX DCAP Quote Generation Library and
//! Quote Verification Library, "Quote Format"), signed the way the TD Quoting Enclave
//! signs: ECDSA P-256 attestation key over header‖body, a QE report signed by the PCK key
//! whose REPORTDATA binds SHA-256(attestation key ‖ QE auth data), and certification data
//! type 5 (PEM chain PCK → PCK Platform CA → root) nested in type 6 (QE report data).
//!
//! The keys and certificates are a simulated Intel PKI (`Intel SGX Root CA` look-alike),
//! persisted under `state/intel-tdx/`. What is NOT simulated: the PCK certificate's SGX
//! extension (FMSPC, TCB, PCE-ID) and the signed collateral (TCB info, QE identity, CRLs),
//! so DCAP verification (dcap-qvl) of these quotes cannot succeed yet, even with the
//! simulated root passed to `dcap_qvl::verify::QuoteVerifier::new`.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use sha2::{Digest as _, Sha256};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

use crate::x509_build::{self, CertSpec, Issuer, X509BuildError};

pub const HEADER_LEN: usize = 48;
pub const TD10_BODY_LEN: usize = 584;
const QE_REPORT_LEN: usize = 384;
/// Intel's QE vendor id 939a7233-f79c-4ca9-940a-0db3957f0607.
const INTEL_QE_VENDOR_ID: [u8; 16] =
    [0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07];

#[derive(Debug, thiserror::Error)]
pub enum TdxSimError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("state file {path} is not a valid {what}; remove it to start a new simulated TDX PKI")]
    Corrupt { path: PathBuf, what: &'static str },
    #[error("simulated TDX key operation failed: {0}")]
    Crypto(&'static str),
    #[error("building a simulated TDX certificate failed: {0}")]
    X509(#[from] X509BuildError),
}

/// TD measurements and identity set by flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxLaunch {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: u64,
    pub td_attributes: u64,
    pub xfam: u64,
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub qe_svn: u16,
    pub pce_svn: u16,
}

impl Default for TdxLaunch {
    fn default() -> Self {
        TdxLaunch {
            tee_tcb_svn: [3, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            mr_seam: [0x11; 48],
            mr_signer_seam: [0; 48],
            seam_attributes: 0,
            // SEPT_VE_DISABLE (bit 28), debug (bit 0) off.
            td_attributes: 0x1000_0000,
            // x87, SSE, AVX, AVX-512, PK, ... as typical Linux guests.
            xfam: 0x61be7,
            mr_td: [0; 48],
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            rtmr: [[0; 48]; 4],
            qe_svn: 8,
            pce_svn: 13,
        }
    }
}

/// The simulated Intel PKI and quoting keys.
pub struct SimTdxKeys {
    root_der: Vec<u8>,
    platform_ca_der: Vec<u8>,
    pck_der: Vec<u8>,
    pck_key: EcdsaKeyPair,
    attestation_key: EcdsaKeyPair,
}

impl std::fmt::Debug for SimTdxKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTdxKeys").finish_non_exhaustive()
    }
}

const FILES: [&str; 5] = ["root.der", "platform_ca.der", "pck.der", "pck.key", "attestation.key"];

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TdxSimError {
    let path = path.to_path_buf();
    move |source| TdxSimError::Io { action, path, source }
}

fn p256(alg: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm) -> Result<EcdsaKeyPair, TdxSimError> {
    EcdsaKeyPair::generate(alg).map_err(|_| TdxSimError::Crypto("P-256 key generation"))
}

fn spki(key: &EcdsaKeyPair) -> Result<x509_cert::spki::SubjectPublicKeyInfoOwned, TdxSimError> {
    let der = key.public_key().as_der().map_err(|_| TdxSimError::Crypto("public key export"))?;
    Ok(x509_build::spki_from_der(der.as_ref())?)
}

fn intel_name(cn: &str) -> Result<x509_cert::name::Name, X509BuildError> {
    x509_build::name(&[("CN", cn), ("O", "Intel Corporation"), ("L", "Santa Clara"), ("ST", "CA"), ("C", "US")])
}

impl SimTdxKeys {
    /// Loads `state_dir/intel-tdx/`, creating the simulated PKI on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, TdxSimError> {
        let dir = state_dir.join("intel-tdx");
        if !dir.join(FILES[0]).exists() {
            Self::create(&dir)?;
        }
        let read = |name: &str| -> Result<(PathBuf, Vec<u8>), TdxSimError> {
            let path = dir.join(name);
            let b = fs::read(&path).map_err(io_err("read", &path))?;
            Ok((path, b))
        };
        let key = |name: &str, alg| -> Result<EcdsaKeyPair, TdxSimError> {
            let (path, b) = read(name)?;
            EcdsaKeyPair::from_pkcs8(alg, &b).map_err(|_| TdxSimError::Corrupt { path, what: "PKCS#8 P-256 key" })
        };
        Ok(SimTdxKeys {
            root_der: read("root.der")?.1,
            platform_ca_der: read("platform_ca.der")?.1,
            pck_der: read("pck.der")?.1,
            pck_key: key("pck.key", &ECDSA_P256_SHA256_FIXED_SIGNING)?,
            attestation_key: key("attestation.key", &ECDSA_P256_SHA256_FIXED_SIGNING)?,
        })
    }

    fn create(dir: &Path) -> Result<(), TdxSimError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let root = p256(&ECDSA_P256_SHA256_ASN1_SIGNING)?;
        let platform = p256(&ECDSA_P256_SHA256_ASN1_SIGNING)?;
        let pck = p256(&ECDSA_P256_SHA256_FIXED_SIGNING)?;
        let attestation = p256(&ECDSA_P256_SHA256_FIXED_SIGNING)?;
        let now = SystemTime::now();
        let not_before = now - Duration::from_secs(24 * 3600);
        let ca_exts = |path_len: Option<u8>| -> Result<Vec<x509_cert::ext::Extension>, TdxSimError> {
            Ok(vec![
                x509_build::extension(
                    <BasicConstraints as der::oid::AssociatedOid>::OID,
                    true,
                    x509_build::to_der("basic constraints", &BasicConstraints { ca: true, path_len_constraint: path_len })?,
                )?,
                x509_build::extension(
                    <KeyUsage as der::oid::AssociatedOid>::OID,
                    true,
                    x509_build::to_der("key usage", &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign))?,
                )?,
            ])
        };
        let root_der = x509_build::sign_cert(
            CertSpec {
                serial: vec![0x01],
                issuer: intel_name("Intel SGX Root CA")?,
                subject: intel_name("Intel SGX Root CA")?,
                not_before,
                not_after: now + Duration::from_secs(20 * 365 * 24 * 3600),
                spki: spki(&root)?,
                extensions: ca_exts(Some(1))?,
                explicit_trailer: false,
            },
            Issuer::EcdsaP256(&root),
        )?;
        let platform_der = x509_build::sign_cert(
            CertSpec {
                serial: vec![0x02],
                issuer: intel_name("Intel SGX Root CA")?,
                subject: intel_name("Intel SGX PCK Platform CA")?,
                not_before,
                not_after: now + Duration::from_secs(15 * 365 * 24 * 3600),
                spki: spki(&platform)?,
                extensions: ca_exts(Some(0))?,
                explicit_trailer: false,
            },
            Issuer::EcdsaP256(&root),
        )?;
        let pck_der = x509_build::sign_cert(
            CertSpec {
                serial: vec![0x03],
                issuer: intel_name("Intel SGX PCK Platform CA")?,
                subject: intel_name("Intel SGX PCK Certificate")?,
                not_before,
                not_after: now + Duration::from_secs(7 * 365 * 24 * 3600),
                spki: spki(&pck)?,
                extensions: vec![x509_build::extension(
                    <KeyUsage as der::oid::AssociatedOid>::OID,
                    true,
                    x509_build::to_der(
                        "key usage",
                        &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation),
                    )?,
                )?],
                explicit_trailer: false,
            },
            Issuer::EcdsaP256(&platform),
        )?;
        let secret = |name: &str, key: &EcdsaKeyPair| -> Result<(), TdxSimError> {
            let path = dir.join(name);
            let doc = key.to_pkcs8v1().map_err(|_| TdxSimError::Crypto("key export"))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o400)
                .open(&path)
                .map_err(io_err("create", &path))?;
            f.write_all(doc.as_ref()).map_err(io_err("write", &path))
        };
        secret("pck.key", &pck)?;
        secret("attestation.key", &attestation)?;
        for (name, der) in [("platform_ca.der", &platform_der), ("pck.der", &pck_der), ("root.der", &root_der)] {
            // root.der last: its presence marks a complete state.
            let path = dir.join(name);
            fs::write(&path, der).map_err(io_err("write", &path))?;
        }
        Ok(())
    }

    /// The simulated Intel root (DER), the anchor a verifier would have to be given.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    fn sign(key: &EcdsaKeyPair, msg: &[u8]) -> Result<Vec<u8>, TdxSimError> {
        Ok(key.sign(&SystemRandom::new(), msg).map_err(|_| TdxSimError::Crypto("ECDSA signing"))?.as_ref().to_vec())
    }
}

/// Builds a signed v4 quote over a TD 1.0 body with `report_data`.
pub fn build_quote(keys: &SimTdxKeys, launch: &TdxLaunch, report_data: &[u8; 64]) -> Result<Vec<u8>, TdxSimError> {
    let mut q = Vec::with_capacity(HEADER_LEN + TD10_BODY_LEN + 1200);
    // Header.
    q.extend_from_slice(&4u16.to_le_bytes()); // version
    q.extend_from_slice(&2u16.to_le_bytes()); // attestation key type: ECDSA-256-with-P-256
    q.extend_from_slice(&0x81u32.to_le_bytes()); // TEE type: TDX
    q.extend_from_slice(&launch.qe_svn.to_le_bytes());
    q.extend_from_slice(&launch.pce_svn.to_le_bytes());
    q.extend_from_slice(&INTEL_QE_VENDOR_ID);
    q.extend_from_slice(&[0u8; 20]); // user data
    // TD 1.0 report body.
    q.extend_from_slice(&launch.tee_tcb_svn);
    q.extend_from_slice(&launch.mr_seam);
    q.extend_from_slice(&launch.mr_signer_seam);
    q.extend_from_slice(&launch.seam_attributes.to_le_bytes());
    q.extend_from_slice(&launch.td_attributes.to_le_bytes());
    q.extend_from_slice(&launch.xfam.to_le_bytes());
    q.extend_from_slice(&launch.mr_td);
    q.extend_from_slice(&launch.mr_config_id);
    q.extend_from_slice(&launch.mr_owner);
    q.extend_from_slice(&launch.mr_owner_config);
    for r in &launch.rtmr {
        q.extend_from_slice(r);
    }
    q.extend_from_slice(report_data);
    debug_assert_eq!(q.len(), HEADER_LEN + TD10_BODY_LEN);

    let quote_sig = SimTdxKeys::sign(&keys.attestation_key, &q)?;
    let att_pub = keys.attestation_key.public_key().as_ref();
    // Uncompressed point 04‖x‖y; the quote carries x‖y.
    let att_pub = att_pub.get(1..65).ok_or(TdxSimError::Crypto("attestation public key"))?;
    let auth_data = [0u8; 32];

    let mut qe_report = [0u8; QE_REPORT_LEN];
    // SGX report body: CPUSVN(16) MISCSELECT(4) reserved(28) ATTRIBUTES(16) MRENCLAVE(32)
    // reserved(32) MRSIGNER(32) reserved(96) ISVPRODID(2) ISVSVN(2) reserved(60) REPORTDATA(64).
    qe_report[48..64].copy_from_slice(&[0x11, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0]);
    qe_report[256..258].copy_from_slice(&2u16.to_le_bytes()); // TD QE product id
    qe_report[258..260].copy_from_slice(&launch.qe_svn.to_le_bytes());
    let mut h = Sha256::new();
    h.update(att_pub);
    h.update(auth_data);
    qe_report[320..352].copy_from_slice(&h.finalize());
    let qe_sig = SimTdxKeys::sign(&keys.pck_key, &qe_report)?;

    let mut chain = x509_build::pem_cert(&keys.pck_der);
    chain.push_str(&x509_build::pem_cert(&keys.platform_ca_der));
    chain.push_str(&x509_build::pem_cert(&keys.root_der));
    let chain = chain.into_bytes();

    let mut qe_data = Vec::new();
    qe_data.extend_from_slice(&qe_report);
    qe_data.extend_from_slice(&qe_sig);
    qe_data.extend_from_slice(&(auth_data.len() as u16).to_le_bytes());
    qe_data.extend_from_slice(&auth_data);
    qe_data.extend_from_slice(&5u16.to_le_bytes()); // PCK certificate chain (PEM)
    qe_data.extend_from_slice(&(chain.len() as u32).to_le_bytes());
    qe_data.extend_from_slice(&chain);

    let mut sig_data = Vec::new();
    sig_data.extend_from_slice(&quote_sig);
    sig_data.extend_from_slice(att_pub);
    sig_data.extend_from_slice(&6u16.to_le_bytes()); // QE report certification data
    sig_data.extend_from_slice(&(qe_data.len() as u32).to_le_bytes());
    sig_data.extend_from_slice(&qe_data);

    q.extend_from_slice(&(sig_data.len() as u32).to_le_bytes());
    q.extend_from_slice(&sig_data);
    Ok(q)
}
