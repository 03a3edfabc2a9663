//! The simulated AMD key hierarchy: ARK (RSA-4096, self-signed, RSASSA-PSS SHA-384) →
//! ASK (RSA-4096, signed by ARK) → VCEK (ECDSA P-384, signed by ASK, carrying AMD's
//! 1.3.6.1.4.1.3704.1.x extensions). Same shape, names and encodings as AMD's certificates;
//! only the keys differ. Persisted in a state directory so restarts keep the trust anchor.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, RsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use der::asn1::{Ia5StringRef, ObjectIdentifier, OctetString};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CrlDistributionPoints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;

use crate::state_dir::{self, io_err, StateIoError};
use crate::x509_build::{self, CertSpec, Issuer, X509BuildError};

/// Errors of the simulated AMD chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("state file {path} is not a valid {what}; remove the state directory to start a new simulated chain")]
    Corrupt { path: PathBuf, what: &'static str },
    #[error("generating the simulated {0} key failed")]
    KeyGen(&'static str),
    #[error("signing with the simulated VCEK failed")]
    Sign,
    #[error("building a simulated certificate failed: {0}")]
    X509(#[from] X509BuildError),
}

impl From<StateIoError> for ChainError {
    fn from(StateIoError { action, path, source }: StateIoError) -> Self {
        ChainError::Io { action, path, source }
    }
}

/// AMD EPYC generation the simulated chip claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    /// The name in AMD's ARK/ASK common names and KDS URLs.
    pub fn family_name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
    /// The VCEK productName extension value (what AMD KDS writes).
    pub fn vcek_product_name(self) -> &'static str {
        match self {
            Product::Milan => "Milan-B0",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
    /// CPUID family, model, stepping as v3+ reports carry them.
    pub fn cpuid(self) -> (u8, u8, u8) {
        match self {
            Product::Milan => (0x19, 0x01, 0x01),
            Product::Genoa => (0x19, 0x11, 0x01),
            Product::Turin => (0x1A, 0x02, 0x01),
        }
    }
    /// Bytes of the chip identifier AMD certifies (Turin: 8, the rest of CHIP_ID is zero).
    pub fn hwid_len(self) -> usize {
        match self {
            Product::Turin => 8,
            _ => 64,
        }
    }
}

impl std::str::FromStr for Product {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "milan" => Ok(Product::Milan),
            "genoa" => Ok(Product::Genoa),
            "turin" => Ok(Product::Turin),
            other => Err(format!("unknown AMD product {other:?} (expected milan, genoa or turin)")),
        }
    }
}

/// SEV-SNP TCB_VERSION. Milan/Genoa layout: byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode;
/// Turin: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 7 microcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcbVersion {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    /// Turin only.
    pub fmc: u8,
}

impl TcbVersion {
    pub fn to_u64(self, product: Product) -> u64 {
        let b = match product {
            Product::Turin => [self.fmc, self.bootloader, self.tee, self.snp, 0, 0, 0, self.microcode],
            _ => [self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode],
        };
        u64::from_le_bytes(b)
    }
}

impl Default for TcbVersion {
    /// A plausible current Genoa TCB (bl 10, tee 0, snp 25, ucode 84), as on AMD KDS certs.
    fn default() -> Self {
        TcbVersion { bootloader: 10, tee: 0, snp: 25, microcode: 84, fmc: 0 }
    }
}

impl std::str::FromStr for TcbVersion {
    type Err = String;
    /// `bl=10,tee=0,snp=25,ucode=84[,fmc=N]` (any subset; missing parts keep the default)
    /// or a raw 64-bit TCB_VERSION in hex in the Milan/Genoa layout (`0x5419000000000a0a`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !s.contains('=') {
            let hex = s.strip_prefix("0x").unwrap_or(s);
            let raw = u64::from_str_radix(hex, 16)
                .map_err(|e| format!("TCB {s:?} is neither bl=..,tee=..,snp=..,ucode=.. nor a hex u64: {e}"))?;
            let b = raw.to_le_bytes();
            if b[2..6].iter().any(|&x| x != 0) {
                return Err(format!("TCB {s:?}: bytes 2..6 are reserved and must be zero"));
            }
            return Ok(TcbVersion { bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7], fmc: 0 });
        }
        let mut tcb = TcbVersion::default();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("TCB part {part:?} is not key=value"))?;
            let v: u8 = v.trim().parse().map_err(|e| format!("TCB part {part:?}: value is not 0..255: {e}"))?;
            match k.trim() {
                "bl" | "bootloader" => tcb.bootloader = v,
                "tee" => tcb.tee = v,
                "snp" => tcb.snp = v,
                "ucode" | "microcode" => tcb.microcode = v,
                "fmc" => tcb.fmc = v,
                other => return Err(format!("TCB part {part:?}: unknown key {other:?} (bl, tee, snp, ucode, fmc)")),
            }
        }
        Ok(tcb)
    }
}

