//! TDX quotes, version 4 with a TD 1.0 body (Intel TDX DCAP Quote Generation Library and
//! Quote Verification Library, "Quote Format"), signed the way the TD Quoting Enclave
//! signs: ECDSA P-256 attestation key over header‖body, a QE report signed by the PCK key
//! whose REPORTDATA binds SHA-256(attestation key ‖ QE auth data), and certification data
//! type 5 (PEM chain PCK → PCK Platform CA → root) nested in type 6 (QE report data).
//!
//! The keys and certificates are a simulated Intel PKI of the same shape as Intel's: an
//! `Intel SGX Root CA` look-alike (P-256) signs the PCK Platform CA and the TCB Signing
//! certificate; the Platform CA signs the PCK certificate, which carries the SGX extension
//! (PPID, TCB with CPUSVN/PCESVN, PCE-ID, FMSPC, SGX type); the root and the Platform CA
//! publish CRLs. [`SimTdxKeys::collateral`] signs a TCB info (TDX, v3) and a QE identity
//! (TD_QE, v2) that match the quotes, so dcap-qvl verifies them end to end once it is
//! given the simulated root (`QuoteVerifier::new(root_der)`). Everything lives under
//! `state/intel-tdx/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use der::asn1::{Any, BitString, ObjectIdentifier, OctetString};
use der::{Decode as _, Encode as _, Tag};
use sha2::{Digest as _, Sha256};
use x509_cert::crl::{CertificateList, TbsCertList};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::state_dir::{self, io_err, StateIoError};
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

impl From<StateIoError> for TdxSimError {
    fn from(StateIoError { action, path, source }: StateIoError) -> Self {
        TdxSimError::Io { action, path, source }
    }
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
    /// Header QE_VENDOR_ID; Intel's unless a test plays a foreign quoting enclave.
    pub qe_vendor_id: [u8; 16],
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
            qe_vendor_id: INTEL_QE_VENDOR_ID,
        }
    }
}

/// The simulated Intel PKI and quoting keys.
pub struct SimTdxKeys {
    root_der: Vec<u8>,
    platform_ca_der: Vec<u8>,
    pck_der: Vec<u8>,
    tcb_signing_der: Vec<u8>,
    root_crl_der: Vec<u8>,
    pck_crl_der: Vec<u8>,
    pck_key: EcdsaKeyPair,
    attestation_key: EcdsaKeyPair,
    tcb_signing_key: EcdsaKeyPair,
}

impl std::fmt::Debug for SimTdxKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTdxKeys").finish_non_exhaustive()
    }
}

/// Written last on creation: its presence marks a complete state directory.
const COMPLETE_MARKER: &str = "root_crl.der";
/// FMSPC and PCE-ID of the simulated platform (TCB info and PCK certificate agree).
pub const SIM_FMSPC: [u8; 6] = [0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00];
const SIM_PCE_ID: [u8; 2] = [0, 0];
/// CPUSVN components in the PCK certificate (and the TCB level's sgxtcbcomponents).
const SIM_CPUSVN: [u8; 16] = [3, 3, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
/// MRSIGNER of the simulated TD Quoting Enclave.
const SIM_QE_MRSIGNER: [u8; 32] = [0x5e; 32];

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

fn ca_extensions(
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
    path_len: u8,
) -> Result<Vec<x509_cert::ext::Extension>, TdxSimError> {
    Ok(vec![
        ext(true, &BasicConstraints { ca: true, path_len_constraint: Some(path_len) })?,
        ext(true, &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign))?,
        ext(false, &SubjectKeyIdentifier(octets(x509_build::key_identifier(spki))?))?,
    ])
}

fn ext<T: der::Encode + der::oid::AssociatedOid>(
    critical: bool,
    v: &T,
) -> Result<x509_cert::ext::Extension, TdxSimError> {
    Ok(x509_build::extension(T::OID, critical, x509_build::to_der("extension", v)?)?)
}

fn octets(b: Vec<u8>) -> Result<OctetString, TdxSimError> {
    OctetString::new(b).map_err(|source| TdxSimError::X509(X509BuildError::Der { what: "octet string", source }))
}

fn der_fail(what: &'static str) -> impl FnOnce(der::Error) -> TdxSimError {
    move |source| TdxSimError::X509(X509BuildError::Der { what, source })
}

