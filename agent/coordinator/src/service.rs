//! The coordinator itself, transport-free: nonces, issuing, CA and manifest operations.
//! The HTTP layer (`server`) only moves bytes in and out and logs.

use crate::manifest::Manifest;
use crate::nonce::{NonceError, NonceStore};
use crate::owner::OwnerToken;
use crate::state::{StateDir, StateError};
use crate::verify::{AnchorError, Anchors, Rejection, Verifier};
use crate::watch::{Generations, Live};
use pki::{IssueError, LeafRequest, MeshCa, PublicKeyInput, RootCa};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};
use wire::api::{CaResponse, CertificateRequest, CertificateResponse, ManifestResponse, NonceResponse, Reason};

/// Outstanding nonces at most; more `POST /v1/nonce` calls get `too_many_nonces` (429).
pub const MAX_OUTSTANDING_NONCES: usize = 100_000;
/// Outstanding nonces per client address (IPv6: per /64). A pod needs one per attempt; a
/// node that NATs many pods needs more, hence the margin.
pub const MAX_NONCES_PER_SOURCE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Anchors(#[from] AnchorError),
    #[error(
        "--manifest (sha256 {given}) is not the current manifest (generation {generation}, sha256 {current}); the \
         persisted history is authoritative, so a restart cannot roll back an update: drop --manifest to serve \
         generation {generation}, or add --apply-manifest to make the file the next generation"
    )]
    ManifestNotCurrent { given: String, current: String, generation: u64 },
}

/// Settings from the command line.
#[derive(Clone)]
pub struct Config {
    pub cert_lifetime: Duration,
    pub nonce_ttl: Duration,
    pub anchors: Anchors,
    /// None: manifest updates over the API are disabled.
    pub owner: Option<OwnerToken>,
    pub max_nonces: usize,
    pub max_nonces_per_source: usize,
    /// A manifest given at start that differs from the persisted one becomes the next
    /// generation (as a `PUT` would) instead of being refused.
    pub apply_manifest: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cert_lifetime: pki::leaf::DEFAULT_LIFETIME,
            nonce_ttl: Duration::from_secs(60),
            anchors: Anchors::default(),
            owner: None,
            max_nonces: MAX_OUTSTANDING_NONCES,
            max_nonces_per_source: MAX_NONCES_PER_SOURCE,
            apply_manifest: false,
        }
    }
}

struct Generation {
    number: u64,
    mesh: MeshCa,
    manifest: Manifest,
    verifier: Verifier,
}

pub struct Coordinator {
    root: RootCa,
    state: StateDir,
    current: RwLock<Arc<Generation>>,
    /// Serializes manifest updates (each one writes a generation to disk).
    update: Mutex<()>,
    nonces: NonceStore,
    config: Config,
    /// What `GET /v1/generation` waiters wait on.
    generations: Arc<Generations>,
}

fn internal(what: impl std::fmt::Display) -> Rejection {
    Rejection::new(Reason::Internal, what.to_string())
}