/// AMD's VCEK extension arc 1.3.6.1.4.1.3704.1.
mod oid {
    use der::asn1::ObjectIdentifier as O;
    pub const STRUCT_VERSION: O = O::new_unwrap("1.3.6.1.4.1.3704.1.1");
    pub const PRODUCT_NAME: O = O::new_unwrap("1.3.6.1.4.1.3704.1.2");
    pub const BL_SPL: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
    pub const TEE_SPL: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
    pub const SNP_SPL: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
    pub const FMC_SPL: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
    pub const SPL_4: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.4");
    pub const SPL_5: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.5");
    pub const SPL_6: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.6");
    pub const SPL_7: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.7");
    pub const UCODE_SPL: O = O::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
    pub const HW_ID: O = O::new_unwrap("1.3.6.1.4.1.3704.1.4");
}

const ARK_KEY: &str = "ark.key";
const ARK_CERT: &str = "ark.der";
const ASK_KEY: &str = "ask.key";
const ASK_CERT: &str = "ask.der";
const VCEK_KEY: &str = "vcek.key";
const CHIP_ID: &str = "chip_id";

/// One simulated SEV-SNP platform: the AMD root, the SEV signing key and one chip.
pub struct SimAmdChain {
    product: Product,
    ark_der: Vec<u8>,
    ask_key: RsaKeyPair,
    ask_der: Vec<u8>,
    vcek_key: EcdsaKeyPair,
    chip_id: [u8; 64],
}

impl std::fmt::Debug for SimAmdChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAmdChain")
            .field("product", &self.product)
            .field("chip_id", &hex::encode(self.chip_id))
            .finish_non_exhaustive()
    }
}

impl SimAmdChain {
    /// Loads the chain kept in `state_dir/amd-<product>/`, creating it on first use.
    pub fn load_or_create(state_dir: &Path, product: Product) -> Result<Self, ChainError> {
        let dir = state_dir.join(format!("amd-{}", product.family_name().to_ascii_lowercase()));
        if !dir.join(ARK_CERT).exists() {
            create(&dir, product)?;
        }
        load(&dir, product)
    }