/// One `SEQUENCE { OID, value }` of Intel's SGX extension.
#[derive(der::Sequence)]
struct SgxItem {
    oid: ObjectIdentifier,
    value: Any,
}

fn sgx_item(arc: &str, value: Any) -> Result<SgxItem, TdxSimError> {
    let oid = ObjectIdentifier::new(&format!("1.2.840.113741.1.13.1{arc}"))
        .map_err(|_| TdxSimError::Crypto("SGX extension OID"))?;
    Ok(SgxItem { oid, value })
}

/// Intel's SGX extension (1.2.840.113741.1.13.1) for the PCK certificate.
fn sgx_extension(pce_svn: u16) -> Result<x509_cert::ext::Extension, TdxSimError> {
    let octet = |b: &[u8]| Any::new(Tag::OctetString, b.to_vec()).map_err(der_fail("SGX extension"));
    let int = |v: u16| Any::encode_from(&v).map_err(der_fail("SGX extension"));
    let mut tcb = Vec::new();
    for (i, svn) in SIM_CPUSVN.iter().enumerate() {
        tcb.push(sgx_item(&format!(".2.{}", i + 1), int(u16::from(*svn))?)?);
    }
    tcb.push(sgx_item(".2.17", int(pce_svn)?)?);
    tcb.push(sgx_item(".2.18", octet(&SIM_CPUSVN)?)?);
    let tcb = Any::from_der(&tcb.to_der().map_err(der_fail("SGX TCB"))?).map_err(der_fail("SGX TCB"))?;
    let items = vec![
        sgx_item(".1", octet(&[0x51; 16])?)?, // PPID
        sgx_item(".2", tcb)?,
        sgx_item(".3", octet(&SIM_PCE_ID)?)?,
        sgx_item(".4", octet(&SIM_FMSPC)?)?,
        sgx_item(".5", Any::new(Tag::Enumerated, vec![0]).map_err(der_fail("SGX type"))?)?, // Standard
    ];
    let oid = ObjectIdentifier::new_unwrap("1.2.840.113741.1.13.1");
    Ok(x509_build::extension(oid, false, items.to_der().map_err(der_fail("SGX extension"))?)?)
}

/// An empty (nothing revoked) v2 CRL with CRL number 1, like Intel's.
fn empty_crl(
    issuer: &str,
    issuer_key: &EcdsaKeyPair,
    issuer_spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
) -> Result<Vec<u8>, TdxSimError> {
    let now = SystemTime::now();
    let alg = AlgorithmIdentifierOwned { oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"), parameters: None };
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: alg.clone(),
        issuer: intel_name(issuer)?,
        this_update: x509_build::x509_time(now - Duration::from_secs(24 * 3600))?,
        next_update: Some(x509_build::x509_time(now + Duration::from_secs(10 * 365 * 24 * 3600))?),
        revoked_certificates: None,
        crl_extensions: Some(vec![
            x509_build::extension(
                ObjectIdentifier::new_unwrap("2.5.29.20"),
                false,
                x509_build::to_der("CRL number", &1u8)?,
            )?,
            ext(
                false,
                &AuthorityKeyIdentifier {
                    key_identifier: Some(octets(x509_build::key_identifier(issuer_spki))?),
                    ..Default::default()
                },
            )?,
        ]),
    };
    let tbs_der = tbs.to_der().map_err(der_fail("CRL"))?;
    let sig = SimTdxKeys::sign(issuer_key, &tbs_der)?;
    let crl = CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(der_fail("CRL signature"))?,
    };
    crl.to_der().map_err(der_fail("CRL"))
}

