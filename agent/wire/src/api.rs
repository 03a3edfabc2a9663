//! The coordinator's HTTP API: paths, JSON bodies and rejection reasons.
//!
//! All bodies are JSON; binary fields are standard base64 (with padding) and
//! are decoded into `Vec<u8>` by these types. Every rejection is a 4xx with
//! an [`ErrorBody`] whose `reason` is one of [`Reason`] (snake_case).
//!
//! | method | path | request | response |
//! |---|---|---|---|
//! | POST | [`NONCE_PATH`] | none | [`NonceResponse`] |
//! | POST | [`CERTIFICATE_PATH`] | [`CertificateRequest`] | [`CertificateResponse`] |
//! | GET  | [`CA_PATH`] | none | [`CaResponse`] |
//! | GET  | [`MANIFEST_PATH`] | none | [`ManifestResponse`] |
//! | PUT  | [`MANIFEST_PATH`] | manifest JSON + `Authorization: Bearer <owner token>` | [`ManifestResponse`] |
//! | GET  | [`GENERATION_PATH`]`?after=N` | none | [`GenerationResponse`] (long poll, see there) |

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

pub const NONCE_PATH: &str = "/v1/nonce";
pub const CERTIFICATE_PATH: &str = "/v1/certificate";
pub const CA_PATH: &str = "/v1/ca";
pub const MANIFEST_PATH: &str = "/v1/manifest";
pub const GENERATION_PATH: &str = "/v1/generation";

/// How long `GET /v1/generation?after=N` holds a request while the generation is still `N`.
pub const GENERATION_HOLD: std::time::Duration = std::time::Duration::from_secs(50);

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 32;

/// The report data a workload must put into its TEE report:
/// SHA-512(SPKI DER of its public key ‖ 32-byte nonce).
pub fn report_data(spki_der: &[u8], nonce: &[u8]) -> [u8; 64] {
    let mut hasher = Sha512::new();
    hasher.update(spki_der);
    hasher.update(nonce);
    hasher.finalize().into()
}

/// `POST /v1/nonce`: a fresh single-use nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceResponse {
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// Seconds the nonce stays valid from now.
    pub expires_in_secs: u64,
}

/// Evidence as read from configfs-tsm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "snake_case", deny_unknown_fields)]
pub enum Evidence {
    Snp {
        /// The 1184-byte attestation report (outblob).
        #[serde(with = "b64")]
        report: Vec<u8>,
        /// GHCB certificate table (auxblob) with VCEK/VLEK, ASK, ARK; optional when the
        /// coordinator has a VCEK cache for this chip.
        #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
        cert_table: Option<Vec<u8>>,
    },
    Tdx {
        /// The quote (outblob); collateral comes from the coordinator's configuration.
        #[serde(with = "b64")]
        quote: Vec<u8>,
    },
}

/// `POST /v1/certificate`. Exactly one of `public_key` / `csr` must be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// The nonce from `POST /v1/nonce`.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    pub evidence: Evidence,
    /// SubjectPublicKeyInfo DER of the workload key.
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub public_key: Option<Vec<u8>>,
    /// Alternatively a PKCS#10 CSR (DER), signed by the workload key; only its key is used.
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub csr: Option<Vec<u8>>,
}

/// Successful issue: what the workload writes as `mesh-ca.pem`, `certChain.pem`, `coordinator-root-ca.pem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateResponse {
    pub mesh_ca_pem: String,
    /// Leaf then intermediate CA.
    pub cert_chain_pem: String,
    pub root_ca_pem: String,
    /// Manifest policy entry that matched.
    pub workload: String,
    /// Leaf validity end, seconds since the Unix epoch.
    pub not_after: u64,
    /// The manifest generation whose mesh CA issued the certificate (0 from coordinators that
    /// predate the field).
    #[serde(default)]
    pub manifest_generation: u64,
}

/// `GET /v1/generation?after=N`: the current manifest generation. Answered at once when it is
/// not `N` (or `after` is absent), else held until it changes or [`GENERATION_HOLD`] passes
/// (then answered with `N` again: the client simply asks again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationResponse {
    pub generation: u64,
    /// Hex SHA-256 of the manifest's canonical JSON.
    pub manifest_sha256: String,
}

/// `GET /v1/ca`: what a data owner checks workloads against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaResponse {
    pub root_ca_pem: String,
    pub mesh_ca_pem: String,
    pub intermediate_ca_pem: String,
    pub manifest_generation: u64,
    /// Hex SHA-256 of the current manifest's canonical JSON.
    pub manifest_sha256: String,
}

/// `GET`/`PUT /v1/manifest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestResponse {
    pub generation: u64,
    pub manifest_sha256: String,
    pub manifest: serde_json::Value,
    pub mesh_ca_pem: String,
}

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub reason: Reason,
    pub detail: String,
}