    pub fn product(&self) -> Product {
        self.product
    }
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }
    /// The report's 64-byte CHIP_ID; its first `hwid_len()` bytes are the VCEK's hwID.
    pub fn chip_id(&self) -> &[u8; 64] {
        &self.chip_id
    }

    /// Issues this chip's VCEK certificate for a TCB, as AMD KDS would.
    pub fn issue_vcek(&self, tcb: TcbVersion) -> Result<Vec<u8>, ChainError> {
        let now = SystemTime::now();
        let spki = x509_build::spki_from_der(
            self.vcek_key.public_key().as_der().map_err(|_| ChainError::KeyGen("VCEK"))?.as_ref(),
        )?;
        let spec = CertSpec {
            serial: vec![0],
            issuer: x509_build::amd_name(&format!("SEV-{}", self.product.family_name()))?,
            subject: x509_build::amd_name("SEV-VCEK")?,
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(7 * 365 * 24 * 3600),
            spki,
            extensions: vcek_extensions(self.product, tcb, &self.chip_id)?,
            explicit_trailer: false,
        };
        Ok(x509_build::sign_cert(spec, Issuer::RsaPss(&self.ask_key))?)
    }

    /// ECDSA P-384 / SHA-384 signature over `msg`, as (r, s) big-endian 48-byte scalars.
    pub fn vcek_sign(&self, msg: &[u8]) -> Result<([u8; 48], [u8; 48]), ChainError> {
        let sig = self.vcek_key.sign(&SystemRandom::new(), msg).map_err(|_| ChainError::Sign)?;
        let bytes = sig.as_ref();
        if bytes.len() != 96 {
            return Err(ChainError::Sign);
        }
        let mut r = [0u8; 48];
        let mut s = [0u8; 48];
        r.copy_from_slice(&bytes[..48]);
        s.copy_from_slice(&bytes[48..]);
        Ok((r, s))
    }

    /// Writes the trust anchor: `ark.pem`, `ask.pem` and `cert_chain.pem` (ASK then ARK,
    /// the order of AMD KDS's cert_chain endpoint).
    pub fn export_anchor(&self, out_dir: &Path) -> Result<Vec<PathBuf>, ChainError> {
        fs::create_dir_all(out_dir).map_err(io_err("create directory", out_dir))?;
        let ark = x509_build::pem_cert(&self.ark_der);
        let ask = x509_build::pem_cert(&self.ask_der);
        let files = [("ark.pem", ark.clone()), ("ask.pem", ask.clone()), ("cert_chain.pem", ask + &ark)];
        let mut written = Vec::new();
        for (name, content) in files {
            let path = out_dir.join(name);
            fs::write(&path, content).map_err(io_err("write", &path))?;
            written.push(path);
        }
        Ok(written)
    }
}

fn vcek_extensions(product: Product, tcb: TcbVersion, chip_id: &[u8; 64]) -> Result<Vec<Extension>, ChainError> {
    let int = |v: u8| x509_build::to_der("SPL integer", &v);
    let name = Ia5StringRef::new(product.vcek_product_name())
        .map_err(|source| X509BuildError::Der { what: "product name", source })?;
    let hwid = chip_id[..product.hwid_len()].to_vec();
    // Same order as AMD KDS certificates. Milan/Genoa: 1, 2, 3.1, 3.2, 3.4-3.7, 3.3, 3.8, 4;
    // Turin: 1 (structVersion 1), 2, 3.9 (FMC), 3.1, 3.2, 3.3, 3.5-3.7, 3.8, 4 (8-byte hwID).
    // hwID is the raw bytes inside the extension's OCTET STRING, not a nested type.
    let exts: Vec<(ObjectIdentifier, Vec<u8>)> = match product {
        Product::Turin => vec![
            (oid::STRUCT_VERSION, int(1)?),
            (oid::PRODUCT_NAME, x509_build::to_der("product name", &name)?),
            (oid::FMC_SPL, int(tcb.fmc)?),
            (oid::BL_SPL, int(tcb.bootloader)?),
            (oid::TEE_SPL, int(tcb.tee)?),
            (oid::SNP_SPL, int(tcb.snp)?),
            (oid::SPL_5, int(0)?),
            (oid::SPL_6, int(0)?),
            (oid::SPL_7, int(0)?),
            (oid::UCODE_SPL, int(tcb.microcode)?),
            (oid::HW_ID, hwid),
        ],
        _ => vec![
            (oid::STRUCT_VERSION, int(0)?),
            (oid::PRODUCT_NAME, x509_build::to_der("product name", &name)?),
            (oid::BL_SPL, int(tcb.bootloader)?),
            (oid::TEE_SPL, int(tcb.tee)?),
            (oid::SPL_4, int(0)?),
            (oid::SPL_5, int(0)?),
            (oid::SPL_6, int(0)?),
            (oid::SPL_7, int(0)?),
            (oid::SNP_SPL, int(tcb.snp)?),
            (oid::UCODE_SPL, int(tcb.microcode)?),
            (oid::HW_ID, hwid),
        ],
    };
    exts.into_iter().map(|(o, v)| x509_build::extension(o, false, v).map_err(ChainError::from)).collect()
}

/// The CRL distribution points extension AMD puts into ARK and ASK certificates.
fn crl_distribution(product: Product) -> Result<Extension, ChainError> {
    // Same URL shape as AMD's, under a reserved (.invalid) host: nothing will ever fetch it.
    let url = format!("https://kdsintf.tsm-sim.invalid/vcek/v1/{}/crl", product.family_name());
    let uri = Ia5StringRef::new(&url).map_err(|source| X509BuildError::Der { what: "CRL URI", source })?;
    let dp = CrlDistributionPoints(vec![DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![GeneralName::UniformResourceIdentifier(
            uri.into(),
        )])),
        reasons: None,
        crl_issuer: None,
    }]);
    ext_der("CRL distribution points", false, &dp)
}