impl SimTdxKeys {
    /// Loads `state_dir/intel-tdx/`, creating the simulated PKI on first use.
    pub fn load_or_create(state_dir: &Path, pce_svn: u16) -> Result<Self, TdxSimError> {
        let dir = state_dir.join("intel-tdx");
        if !dir.join(COMPLETE_MARKER).exists() {
            Self::create(&dir, pce_svn)?;
        }
        let read = |name: &str| -> Result<(PathBuf, Vec<u8>), TdxSimError> {
            let path = dir.join(name);
            let b = fs::read(&path).map_err(io_err("read", &path))?;
            Ok((path, b))
        };
        let key = |name: &str| -> Result<EcdsaKeyPair, TdxSimError> {
            let (path, b) = read(name)?;
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &b)
                .map_err(|_| TdxSimError::Corrupt { path, what: "PKCS#8 P-256 key" })
        };
        Ok(SimTdxKeys {
            root_der: read("root.der")?.1,
            platform_ca_der: read("platform_ca.der")?.1,
            pck_der: read("pck.der")?.1,
            tcb_signing_der: read("tcb_signing.der")?.1,
            root_crl_der: read("root_crl.der")?.1,
            pck_crl_der: read("pck_crl.der")?.1,
            pck_key: key("pck.key")?,
            attestation_key: key("attestation.key")?,
            tcb_signing_key: key("tcb_signing.key")?,
        })
    }

    /// Builds the PKI in a private temp directory and renames it into place, so concurrent
    /// starters never mix keys of two different PKIs.
    fn create(dir: &Path, pce_svn: u16) -> Result<(), TdxSimError> {
        state_dir::create_atomically(dir, COMPLETE_MARKER, |tmp| Self::write_new(tmp, pce_svn))
    }

    /// Generates the keys, certificates and CRLs into the empty directory `dir`.
    fn write_new(dir: &Path, pce_svn: u16) -> Result<(), TdxSimError> {
        // CA keys sign certificates and CRLs (ASN.1 signatures); the others sign raw r||s.
        let root = p256(&ECDSA_P256_SHA256_ASN1_SIGNING)?;
        let platform = p256(&ECDSA_P256_SHA256_ASN1_SIGNING)?;
        let pck = p256(&ECDSA_P256_SHA256_FIXED_SIGNING)?;
        let attestation = p256(&ECDSA_P256_SHA256_FIXED_SIGNING)?;
        let tcb_signing = p256(&ECDSA_P256_SHA256_FIXED_SIGNING)?;
        let now = SystemTime::now();
        let not_before = now - Duration::from_secs(24 * 3600);
        let years = |y: u64| now + Duration::from_secs(y * 365 * 24 * 3600);
        let (root_spki, platform_spki) = (spki(&root)?, spki(&platform)?);
        let leaf_usage = || ext(true, &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation));
        let aki = |issuer_spki: &x509_cert::spki::SubjectPublicKeyInfoOwned| -> Result<x509_cert::ext::Extension, TdxSimError> {
            ext(false, &AuthorityKeyIdentifier { key_identifier: Some(octets(x509_build::key_identifier(issuer_spki))?), ..Default::default() })
        };
        let root_der = x509_build::sign_cert(
            CertSpec {
                serial: vec![0x01],
                issuer: intel_name("Intel SGX Root CA")?,
                subject: intel_name("Intel SGX Root CA")?,
                not_before,
                not_after: years(20),
                spki: root_spki.clone(),
                extensions: ca_extensions(&root_spki, 1)?,
                explicit_trailer: false,
            },
            Issuer::EcdsaP256(&root),
        )?;
        let mut platform_exts = ca_extensions(&platform_spki, 0)?;
        platform_exts.push(aki(&root_spki)?);
        let platform_der = x509_build::sign_cert(
            CertSpec {
                serial: vec![0x02],
                issuer: intel_name("Intel SGX Root CA")?,
                subject: intel_name("Intel SGX PCK Platform CA")?,
                not_before,
                not_after: years(15),
                spki: platform_spki.clone(),
                extensions: platform_exts,
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
                not_after: years(7),
                spki: spki(&pck)?,
                extensions: vec![aki(&platform_spki)?, leaf_usage()?, sgx_extension(pce_svn)?],
                explicit_trailer: false,
            },
            Issuer::EcdsaP256(&platform),
        )?;
        let tcb_signing_der = x509_build::sign_cert(
            CertSpec {
                serial: vec![0x04],
                issuer: intel_name("Intel SGX Root CA")?,
                subject: intel_name("Intel SGX TCB Signing")?,
                not_before,
                not_after: years(7),
                spki: spki(&tcb_signing)?,
                extensions: vec![aki(&root_spki)?, leaf_usage()?],
                explicit_trailer: false,
            },
            Issuer::EcdsaP256(&root),
        )?;
        let root_crl = empty_crl("Intel SGX Root CA", &root, &root_spki)?;
        let pck_crl = empty_crl("Intel SGX PCK Platform CA", &platform, &platform_spki)?;
        let secret = |name: &str, key: &EcdsaKeyPair| -> Result<(), TdxSimError> {
            let doc = key.to_pkcs8v1().map_err(|_| TdxSimError::Crypto("key export"))?;
            Ok(state_dir::write_secret(&dir.join(name), doc.as_ref())?)
        };
        secret("pck.key", &pck)?;
        secret("attestation.key", &attestation)?;
        secret("tcb_signing.key", &tcb_signing)?;
        for (name, der) in [
            ("root.der", &root_der),
            ("platform_ca.der", &platform_der),
            ("pck.der", &pck_der),
            ("tcb_signing.der", &tcb_signing_der),
            ("pck_crl.der", &pck_crl),
            (COMPLETE_MARKER, &root_crl),
        ] {
            let path = dir.join(name);
            fs::write(&path, der).map_err(io_err("write", &path))?;
        }
        Ok(())
    }

    /// The simulated Intel root (DER), the anchor a verifier must be given explicitly.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    fn sign(key: &EcdsaKeyPair, msg: &[u8]) -> Result<Vec<u8>, TdxSimError> {
        Ok(key.sign(&SystemRandom::new(), msg).map_err(|_| TdxSimError::Crypto("ECDSA signing"))?.as_ref().to_vec())
    }

    /// Signed collateral (TCB info TDX v3 and QE identity TD_QE v2, valid from an hour ago
    /// for 30 days, plus the CRLs and issuer chains) in the JSON shape of dcap-qvl's
    /// `QuoteCollateralV3` (byte fields hex), which `tee::tdx::collateral_from_dcap_json` reads.
    pub fn collateral_json(&self, launch: &TdxLaunch) -> Result<String, TdxSimError> {
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| {
            t.replace_nanosecond(0)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .ok_or(TdxSimError::Crypto("date formatting"))
        };
        let issue = fmt(now - time::Duration::hours(1))?;
        let next = fmt(now + time::Duration::days(30))?;
        let comps = |svns: &[u8]| svns.iter().map(|s| serde_json::json!({ "svn": s })).collect::<Vec<_>>();
        let tcb_info = serde_json::json!({
            "id": "TDX",
            "version": 3,
            "issueDate": issue,
            "nextUpdate": next,
            "fmspc": hex::encode_upper(SIM_FMSPC),
            "pceId": hex::encode_upper(SIM_PCE_ID),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
            "tdxModule": {
                "mrsigner": hex::encode_upper(launch.mr_signer_seam),
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF"
            },
            "tdxModuleIdentities": [],
            "tcbLevels": [{
                "tcb": {
                    "sgxtcbcomponents": comps(&SIM_CPUSVN),
                    "pcesvn": launch.pce_svn,
                    "tdxtcbcomponents": comps(&launch.tee_tcb_svn)
                },
                "tcbDate": issue,
                "tcbStatus": "UpToDate"
            }]
        })
        .to_string();
        let qe_identity = serde_json::json!({
            "id": "TD_QE",
            "version": 2,
            "issueDate": issue,
            "nextUpdate": next,
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": hex::encode_upper(SIM_QE_MRSIGNER),
            "isvprodid": 2,
            "tcbLevels": [{ "tcb": { "isvsvn": launch.qe_svn }, "tcbDate": issue, "tcbStatus": "UpToDate" }]
        })
        .to_string();
        let pem = |der: &[u8]| x509_build::pem_cert(der);
        let tcb_chain = pem(&self.tcb_signing_der) + &pem(&self.root_der);
        Ok(serde_json::json!({
            "pck_crl_issuer_chain": pem(&self.platform_ca_der) + &pem(&self.root_der),
            "root_ca_crl": hex::encode(&self.root_crl_der),
            "pck_crl": hex::encode(&self.pck_crl_der),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info_signature": hex::encode(Self::sign(&self.tcb_signing_key, tcb_info.as_bytes())?),
            "tcb_info": tcb_info,
            "qe_identity_issuer_chain": tcb_chain,
            "qe_identity_signature": hex::encode(Self::sign(&self.tcb_signing_key, qe_identity.as_bytes())?),
            "qe_identity": qe_identity,
        })
        .to_string())
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
    q.extend_from_slice(&launch.qe_vendor_id);
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
    qe_report[128..160].copy_from_slice(&SIM_QE_MRSIGNER);
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
