//! The attestation loop: attest, write the files, open the pod when no mesh proxy will,
//! renew at half-life or when the coordinator announces a new manifest generation
//! ([`super::generation_watch`]), retry with backoff, stop cleanly on SIGTERM.

use super::backoff::Backoff;
use super::bus::{Bus, State};
use super::coordinator::{Coordinator, CoordinatorError};
use super::issued::{self, IssuedError, IssuedPem, Verified};
use super::workload_key::{KeyError, WorkloadKey};
use mesh::lifecycle::{notify_ready, notify_status, notify_stopping};
use mesh::tls_dir::{self, TlsDirError, TlsFiles};
use rustls_pki_types::UnixTime;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tsm::{Provider, TsmClient, TsmError};
use wire::api::{CertificateRequest, Evidence};

pub struct Settings {
    pub coordinator: Coordinator,
    pub tls_dir: PathBuf,
    pub tsm_root: PathBuf,
    pub privlevel: Option<u8>,
    /// `mesh::config::load` found a mesh configuration: the proxy removes the deny table.
    pub mesh_configured: bool,
    pub open_without_coordinator: bool,
    pub netns: Option<String>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub dbus: bool,
    /// Exit after the first certificate is written (benchmarks, one-shot provisioning).
    pub once: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error(transparent)]
    Tee(#[from] TsmError),
    #[error(transparent)]
    Issued(#[from] IssuedError),
    #[error(transparent)]
    TlsDir(#[from] TlsDirError),
    #[error("the configfs-tsm worker thread died: {0}")]
    Worker(String),
}

impl AttemptError {
    /// Errors no retry can fix: there is no TEE to ask.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            AttemptError::Tee(
                TsmError::NotConfidential { .. } | TsmError::NoTsmReport { .. } | TsmError::VmpckDisabled { .. }
            )
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    NoTee(AttemptError),
    #[error("{0}")]
    Deny(Box<firewall::deny::DenyError>),
    #[error("installing the SIGTERM/SIGINT handlers: {0}")]
    Signals(std::io::Error),
}

enum Wake {
    Timer,
    Reattest,
    /// The coordinator announced a new manifest generation.
    Generation,
    Shutdown,
}

pub async fn run(mut s: Settings) -> Result<(), DaemonError> {
    let mut shutdown = mesh::lifecycle::shutdown_signal().map_err(DaemonError::Signals)?;
    let reattest = Arc::new(Notify::new());
    let bus = if s.dbus { Bus::connect(reattest.clone()).await } else { Bus::disabled() };

    // Fail fast and clearly when there is no TEE at all, before waiting on a coordinator.
    if let Err(e) = read_report(&s, [0u8; 64]).await {
        if e.is_fatal() {
            bus.set_state(State::Failed).await;
            notify_status(&format!("failed: {e}"));
            return Err(DaemonError::NoTee(e));
        }
    }

    let mut backoff = Backoff::new(s.backoff_initial, s.backoff_max);
    let mut current: Option<Verified> = None;
    let mut opened = false;
    let mut attempt: u32 = 0;
    // The generation of the certificate in place, for the watch (started after the first
    // certificate, so under trust on first use it runs on the pinned root).
    let (held_tx, held_rx) = tokio::sync::watch::channel(0u64);
    let rotate = Arc::new(Notify::new());
    let mut watching: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        attempt += 1;
        let outcome = tokio::select! {
            r = attest_once(&mut s) => r,
            _ = shutdown.recv() => return stopping(),
        };
        let wait = match outcome {
            Ok((v, generation)) => {
                backoff.reset();
                attempt = 0;
                let fp = v.mesh_ca.sha256.clone();
                let previous = current.as_ref().map(|c| c.mesh_ca.sha256.clone());
                tracing::info!(
                    PODMESH_EVENT = "certificate_written",
                    PODMESH_CERT_EXPIRY = v.leaf.not_after,
                    PODMESH_MESH_CA_SHA256 = %fp,
                    "mesh certificate written to {} (SANs {}, expires {}, mesh CA {fp})",
                    s.tls_dir.display(),
                    v.leaf.sans.join(","),
                    v.leaf.not_after,
                );
                if let Some(old) = previous.filter(|old| *old != fp) {
                    tracing::info!(
                        PODMESH_EVENT = "mesh_ca_rotated",
                        PODMESH_GENERATION = generation,
                        PODMESH_MESH_CA_SHA256 = %fp,
                        PODMESH_OLD_MESH_CA_SHA256 = %old,
                        "mesh CA rotated: certificate of manifest generation {generation} under mesh CA {fp} (was {old}) written; the proxy switches to it"
                    );
                }
                held_tx.send_replace(generation);
                bus.renewed(u64::try_from(v.leaf.not_after).unwrap_or(0), &fp, generation).await;
                let status = format!("certificate valid until {} (mesh CA {fp})", v.leaf.not_after);
                if current.is_none() {
                    notify_ready(Some(&status), Some("certificate_written"));
                } else {
                    notify_status(&status);
                }
                if !s.mesh_configured && !opened {
                    open_pod(&s, "no mesh is configured and the certificate is in place")?;
                    opened = true;
                }
                // Half of what is left from now: the coordinator backdates notBefore (clock skew), so
                // half of notBefore..notAfter could already be past for short lifetimes.
                let renew_in =
                    Duration::from_secs(u64::try_from((v.leaf.not_after - now_secs()) / 2).unwrap_or(0).max(1));
                current = Some(v);
                if s.once {
                    return Ok(());
                }
                if watching.is_none() {
                    let client = s.coordinator.client().clone();
                    watching =
                        Some(tokio::spawn(super::generation_watch::run(client, held_rx.clone(), rotate.clone())));
                }
                tracing::info!(
                    PODMESH_EVENT = "renewal_scheduled",
                    "renewing in {} s (half the remaining validity)",
                    renew_in.as_secs()
                );
                renew_in
            }
            Err(e) if e.is_fatal() => {
                bus.set_state(State::Failed).await;
                notify_status(&format!("failed: {e}"));
                return Err(DaemonError::NoTee(e));
            }
            Err(e) => {
                // A saturated coordinator's Retry-After stretches the delay, up to --backoff-max.
                let asked = match &e {
                    AttemptError::Coordinator(c) => c.retry_after().unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                let delay = backoff.next_delay_at_least(asked);
                tracing::warn!(
                    PODMESH_EVENT = "attestation_failed",
                    PODMESH_ATTEMPT = attempt,
                    PODMESH_REASON = e.reason().unwrap_or("-"),
                    "attestation attempt {attempt} failed: {e}; retrying in {} ms",
                    delay.as_millis()
                );
                notify_status(&format!("attempt {attempt} failed: {e}"));
                let unreachable = matches!(&e, AttemptError::Coordinator(c) if c.is_unreachable());
                if unreachable && s.open_without_coordinator && !s.mesh_configured && !opened {
                    open_pod(
                        &s,
                        "--open-without-coordinator is set, no mesh is configured and the coordinator is unreachable",
                    )?;
                    opened = true;
                    if current.is_none() {
                        notify_ready(None, None);
                    }
                }
                if let Some(cur) = &current {
                    if now_secs() >= cur.leaf.not_after {
                        tracing::error!(
                            PODMESH_EVENT = "certificate_expired",
                            "the mesh certificate expired at {} and renewal keeps failing",
                            cur.leaf.not_after
                        );
                        bus.set_state(State::Expired).await;
                    }
                }
                delay
            }
        };
        let wake = tokio::select! {
            _ = tokio::time::sleep(wait) => Wake::Timer,
            _ = reattest.notified() => Wake::Reattest,
            _ = rotate.notified() => Wake::Generation,
            _ = shutdown.recv() => Wake::Shutdown,
        };
        match wake {
            Wake::Shutdown => {
                if let Some(w) = watching.take() {
                    w.abort();
                }
                return stopping();
            }
            Wake::Reattest => backoff.reset(),
            // A refused pod keeps its backoff: the watch wakes it at most once per hold.
            Wake::Generation | Wake::Timer => {}
        }
        if let Some(cur) = &current {
            if now_secs() < cur.leaf.not_after {
                bus.set_state(State::Renewing).await;
            }
        }
    }
}

impl AttemptError {
    /// The coordinator's rejection reason, for the journal.
    fn reason(&self) -> Option<&'static str> {
        match self {
            AttemptError::Coordinator(CoordinatorError::Client(wire::client::ClientError::Rejected {
                reason, ..
            })) => Some(reason.as_str()),
            _ => None,
        }
    }
}