/// Machine-readable rejection reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// 400: body is not the expected JSON (syntax, field, base64, both/neither key fields).
    MalformedRequest,
    /// 413: body larger than the limit.
    BodyTooLarge,
    /// 400: the nonce was never issued (or is from before a restart).
    NonceUnknown,
    /// 400: the nonce's lifetime passed before it was used.
    NonceExpired,
    /// 400: the nonce was already used.
    NonceReplayed,
    /// 429: too many outstanding nonces.
    TooManyNonces,
    /// 400: the public key / CSR is unusable.
    InvalidPublicKey,
    /// 403: the report/quote does not parse or its signature/chain/collateral does not verify.
    EvidenceInvalid,
    /// 403: evidence signed by the simulated (tsm-sim) anchor, but the manifest does not opt in.
    SimulatedNotAllowed,
    /// 403: report data is not SHA-512(public key SPKI ‖ nonce).
    ReportDataMismatch,
    /// 403: the manifest has no reference values for this platform.
    PlatformNotAllowed,
    /// 403: measurement / MRTD (or TDX MRSEAM) not in the manifest.
    MeasurementMismatch,
    /// 403: TDX RTMR differs from the manifest.
    RtmrMismatch,
    /// 403: SNP reported or launch TCB below the minimum, TDX TEE_TCB_SVN below the minimum, or TDX TCB status not accepted.
    TcbTooLow,
    /// 403: SNP guest policy / TDX attributes or XFAM differ, debug enabled, or an SNP migration agent allowed.
    PolicyMismatch,
    /// 403: SNP VMPL not allowed.
    VmplNotAllowed,
    /// 403: SNP product (Milan/Genoa/Turin) or CHIP_ID not allowed.
    ProductNotAllowed,
    /// 403: HOST_DATA / MRCONFIGID has no policy entry in the manifest.
    UnknownHostData,
    /// 401: missing or wrong owner token.
    Unauthorized,
    /// 403: no owner token configured, so the manifest cannot be changed over the API.
    ManifestUpdateDisabled,
    /// 400: the new manifest does not validate.
    ManifestInvalid,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 408: the request took longer than the server's timeout.
    Timeout,
    /// 500: the coordinator failed internally (state write, signing); nothing was issued.
    Internal,
    /// 503: the coordinator is saturated (verification pool full); retry after `Retry-After`.
    Busy,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedRequest => "malformed_request",
            Reason::BodyTooLarge => "body_too_large",
            Reason::NonceUnknown => "nonce_unknown",
            Reason::NonceExpired => "nonce_expired",
            Reason::NonceReplayed => "nonce_replayed",
            Reason::TooManyNonces => "too_many_nonces",
            Reason::InvalidPublicKey => "invalid_public_key",
            Reason::EvidenceInvalid => "evidence_invalid",
            Reason::SimulatedNotAllowed => "simulated_not_allowed",
            Reason::ReportDataMismatch => "report_data_mismatch",
            Reason::PlatformNotAllowed => "platform_not_allowed",
            Reason::MeasurementMismatch => "measurement_mismatch",
            Reason::RtmrMismatch => "rtmr_mismatch",
            Reason::TcbTooLow => "tcb_too_low",
            Reason::PolicyMismatch => "policy_mismatch",
            Reason::VmplNotAllowed => "vmpl_not_allowed",
            Reason::ProductNotAllowed => "product_not_allowed",
            Reason::UnknownHostData => "unknown_host_data",
            Reason::Unauthorized => "unauthorized",
            Reason::ManifestUpdateDisabled => "manifest_update_disabled",
            Reason::ManifestInvalid => "manifest_invalid",
            Reason::NotFound => "not_found",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::Timeout => "timeout",
            Reason::Internal => "internal",
            Reason::Busy => "busy",
        }
    }

    /// The HTTP status this reason is sent with.
    pub fn status(self) -> u16 {
        match self {
            Reason::MalformedRequest
            | Reason::NonceUnknown
            | Reason::NonceExpired
            | Reason::NonceReplayed
            | Reason::InvalidPublicKey
            | Reason::ManifestInvalid => 400,
            Reason::Unauthorized => 401,
            Reason::EvidenceInvalid
            | Reason::SimulatedNotAllowed
            | Reason::ReportDataMismatch
            | Reason::PlatformNotAllowed
            | Reason::MeasurementMismatch
            | Reason::RtmrMismatch
            | Reason::TcbTooLow
            | Reason::PolicyMismatch
            | Reason::VmplNotAllowed
            | Reason::ProductNotAllowed
            | Reason::UnknownHostData
            | Reason::ManifestUpdateDisabled => 403,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::Timeout => 408,
            Reason::BodyTooLarge => 413,
            Reason::TooManyNonces => 429,
            Reason::Internal => 500,
            Reason::Busy => 503,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// serde helper: `Vec<u8>` as standard base64.
pub mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// serde helper: `Option<Vec<u8>>` as standard base64 (null or absent = None).
pub mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::b64::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_rejects_bad_input() {
        let req = CertificateRequest {
            nonce: vec![1; NONCE_LEN],
            evidence: Evidence::Snp { report: vec![2; 1184], cert_table: None },
            public_key: Some(vec![3; 91]),
            csr: None,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains("\"platform\":\"snp\""), "{json}");
        assert_eq!(serde_json::from_str::<CertificateRequest>(&json).unwrap(), req);
        for bad in [
            r#"{"nonce":"!!","evidence":{"platform":"snp","report":""}}"#,
            r#"{"nonce":"","evidence":{"platform":"sgx","quote":""}}"#,
            r#"{"nonce":"","evidence":{"platform":"tdx","quote":""},"extra":1}"#,
            r#"{"evidence":{"platform":"tdx","quote":""}}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<CertificateRequest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reasons_are_snake_case_and_4xx() {
        for reason in [Reason::NonceReplayed, Reason::UnknownHostData, Reason::SimulatedNotAllowed] {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json.as_str().unwrap(), reason.as_str());
            assert!((400..500).contains(&reason.status()));
        }
    }

    #[test]
    fn report_data_is_sha512_of_key_then_nonce() {
        let rd = report_data(b"key", b"nonce");
        let expect: [u8; 64] = Sha512::digest(b"keynonce").into();
        assert_eq!(rd, expect);
    }
}