impl Coordinator {
    /// Opens the state dir (creating the root and generation 1 from `manifest` on first start).
    /// The persisted history is authoritative: a `manifest` that differs from the current one is
    /// refused, unless `config.apply_manifest` makes it the next generation exactly as a `PUT`.
    pub fn open(state_dir: &Path, manifest: Option<Manifest>, config: Config) -> Result<Self, CoordinatorError> {
        // Validate the manifest against the anchors before anything is written.
        if let Some(m) = &manifest {
            Verifier::check_config(m, &config.anchors)?;
        }
        let state = StateDir::open(state_dir)?;
        let loaded = state.load_or_init(manifest.as_ref(), config.apply_manifest)?;
        let verifier = Verifier::new(&loaded.manifest, &config.anchors)?;
        tracing::info!(
            PODMESH_EVENT = "coordinator_state_loaded",
            generation = loaded.generation,
            manifest_sha256 = %loaded.manifest.sha256,
            policies = loaded.manifest.policies.len(),
            "coordinator state loaded from {}", state_dir.display()
        );
        loaded.manifest.warn_permissive("loaded at start");
        let generations = Arc::new(Generations::new(Live {
            generation: loaded.generation,
            manifest_sha256: loaded.manifest.sha256.clone(),
        }));
        let coordinator = Self {
            generations,
            root: loaded.root,
            current: RwLock::new(Arc::new(Generation {
                number: loaded.generation,
                mesh: loaded.mesh,
                manifest: loaded.manifest,
                verifier,
            })),
            update: Mutex::new(()),
            nonces: NonceStore::new(config.nonce_ttl, config.max_nonces, config.max_nonces_per_source),
            state,
            config,
        };
        if let Some(manifest) = manifest {
            let current = coordinator.current();
            if manifest.sha256 != current.manifest.sha256 {
                if !coordinator.config.apply_manifest {
                    return Err(CoordinatorError::ManifestNotCurrent {
                        given: manifest.sha256,
                        current: current.manifest.sha256.clone(),
                        generation: current.number,
                    });
                }
                let verifier = Verifier::new(&manifest, &coordinator.config.anchors)?;
                let applied = coordinator.install(manifest, verifier)?;
                tracing::info!(
                    PODMESH_EVENT = "coordinator_manifest_applied",
                    generation = applied.number,
                    manifest_sha256 = %applied.manifest.sha256,
                    "--apply-manifest: the given manifest is generation {}", applied.number
                );
            }
        }
        Ok(coordinator)
    }

    pub fn generations(&self) -> Arc<Generations> {
        self.generations.clone()
    }

    pub fn root(&self) -> &RootCa {
        &self.root
    }

    fn current(&self) -> Arc<Generation> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `POST /v1/nonce` from `client`.
    pub fn nonce(&self, client: IpAddr) -> Result<NonceResponse, Rejection> {
        let nonce = self.nonces.issue(client).map_err(|e| {
            let rejection = Rejection::new(Reason::TooManyNonces, e.to_string());
            match e.retry_after() {
                Some(after) => rejection.retry_after(after),
                None => rejection,
            }
        })?;
        Ok(NonceResponse { nonce: nonce.to_vec(), expires_in_secs: self.nonces.ttl().as_secs() })
    }

    /// `POST /v1/certificate` with the raw body.
    pub fn issue(&self, body: &[u8]) -> Result<CertificateResponse, Rejection> {
        let request: CertificateRequest = serde_json::from_slice(body)
            .map_err(|e| Rejection::new(Reason::MalformedRequest, format!("certificate request: {e}")))?;
        let public_key = match (request.public_key, request.csr) {
            (Some(spki), None) => PublicKeyInput::SpkiDer(spki),
            (None, Some(csr)) => PublicKeyInput::CsrDer(csr),
            _ => return Err(Rejection::new(Reason::MalformedRequest, "set exactly one of public_key and csr")),
        };
        self.nonces.consume(&request.nonce).map_err(|e| {
            let reason = match e {
                NonceError::Expired => Reason::NonceExpired,
                NonceError::Replayed => Reason::NonceReplayed,
                NonceError::Unknown | NonceError::TooMany(..) | NonceError::TooManyFromSource(..) => {
                    Reason::NonceUnknown
                }
            };
            Rejection::new(reason, e.to_string())
        })?;
        let generation = self.current();
        let now = time::OffsetDateTime::now_utc();
        let (claims, policy) =
            generation.verifier.check(&generation.manifest, &request.evidence, &public_key, &request.nonce, now)?;
        let issued = generation
            .mesh
            .issue(&LeafRequest {
                public_key: &public_key,
                common_name: &policy.name,
                sans: &policy.sans,
                lifetime: self.config.cert_lifetime,
                claims: Some(&claims),
            })
            .map_err(|e| match e {
                IssueError::PublicKey(_) | IssueError::NonCanonicalSpki | IssueError::Csr(_) => {
                    Rejection::new(Reason::InvalidPublicKey, e.to_string())
                }
                other => internal(format!("issuing the mesh certificate: {other}")),
            })?;
        let not_after = issued.not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let platform = match request.evidence {
            wire::api::Evidence::Snp { .. } => tee::Platform::SevSnp,
            wire::api::Evidence::Tdx { .. } => tee::Platform::Tdx,
        };
        for name in generation.manifest.permissive(platform) {
            tracing::warn!(
                PODMESH_EVENT = "permissive_reference_value",
                field = %name,
                workload = %policy.name,
                generation = generation.number,
                "certificate for {} issued under the permissive reference value {name}", policy.name
            );
        }
        tracing::info!(
            PODMESH_EVENT = "coordinator_certificate_issued",
            workload = %policy.name,
            platform = %claims.platform,
            simulated = claims.simulated,
            generation = generation.number,
            not_after,
            "issued a mesh certificate for {}", policy.name
        );
        Ok(CertificateResponse {
            mesh_ca_pem: generation.mesh.mesh_ca_pem().to_owned(),
            cert_chain_pem: issued.chain_pem,
            root_ca_pem: self.root.cert_pem().to_owned(),
            workload: policy.name.clone(),
            not_after,
            manifest_generation: generation.number,
        })
    }

