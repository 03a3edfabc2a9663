//! Attested claims carried in mesh certificates as X.509 extensions (see the crate docs for the OIDs).

use crate::{der, oid};
use rcgen::CustomExtension;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    #[error("certificate is not valid DER X.509: {0}")]
    Certificate(String),
    #[error("attestation extension {oid} is malformed: {why}")]
    Malformed { oid: String, why: &'static str },
    #[error("attestation extension {0} is missing")]
    Missing(String),
    #[error("attestation extension {0} appears twice")]
    Duplicate(String),
    #[error("unknown platform {0:?} in attestation extension (expected snp or tdx)")]
    UnknownPlatform(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Snp,
    Tdx,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Snp => "snp",
            Platform::Tdx => "tdx",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the coordinator verified about a workload, in platform-neutral form.
/// Field meanings per platform are in the crate docs' table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationClaims {
    pub platform: Platform,
    #[serde(with = "hex_bytes")]
    pub measurement: Vec<u8>,
    /// TDX RTMR0..3; empty for SNP.
    #[serde(default, with = "hex_vec")]
    pub runtime_measurements: Vec<Vec<u8>>,
    #[serde(with = "hex_bytes")]
    pub host_data: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub report_data: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub tcb: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub policy: Vec<u8>,
    pub simulated: bool,
    /// Name of the manifest policy entry the host data matched.
    pub workload: String,
    /// The initdata digest as launched (HOSTDATA / MRCONFIGID); `None` in certificates issued
    /// before the claim existed.
    #[serde(default, with = "hex_opt")]
    pub initdata_digest: Option<Vec<u8>>,
}

impl AttestationClaims {
    /// The claims as non-critical extensions, in OID order.
    pub fn to_extensions(&self) -> Vec<CustomExtension> {
        let mut out = vec![
            ext(oid::PLATFORM, der::tlv(der::UTF8_STRING, self.platform.as_str().as_bytes())),
            ext(oid::MEASUREMENT, der::tlv(der::OCTET_STRING, &self.measurement)),
        ];
        if !self.runtime_measurements.is_empty() {
            let items: Vec<u8> =
                self.runtime_measurements.iter().flat_map(|m| der::tlv(der::OCTET_STRING, m)).collect();
            out.push(ext(oid::RUNTIME_MEASUREMENTS, der::tlv(der::SEQUENCE, &items)));
        }
        out.extend([
            ext(oid::HOST_DATA, der::tlv(der::OCTET_STRING, &self.host_data)),
            ext(oid::REPORT_DATA, der::tlv(der::OCTET_STRING, &self.report_data)),
            ext(oid::TCB, der::tlv(der::OCTET_STRING, &self.tcb)),
            ext(oid::POLICY, der::tlv(der::OCTET_STRING, &self.policy)),
            ext(oid::SIMULATED, der::tlv(der::BOOLEAN, &[if self.simulated { 0xff } else { 0 }])),
            ext(oid::WORKLOAD, der::tlv(der::UTF8_STRING, self.workload.as_bytes())),
        ]);
        if let Some(digest) = &self.initdata_digest {
            out.push(ext(oid::INITDATA_DIGEST, der::tlv(der::OCTET_STRING, digest)));
        }
        out
    }

    /// Reads the claims back from a DER certificate (e.g. a peer's mesh certificate).
    pub fn from_certificate(cert_der: &[u8]) -> Result<Self, ClaimsError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(cert_der).map_err(|e| ClaimsError::Certificate(e.to_string()))?;
        let mut found: [Option<&[u8]>; 11] = [None; 11];
        for extension in cert.extensions() {
            let Some(components) = extension.oid.iter() else { continue };
            let components: Vec<u64> = components.collect();
            let Some((last, arc)) = components.split_last() else { continue };
            if arc != oid::CLAIMS_ARC || *last == 0 || *last as usize >= found.len() {
                continue;
            }
            let slot = &mut found[*last as usize];
            if slot.is_some() {
                return Err(ClaimsError::Duplicate(oid::dotted(&components)));
            }
            *slot = Some(extension.value);
        }
        let get = |suffix: u64| -> Result<&[u8], ClaimsError> {
            found[suffix as usize].ok_or_else(|| ClaimsError::Missing(oid::dotted(&oid::claim(suffix))))
        };
        let octets = |suffix: u64| -> Result<Vec<u8>, ClaimsError> {
            der::expect(get(suffix)?, der::OCTET_STRING).map(<[u8]>::to_vec).map_err(|why| malformed(suffix, why))
        };
        let utf8 = |suffix: u64| -> Result<String, ClaimsError> {
            let raw = der::expect(get(suffix)?, der::UTF8_STRING).map_err(|why| malformed(suffix, why))?;
            String::from_utf8(raw.to_vec()).map_err(|_| malformed(suffix, "not UTF-8"))
        };
        let platform = match utf8(oid::PLATFORM)?.as_str() {
            "snp" => Platform::Snp,
            "tdx" => Platform::Tdx,
            other => return Err(ClaimsError::UnknownPlatform(other.to_owned())),
        };
        let mut runtime_measurements = Vec::new();
        if let Some(raw) = found[oid::RUNTIME_MEASUREMENTS as usize] {
            let suffix = oid::RUNTIME_MEASUREMENTS;
            let mut items = der::expect(raw, der::SEQUENCE).map_err(|why| malformed(suffix, why))?;
            while !items.is_empty() {
                let (tag, value, rest) = der::next_tlv(items).map_err(|why| malformed(suffix, why))?;
                if tag != der::OCTET_STRING {
                    return Err(malformed(suffix, "item is not an OCTET STRING"));
                }
                runtime_measurements.push(value.to_vec());
                items = rest;
            }
        }
        let simulated = match der::expect(get(oid::SIMULATED)?, der::BOOLEAN) {
            Ok([0x00]) => false,
            Ok([0xff]) => true,
            Ok(_) => return Err(malformed(oid::SIMULATED, "BOOLEAN is not 0x00 or 0xff")),
            Err(why) => return Err(malformed(oid::SIMULATED, why)),
        };
        Ok(Self {
            platform,
            measurement: octets(oid::MEASUREMENT)?,
            runtime_measurements,
            host_data: octets(oid::HOST_DATA)?,
            report_data: octets(oid::REPORT_DATA)?,
            tcb: octets(oid::TCB)?,
            policy: octets(oid::POLICY)?,
            simulated,
            workload: utf8(oid::WORKLOAD)?,
            initdata_digest: found[oid::INITDATA_DIGEST as usize].map(|_| octets(oid::INITDATA_DIGEST)).transpose()?,
        })
    }
}

fn ext(suffix: u64, content: Vec<u8>) -> CustomExtension {
    CustomExtension::from_oid_content(&oid::claim(suffix), content)
}

fn malformed(suffix: u64, why: &'static str) -> ClaimsError {
    ClaimsError::Malformed { oid: oid::dotted(&oid::claim(suffix)), why }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text).map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|t| hex::decode(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(items.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts.iter().map(|t| hex::decode(t).map_err(serde::de::Error::custom)).collect()
    }
}