fn ext_der<T: der::Encode + der::oid::AssociatedOid>(
    what: &'static str,
    critical: bool,
    v: &T,
) -> Result<Extension, ChainError> {
    Ok(x509_build::extension(T::OID, critical, x509_build::to_der(what, v)?)?)
}

fn rsa_spki(key: &RsaKeyPair) -> Result<x509_cert::spki::SubjectPublicKeyInfoOwned, ChainError> {
    let der = key.public_key().as_der().map_err(|_| ChainError::KeyGen("RSA"))?;
    Ok(x509_build::spki_from_der(der.as_ref())?)
}

fn create(dir: &Path, product: Product) -> Result<(), ChainError> {
    // Built in a sibling temp directory and renamed, so a crash never leaves half a chain.
    state_dir::create_atomically(dir, ARK_CERT, |tmp| write_new(tmp, product))
}

/// Generates the keys and certificates into the empty directory `tmp`.
fn write_new(tmp: &Path, product: Product) -> Result<(), ChainError> {
    let ark_key = RsaKeyPair::generate(KeySize::Rsa4096).map_err(|_| ChainError::KeyGen("ARK"))?;
    let ask_key = RsaKeyPair::generate(KeySize::Rsa4096).map_err(|_| ChainError::KeyGen("ASK"))?;
    let vcek_key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).map_err(|_| ChainError::KeyGen("VCEK"))?;
    let mut chip_id = [0u8; 64];
    SystemRandom::new().fill(&mut chip_id[..product.hwid_len()]).map_err(|_| ChainError::KeyGen("chip id"))?;

    let now = SystemTime::now();
    // Back-dated a day to tolerate clock skew between the simulator and a verifier;
    // 20 years keeps UTCTime, like AMD's.
    let not_before = now - Duration::from_secs(24 * 3600);
    let not_after = now + Duration::from_secs(20 * 365 * 24 * 3600);
    let family = product.family_name();

    let ark_spki = rsa_spki(&ark_key)?;
    let ark_kid = x509_build::key_identifier(&ark_spki);
    let kid = |k: &[u8]| {
        OctetString::new(k.to_vec()).map_err(|source| X509BuildError::Der { what: "key identifier", source })
    };
    let ark_der = x509_build::sign_cert(
        CertSpec {
            serial: vec![0x02, 0x00, 0x00],
            issuer: x509_build::amd_name(&format!("ARK-{family}"))?,
            subject: x509_build::amd_name(&format!("ARK-{family}"))?,
            not_before,
            not_after,
            spki: ark_spki,
            extensions: vec![
                ext_der("key usage", true, &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign))?,
                ext_der("subject key identifier", false, &SubjectKeyIdentifier(kid(&ark_kid)?))?,
                ext_der("basic constraints", true, &BasicConstraints { ca: true, path_len_constraint: None })?,
                crl_distribution(product)?,
            ],
            explicit_trailer: true,
        },
        Issuer::RsaPss(&ark_key),
    )?;

    let ask_spki = rsa_spki(&ask_key)?;
    let ask_kid = x509_build::key_identifier(&ask_spki);
    let ask_der = x509_build::sign_cert(
        CertSpec {
            serial: vec![0x02, 0x00, 0x02],
            issuer: x509_build::amd_name(&format!("ARK-{family}"))?,
            subject: x509_build::amd_name(&format!("SEV-{family}"))?,
            not_before,
            not_after,
            spki: ask_spki,
            extensions: vec![
                ext_der("subject key identifier", false, &SubjectKeyIdentifier(kid(&ask_kid)?))?,
                ext_der(
                    "authority key identifier",
                    false,
                    &AuthorityKeyIdentifier { key_identifier: Some(kid(&ark_kid)?), ..Default::default() },
                )?,
                ext_der("basic constraints", true, &BasicConstraints { ca: true, path_len_constraint: Some(0) })?,
                ext_der("key usage", true, &KeyUsage(KeyUsages::KeyCertSign.into()))?,
                crl_distribution(product)?,
            ],
            explicit_trailer: true,
        },
        Issuer::RsaPss(&ark_key),
    )?;

    let ark_pkcs8 = ark_key.as_der().map_err(|_| ChainError::KeyGen("ARK"))?;
    let ask_pkcs8 = ask_key.as_der().map_err(|_| ChainError::KeyGen("ASK"))?;
    let vcek_pkcs8 = vcek_key.to_pkcs8v1().map_err(|_| ChainError::KeyGen("VCEK"))?;
    state_dir::write_secret(&tmp.join(ARK_KEY), ark_pkcs8.as_ref())?;
    state_dir::write_secret(&tmp.join(ASK_KEY), ask_pkcs8.as_ref())?;
    state_dir::write_secret(&tmp.join(VCEK_KEY), vcek_pkcs8.as_ref())?;
    for (name, bytes) in [(ARK_CERT, &ark_der[..]), (ASK_CERT, &ask_der[..]), (CHIP_ID, &chip_id[..])] {
        let path = tmp.join(name);
        fs::write(&path, bytes).map_err(io_err("write", &path))?;
    }
    Ok(())
}

