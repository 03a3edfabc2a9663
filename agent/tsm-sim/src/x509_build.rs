//! Certificate assembly for the simulated AMD chain: AMD-shaped names, RSASSA-PSS
//! (SHA-384, MGF1-SHA-384, salt 48) signing with aws-lc-rs, DER via `x509-cert`.
//! Nothing here shells out; every byte of the certificates is built in-process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PSS_SHA384};
use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

/// Errors while assembling or signing a certificate.
#[derive(Debug, thiserror::Error)]
pub enum X509BuildError {
    #[error("DER encoding of {what} failed: {source}")]
    Der { what: &'static str, source: der::Error },
    #[error("RSA-PSS signing of {what} failed (aws-lc-rs rejected the key or message)")]
    Sign { what: &'static str },
    #[error("validity time {0:?} is not representable in X.509")]
    Time(SystemTime),
}

fn der_err(what: &'static str) -> impl FnOnce(der::Error) -> X509BuildError {
    move |source| X509BuildError::Der { what, source }
}

pub const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_C: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");
const OID_L: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.7");
const OID_ST: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.8");
const OID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// RSASSA-PSS-params { sha384, mgf1(sha384), saltLength 48, trailerField 1 } exactly as
/// AMD's ARK and ASK certificates spell them (trailer field present although DEFAULT).
const PSS_SHA384_PARAMS_WITH_TRAILER: [u8; 59] = [
    0x30, 0x39, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09,
    0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x30, 0xa3, 0x03, 0x02,
    0x01, 0x01,
];
/// The same parameters without the trailer field, as in AMD KDS VCEKs issued since 2024.
const PSS_SHA384_PARAMS: [u8; 54] = [
    0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09,
    0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x30,
];

/// The AlgorithmIdentifier for RSASSA-PSS with SHA-384.
pub fn pss_sha384_alg(explicit_trailer: bool) -> Result<AlgorithmIdentifierOwned, X509BuildError> {
    let params: &[u8] = if explicit_trailer { &PSS_SHA384_PARAMS_WITH_TRAILER } else { &PSS_SHA384_PARAMS };
    Ok(AlgorithmIdentifierOwned {
        oid: OID_RSASSA_PSS,
        parameters: Some(Any::from_der(params).map_err(der_err("RSA-PSS parameters"))?),
    })
}

/// `OU=Engineering, C=US, L=Santa Clara, ST=CA, O=Advanced Micro Devices, CN=<cn>`, with
/// AMD's string types (UTF8String everywhere except PrintableString for C).
pub fn amd_name(cn: &str) -> Result<Name, X509BuildError> {
    name(&[
        ("OU", "Engineering"),
        ("C", "US"),
        ("L", "Santa Clara"),
        ("ST", "CA"),
        ("O", "Advanced Micro Devices"),
        ("CN", cn),
    ])
}

/// Whole-second X.509 time: UTCTime before 2050 (as RFC 5280 and AMD use), else
/// GeneralizedTime.
pub fn x509_time(t: SystemTime) -> Result<Time, X509BuildError> {
    let secs = t.duration_since(UNIX_EPOCH).map_err(|_| X509BuildError::Time(t))?.as_secs();
    let d = Duration::from_secs(secs);
    match der::asn1::UtcTime::from_unix_duration(d) {
        Ok(utc) => Ok(Time::UtcTime(utc)),
        Err(_) => der::asn1::GeneralizedTime::from_unix_duration(d)
            .map(Time::GeneralTime)
            .map_err(|_| X509BuildError::Time(t)),
    }
}

/// Wraps an extension value (already DER) into an `Extension`.
pub fn extension(oid: ObjectIdentifier, critical: bool, der_value: Vec<u8>) -> Result<Extension, X509BuildError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(der_value).map_err(der_err("extension value"))?,
    })
}

/// DER-encodes any value (extension payloads).
pub fn to_der<T: Encode>(what: &'static str, v: &T) -> Result<Vec<u8>, X509BuildError> {
    v.to_der().map_err(der_err(what))
}

