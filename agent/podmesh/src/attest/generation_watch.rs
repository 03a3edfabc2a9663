//! Noticing manifest updates: a long poll on the coordinator's `GET /v1/generation` (see
//! `coordinator::watch`), over the same pinned TLS as attestation. When the coordinator
//! announces a generation other than the one our certificate came from, the attestation loop
//! is woken to attest again (fresh key, fresh nonce, fresh report).
//!
//! Under the threat model the host can block or delay this connection. That only delays the
//! rotation: the pod keeps its current certificate until its normal renewal, and the peers
//! that already rotated stop trusting it when their grace period ends (fail closed). It cannot
//! forge an announcement (TLS to the pinned root), and a replayed or bogus one costs one
//! attestation.

use super::backoff::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use wire::client::{Client, GenerationWatch};

/// The long poll, until the daemon exits. `held` is the generation of the certificate in the
/// tls dir (0: none yet); `rotate` wakes the attestation loop.
pub async fn run(client: Client, held: watch::Receiver<u64>, rotate: Arc<Notify>) {
    // One kept-alive connection: one TLS handshake per pod, not one per hold.
    let mut poll = GenerationWatch::new(client);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut seen = 0;
    let mut failing = false;
    loop {
        match poll.after(seen).await {
            Ok(answer) => {
                if failing {
                    tracing::info!(PODMESH_EVENT = "generation_watch_restored", "watching manifest generations again");
                    failing = false;
                }
                backoff.reset();
                seen = answer.generation;
                let ours = *held.borrow();
                if ours != 0 && seen != ours {
                    tracing::info!(
                        PODMESH_EVENT = "mesh_generation_announced",
                        PODMESH_GENERATION = seen,
                        PODMESH_MANIFEST_SHA256 = %answer.manifest_sha256,
                        "the coordinator announced manifest generation {seen} (our certificate is from {ours}): attesting again"
                    );
                    rotate.notify_one();
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                // One line per outage, not per retry.
                if !failing {
                    tracing::warn!(
                        PODMESH_EVENT = "generation_watch_failed",
                        "watching manifest generations failed: {e}; retrying (a manifest update is noticed at the next renewal until this recovers)"
                    );
                    failing = true;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}