    pub fn ca(&self) -> CaResponse {
        let generation = self.current();
        CaResponse {
            root_ca_pem: self.root.cert_pem().to_owned(),
            mesh_ca_pem: generation.mesh.mesh_ca_pem().to_owned(),
            intermediate_ca_pem: generation.mesh.intermediate_pem().to_owned(),
            manifest_generation: generation.number,
            manifest_sha256: generation.manifest.sha256.clone(),
        }
    }

    fn manifest_response(generation: &Generation) -> Result<ManifestResponse, Rejection> {
        Ok(ManifestResponse {
            generation: generation.number,
            manifest_sha256: generation.manifest.sha256.clone(),
            manifest: serde_json::to_value(&generation.manifest.doc).map_err(internal)?,
            mesh_ca_pem: generation.mesh.mesh_ca_pem().to_owned(),
        })
    }

    pub fn manifest(&self) -> Result<ManifestResponse, Rejection> {
        Self::manifest_response(&self.current())
    }

    /// `PUT /v1/manifest`: owner-authenticated; a changed manifest rotates the mesh CA.
    pub fn set_manifest(&self, authorization: Option<&str>, body: &[u8]) -> Result<ManifestResponse, Rejection> {
        let Some(owner) = &self.config.owner else {
            return Err(Rejection::new(
                Reason::ManifestUpdateDisabled,
                "no owner token configured (--owner-token-file), manifest updates are disabled",
            ));
        };
        if !owner.check(authorization) {
            return Err(Rejection::new(Reason::Unauthorized, "missing or wrong owner bearer token"));
        }
        let manifest = Manifest::from_json(body).map_err(|e| Rejection::new(Reason::ManifestInvalid, e.to_string()))?;
        let verifier = Verifier::new(&manifest, &self.config.anchors)
            .map_err(|e| Rejection::new(Reason::ManifestInvalid, e.to_string()))?;
        let generation = self.install(manifest, verifier).map_err(internal)?;
        Self::manifest_response(&generation)
    }

    /// Makes `manifest` the next generation (fresh mesh CA, persisted before it goes live);
    /// the current one when it is equal. The one path for `PUT` and `--apply-manifest`.
    fn install(&self, manifest: Manifest, verifier: Verifier) -> Result<Arc<Generation>, StateError> {
        let _guard = self.update.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.current();
        if previous.manifest.sha256 == manifest.sha256 {
            return Ok(previous);
        }
        let (number, mesh) = self.state.commit(&self.root, &manifest, previous.number)?;
        manifest.warn_permissive("set by the owner");
        let generation = Arc::new(Generation { number, mesh, manifest, verifier });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = generation.clone();
        self.generations.publish(Live { generation: number, manifest_sha256: generation.manifest.sha256.clone() });
        Ok(generation)
    }
}