/// Parses the X.509 SubjectPublicKeyInfo that aws-lc-rs exports.
pub fn spki_from_der(der: &[u8]) -> Result<SubjectPublicKeyInfoOwned, X509BuildError> {
    SubjectPublicKeyInfoOwned::from_der(der).map_err(der_err("subject public key info"))
}

/// SHA-1 over the subjectPublicKey bits, the RFC 5280 method (1) key identifier AMD uses.
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, spki.subject_public_key.raw_bytes());
    digest.as_ref().to_vec()
}

/// What goes into one certificate (everything but the signature).
pub struct CertSpec {
    pub serial: Vec<u8>,
    pub issuer: Name,
    pub subject: Name,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub spki: SubjectPublicKeyInfoOwned,
    pub extensions: Vec<Extension>,
    /// Whether the PSS parameters spell out the DEFAULT trailer field (ARK/ASK do, VCEK does not).
    pub explicit_trailer: bool,
}

/// The key that signs a certificate.
pub enum Issuer<'a> {
    /// RSASSA-PSS SHA-384 (AMD ARK/ASK).
    RsaPss(&'a RsaKeyPair),
    /// ecdsa-with-SHA256 (Intel's SGX/TDX PKI); the key must be a P-256 ASN.1 signer.
    EcdsaP256(&'a aws_lc_rs::signature::EcdsaKeyPair),
}

const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Builds the TBS certificate and signs it; returns the DER.
pub fn sign_cert(spec: CertSpec, issuer_key: Issuer<'_>) -> Result<Vec<u8>, X509BuildError> {
    let alg = match issuer_key {
        Issuer::RsaPss(_) => pss_sha384_alg(spec.explicit_trailer)?,
        Issuer::EcdsaP256(_) => AlgorithmIdentifierOwned { oid: OID_ECDSA_SHA256, parameters: None },
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&spec.serial).map_err(der_err("serial number"))?,
        signature: alg.clone(),
        issuer: spec.issuer,
        validity: Validity { not_before: x509_time(spec.not_before)?, not_after: x509_time(spec.not_after)? },
        subject: spec.subject,
        subject_public_key_info: spec.spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(spec.extensions),
    };
    let tbs_der = tbs.to_der().map_err(der_err("TBS certificate"))?;
    let sig = match issuer_key {
        Issuer::RsaPss(key) => {
            let mut sig = vec![0u8; key.public_modulus_len()];
            key.sign(&RSA_PSS_SHA384, &SystemRandom::new(), &tbs_der, &mut sig)
                .map_err(|_| X509BuildError::Sign { what: "certificate" })?;
            sig
        }
        Issuer::EcdsaP256(key) => key
            .sign(&SystemRandom::new(), &tbs_der)
            .map_err(|_| X509BuildError::Sign { what: "certificate" })?
            .as_ref()
            .to_vec(),
    };
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(der_err("signature"))?,
    };
    cert.to_der().map_err(der_err("certificate"))
}

/// A name from (OID, value) pairs in order; `C` is a PrintableString, the rest UTF8String.
pub fn name(attrs: &[(&str, &str)]) -> Result<Name, X509BuildError> {
    let mut rdns = Vec::with_capacity(attrs.len());
    for (key, value) in attrs {
        let (oid, printable) = match *key {
            "OU" => (OID_OU, false),
            "C" => (OID_C, true),
            "L" => (OID_L, false),
            "ST" => (OID_ST, false),
            "O" => (OID_O, false),
            _ => (OID_CN, false),
        };
        let value = if printable {
            Any::encode_from(&PrintableStringRef::new(value).map_err(der_err("name attribute"))?)
        } else {
            Any::encode_from(&Utf8StringRef::new(value).map_err(der_err("name attribute"))?)
        }
        .map_err(der_err("name attribute"))?;
        let set = SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }])
            .map_err(der_err("relative distinguished name"))?;
        rdns.push(RelativeDistinguishedName(set));
    }
    Ok(RdnSequence(rdns))
}

/// PEM armour for a DER certificate (64-column base64, like openssl).
pub fn pem_cert(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