fn load(dir: &Path, product: Product) -> Result<SimAmdChain, ChainError> {
    let read = |name: &str| -> Result<(PathBuf, Vec<u8>), ChainError> {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        Ok((path, bytes))
    };
    let corrupt = |path: &Path, what: &'static str| ChainError::Corrupt { path: path.to_path_buf(), what };

    let (ark_path, ark_der) = read(ARK_CERT)?;
    let (ask_path, ask_der) = read(ASK_CERT)?;
    let (p, b) = read(ARK_KEY)?;
    let ark_key = RsaKeyPair::from_pkcs8(&b).map_err(|_| corrupt(&p, "PKCS#8 RSA key"))?;
    let (p, b) = read(ASK_KEY)?;
    let ask_key = RsaKeyPair::from_pkcs8(&b).map_err(|_| corrupt(&p, "PKCS#8 RSA key"))?;
    let (p, b) = read(VCEK_KEY)?;
    let vcek_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &b).map_err(|_| corrupt(&p, "PKCS#8 P-384 key"))?;
    let (p, b) = read(CHIP_ID)?;
    let chip_id: [u8; 64] = b.try_into().map_err(|_| corrupt(&p, "64-byte chip id"))?;

    // The certificates must carry the keys next to them, or the anchor we export would not
    // verify what we sign.
    for (path, cert, key) in [(&ark_path, &ark_der, &ark_key), (&ask_path, &ask_der, &ask_key)] {
        let parsed =
            <x509_cert::Certificate as der::Decode>::from_der(cert).map_err(|_| corrupt(path, "DER certificate"))?;
        if parsed.tbs_certificate.subject_public_key_info != rsa_spki(key)? {
            return Err(corrupt(path, "certificate for the key stored beside it"));
        }
    }
    let _ = ark_key; // only needed to check the pairing; the ASK is the online signer
    Ok(SimAmdChain { product, ark_der, ask_key, ask_der, vcek_key, chip_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcb_parses_keys_and_hex() {
        let t: TcbVersion = "bl=3,tee=0,snp=8,ucode=115".parse().unwrap();
        assert_eq!(t, TcbVersion { bootloader: 3, tee: 0, snp: 8, microcode: 115, fmc: 0 });
        assert_eq!(t.to_u64(Product::Milan), 0x7308_0000_0000_0003);
        let turin: TcbVersion = "fmc=1,bl=2,tee=3,snp=4,ucode=5".parse().unwrap();
        assert_eq!(turin.to_u64(Product::Turin), 0x0500_0000_0403_0201);
        let h: TcbVersion = "0x7308000000000003".parse().unwrap();
        assert_eq!(h, t);
    }

    #[test]
    fn tcb_rejects_bad_input() {
        for bad in ["bl=300", "foo=1", "bl", "0x0000ff0000000000", "zz", "bl=1,,tee=2"] {
            assert!(bad.parse::<TcbVersion>().is_err(), "{bad} should be rejected");
        }
    }
}
