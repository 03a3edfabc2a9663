//! The coordinator as the daemon sees it: `wire::client` plus trust bookkeeping
//! (first-use pinning, the root a returned bundle must carry).

use super::cert_info::{parse_pem_chain, sha256_fingerprint, CertError};
use super::coordinator_tls::Trust;
use super::endpoint::Endpoint;
use rustls_pki_types::CertificateDer;
use std::time::Duration;
use wire::api::{CertificateRequest, CertificateResponse, NONCE_LEN};
use wire::client::{Client, ClientError, ServerTrust};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("coordinator sent a {0}-byte nonce, expected {NONCE_LEN}")]
    NonceLength(usize),
    #[error("coordinator returned root CA {got}, but the configured fingerprint is {want}")]
    FingerprintMismatch { got: String, want: String },
    #[error("coordinator root CA: {0}")]
    RootCa(#[from] CertError),
}

impl CoordinatorError {
    /// Nothing listened or answered (as opposed to a rejection).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CoordinatorError::Client(ClientError::Connect { .. } | ClientError::Timeout { .. }))
    }

    /// The coordinator asked to wait this long (429/503 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CoordinatorError::Client(ClientError::Rejected { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

pub struct Coordinator {
    endpoint: Endpoint,
    trust: Trust,
    client: Client,
    /// The root every returned bundle must carry: configured, or pinned at first use.
    anchor: Option<CertificateDer<'static>>,
    timeout: Duration,
}

fn url(endpoint: &Endpoint) -> String {
    format!("https://{endpoint}")
}

impl Coordinator {
    pub fn new(endpoint: Endpoint, trust: Trust, timeout: Duration) -> Result<Self, CoordinatorError> {
        let (server_trust, anchor) = match &trust {
            Trust::RootCa { pem, der } => (ServerTrust::RootCaPem(pem.clone()), Some(der.clone())),
            Trust::Fingerprint(fp) => (ServerTrust::RootFingerprint(*fp), None),
            Trust::FirstUse => (ServerTrust::TrustOnFirstUse, None),
        };
        let client = Client::new(&url(&endpoint), server_trust)?.with_timeout(timeout);
        Ok(Self { endpoint, trust, client, anchor, timeout })
    }

    /// The HTTPS client, authenticated like every attestation (pinned once trust-on-first-use
    /// has seen its first bundle).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The root CA a returned bundle must carry, when known.
    pub fn anchor(&self) -> Option<&CertificateDer<'static>> {
        self.anchor.as_ref()
    }

    pub async fn nonce(&mut self) -> Result<[u8; NONCE_LEN], CoordinatorError> {
        if let Trust::FirstUse = self.trust {
            tracing::warn!(
                PODMESH_EVENT = "coordinator_tofu",
                "coordinator {} is trusted on first use{}: its identity is NOT verified; set PODMESH_COORDINATOR_ROOT_CA or PODMESH_COORDINATOR_FINGERPRINT",
                self.endpoint,
                if self.anchor.is_some() { " (root pinned at first contact)" } else { "" }
            );
        }
        let resp = self.client.nonce().await?;
        <[u8; NONCE_LEN]>::try_from(resp.nonce.as_slice()).map_err(|_| CoordinatorError::NonceLength(resp.nonce.len()))
    }

    pub async fn certificate(&mut self, req: &CertificateRequest) -> Result<CertificateResponse, CoordinatorError> {
        let resp = self.client.certificate(req).await?;
        if let Trust::Fingerprint(want) = &self.trust {
            let root = parse_pem_chain("coordinator root CA", resp.root_ca_pem.as_bytes())?;
            let got = sha256_fingerprint(&root[0]);
            if got != hex::encode(want) {
                return Err(CoordinatorError::FingerprintMismatch { got, want: hex::encode(want) });
            }
        }
        Ok(resp)
    }

    /// After the first verified bundle under trust-on-first-use: pin its root, so later
    /// attempts (renewals) accept only that coordinator.
    pub fn pin_first_use(&mut self, root_ca_pem: &str) -> Result<(), CoordinatorError> {
        if !matches!(self.trust, Trust::FirstUse) || self.anchor.is_some() {
            return Ok(());
        }
        let der = parse_pem_chain("coordinator root CA", root_ca_pem.as_bytes())?.remove(0);
        self.client = Client::new(&url(&self.endpoint), ServerTrust::RootCaPem(root_ca_pem.to_owned()))?
            .with_timeout(self.timeout);
        tracing::warn!(
            PODMESH_EVENT = "coordinator_root_pinned",
            "coordinator root CA {} pinned at first use",
            sha256_fingerprint(&der)
        );
        self.anchor = Some(der);
        Ok(())
    }
}
