//! The coordinator as the daemon sees it: trust, nonce, certificate request.

use super::coordinator_tls::{anchored_verifier, Trust, TrustError, Unverified};
use super::endpoint::Endpoint;
use super::http::{self, HttpError};
use super::cert_info::{parse_pem_chain, sha256_fingerprint, CertError};
use hyper::Method;
use rustls_pki_types::CertificateDer;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("coordinator unreachable: {0}")]
    Transport(#[from] HttpError),
    #[error("coordinator rejected {what}: {reason} (HTTP {status})")]
    Rejected { what: &'static str, status: u16, reason: String },
    #[error("coordinator answered {what} with a malformed body: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("coordinator root CA fingerprint is {got}, but --coordinator-fingerprint says {want}")]
    FingerprintMismatch { got: String, want: String },
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("coordinator root CA: {0}")]
    RootCa(#[from] CertError),
}

impl CoordinatorError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CoordinatorError::Transport(e) if e.is_unreachable())
    }
}

pub struct Coordinator {
    endpoint: Endpoint,
    trust: Trust,
    /// The verified (or first-use) root CA, once known.
    anchor: Option<CertificateDer<'static>>,
    timeout: Duration,
}

impl Coordinator {
    pub fn new(endpoint: Endpoint, trust: Trust, timeout: Duration) -> Self {
        let anchor = match &trust {
            Trust::RootCa(c) => Some(c.clone()),
            _ => None,
        };
        Self { endpoint, trust, anchor, timeout }
    }

    /// The root CA we trust (configured, fingerprint-checked or first-use pinned).
    pub fn anchor(&self) -> Option<&CertificateDer<'static>> {
        self.anchor.as_ref()
    }

    /// Establish the anchor: configured, or fetched and checked against the fingerprint, or
    /// fetched and pinned on first use.
    async fn ensure_anchor(&mut self) -> Result<CertificateDer<'static>, CoordinatorError> {
        if let Trust::TrustOnFirstUse = self.trust {
            tracing::warn!(
                PODMESH_EVENT = "coordinator_tofu",
                "coordinator {} is trusted on first use: its identity is NOT verified; set --coordinator-root-ca or --coordinator-fingerprint",
                self.endpoint
            );
        }
        if let Some(a) = &self.anchor {
            return Ok(a.clone());
        }
        let resp = http::request(&self.endpoint, Unverified::new(), Method::GET, api::ROOT_CA_PATH, None, self.timeout).await?;
        let body = success("the root CA request", resp.status, &resp.body)?;
        let pem = api::root_ca_pem(&body).map_err(|reason| CoordinatorError::Malformed { what: "the root CA request", reason })?;
        let root = parse_pem_chain("coordinator root CA", pem.as_bytes())?.remove(0);
        let got = sha256_fingerprint(&root);
        if let Trust::Fingerprint(want) = &self.trust {
            if got != hex::encode(want) {
                return Err(CoordinatorError::FingerprintMismatch { got, want: hex::encode(want) });
            }
        }
        tracing::info!(PODMESH_EVENT = "coordinator_root_pinned", "coordinator root CA {got} pinned");
        self.anchor = Some(root.clone());
        Ok(root)
    }

    async fn call(&mut self, what: &'static str, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, CoordinatorError> {
        let anchor = self.ensure_anchor().await?;
        let verifier = anchored_verifier(&anchor)?;
        let resp = http::request(&self.endpoint, verifier, method, path, body, self.timeout).await?;
        success(what, resp.status, &resp.body)
    }

    pub async fn nonce(&mut self) -> Result<api::Nonce, CoordinatorError> {
        let body = self.call("the nonce request", Method::POST, api::NONCE_PATH, Some(b"{}".to_vec())).await?;
        api::parse_nonce(&body).map_err(|reason| CoordinatorError::Malformed { what: "the nonce request", reason })
    }

    pub async fn issue(&mut self, req: &api::IssueRequest) -> Result<api::Issued, CoordinatorError> {
        let json = serde_json::to_vec(req).map_err(|e| CoordinatorError::Malformed { what: "the certificate request", reason: e.to_string() })?;
        let body = self.call("the certificate request", Method::POST, api::ISSUE_PATH, Some(json)).await?;
        api::parse_issued(&body).map_err(|reason| CoordinatorError::Malformed { what: "the certificate request", reason })
    }
}