/// One full attestation with a fresh key. Writes the files only when every check passed.
/// Returns what was verified and the manifest generation it belongs to.
async fn attest_once(s: &mut Settings) -> Result<(Verified, u64), AttemptError> {
    let key = WorkloadKey::generate()?;
    let nonce = s.coordinator.nonce().await?;
    let report = read_report(s, key.report_data(&nonce)).await?;
    let evidence = match report.provider {
        Provider::SevGuest => Evidence::Snp { report: report.outblob, cert_table: report.auxblob },
        Provider::TdxGuest => Evidence::Tdx { quote: report.outblob },
    };
    let request = CertificateRequest { nonce: nonce.to_vec(), evidence, public_key: Some(key.spki_der()), csr: None };
    let issued = s.coordinator.certificate(&request).await?;
    let pem =
        IssuedPem { mesh_ca: &issued.mesh_ca_pem, cert_chain: &issued.cert_chain_pem, root_ca: &issued.root_ca_pem };
    let verified = issued::verify(&pem, &key.spki_der(), s.coordinator.anchor(), UnixTime::now())?;
    s.coordinator.pin_first_use(&issued.root_ca_pem)?;
    let key_pem = key.private_key_pem();
    let files = TlsFiles {
        mesh_ca_pem: issued.mesh_ca_pem.as_bytes(),
        cert_chain_pem: issued.cert_chain_pem.as_bytes(),
        key_pem: key_pem.as_bytes(),
        root_ca_pem: issued.root_ca_pem.as_bytes(),
    };
    let dir = s.tls_dir.clone();
    tls_dir::write_atomically(&dir, &files)?;
    Ok((verified, issued.manifest_generation))
}

/// configfs-tsm blocks (TDX GetQuote can take seconds): keep it off the async threads.
async fn read_report(s: &Settings, report_data: [u8; 64]) -> Result<tsm::TsmReport, AttemptError> {
    let root = s.tsm_root.clone();
    let privlevel = s.privlevel;
    tokio::task::spawn_blocking(move || TsmClient::new(root).report(&report_data, privlevel))
        .await
        .map_err(|e| AttemptError::Worker(e.to_string()))?
        .map_err(AttemptError::from)
}

fn open_pod(s: &Settings, why: &str) -> Result<(), DaemonError> {
    mesh::lifecycle::open_pod(
        s.netns.as_deref(),
        &format!("{why}; pod ports are now reachable without the mesh proxy"),
    )
    .map_err(|e| DaemonError::Deny(Box::new(e)))?;
    Ok(())
}

fn stopping() -> Result<(), DaemonError> {
    tracing::info!(PODMESH_EVENT = "stopping", "stopping on signal; tls files stay in place");
    notify_stopping();
    Ok(())
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