/// 2xx → body; anything else → `Rejected` with the coordinator's `reason` field (or the raw
/// body, cut short, when it sent none).
fn success(what: &'static str, status: u16, body: &[u8]) -> Result<Vec<u8>, CoordinatorError> {
    if (200..300).contains(&status) {
        return Ok(body.to_vec());
    }
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let reason = v.get("reason")?.as_str()?.to_owned();
            Some(match v.get("detail").or_else(|| v.get("message")).and_then(|d| d.as_str()) {
                Some(d) if !d.is_empty() => format!("{reason}: {d}"),
                _ => reason,
            })
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let line: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
            if line.is_empty() { "no reason given".to_owned() } else { line }
        });
    Err(CoordinatorError::Rejected { what, status, reason })
}

/// The wire format, isolated so it follows `coordinator::api` in one place.
pub mod api {
    use serde::{Deserialize, Serialize};

    pub const NONCE_PATH: &str = "/v1/nonce";
    pub const ISSUE_PATH: &str = "/v1/certificate";
    pub const ROOT_CA_PATH: &str = "/v1/ca";

    pub struct Nonce {
        pub id: String,
        pub nonce: [u8; 32],
    }

    #[derive(Serialize)]
    pub struct IssueRequest {
        pub nonce_id: String,
        pub provider: String,
        pub report_b64: String,
        pub auxblob_b64: Option<String>,
        pub public_key_spki_b64: String,
    }

    #[derive(Deserialize)]
    pub struct Issued {
        pub mesh_ca_pem: String,
        pub cert_chain_pem: String,
        pub root_ca_pem: String,
    }

    pub fn parse_nonce(body: &[u8]) -> Result<Nonce, String> {
        #[derive(Deserialize)]
        struct Wire {
            id: String,
            nonce: String,
        }
        let w: Wire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let bytes = hex::decode(&w.nonce).map_err(|e| format!("nonce is not hex: {e}"))?;
        let nonce = <[u8; 32]>::try_from(bytes).map_err(|b| format!("nonce has {} bytes, expected 32", b.len()))?;
        Ok(Nonce { id: w.id, nonce })
    }

    pub fn parse_issued(body: &[u8]) -> Result<Issued, String> {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }

    pub fn root_ca_pem(body: &[u8]) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Wire {
            root_ca_pem: String,
        }
        serde_json::from_slice::<Wire>(body).map(|w| w.root_ca_pem).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_carry_the_coordinator_reason() {
        let e = success("the certificate request", 403, br#"{"reason":"unknown_host_data","detail":"no policy for 00ff"}"#).unwrap_err();
        assert_eq!(e.to_string(), "coordinator rejected the certificate request: unknown_host_data: no policy for 00ff (HTTP 403)");
        let e = success("x", 502, b"<html>\nBad\x07 gateway</html>").unwrap_err().to_string();
        assert!(e.contains("<html>Bad gateway</html>") && e.contains("HTTP 502"), "{e}");
        let e = success("x", 500, b"").unwrap_err().to_string();
        assert!(e.contains("no reason given"), "{e}");
        assert_eq!(success("x", 200, b"ok").unwrap(), b"ok");
    }

    #[test]
    fn malformed_wire_bodies_are_errors_not_panics() {
        for body in [&b""[..], b"{}", b"[]", b"{\"id\":\"a\",\"nonce\":\"zz\"}", b"{\"id\":\"a\",\"nonce\":\"abcd\"}", &[0xff; 100]] {
            assert!(api::parse_nonce(body).is_err());
            assert!(api::parse_issued(body).is_err());
            assert!(api::root_ca_pem(body).is_err());
        }
    }
}
