//! Certificate hot reload: watch the tls dir, validate new material, publish it.
//!
//! The attestation daemon replaces the files by atomic rename, so a changed file shows up
//! as a new inode/mtime. Every `interval` we compare a fingerprint of the three files; on a
//! change the material is loaded and validated exactly like at startup and, when good,
//! published on a `watch` channel that every handshake borrows from. Bad material is
//! rejected with one log line and the current configuration stays; established connections
//! never notice either way. The files of a renewal land one by one, so a half-written set
//! (new certificate, old key) is rejected once and picked up at the next change.

use crate::{
    identity::Rules,
    tls::{TlsConfigs, TlsPolicy, CHAIN_FILE, KEY_FILE, MESH_CA_FILE},
};
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::sync::watch;

/// Identity of the three files: (device, inode, size, mtime in ns) each, `None` when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint([Option<(u64, u64, u64, i128)>; 3]);

impl Fingerprint {
    pub fn of(dir: &Path) -> Self {
        let stat = |name: &str| {
            std::fs::metadata(dir.join(name))
                .ok()
                .map(|m| (m.dev(), m.ino(), m.size(), m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128))
        };
        Self([stat(MESH_CA_FILE), stat(CHAIN_FILE), stat(KEY_FILE)])
    }
}

/// Receives the current TLS configuration; cheap to clone, one per listener.
pub type TlsWatch = watch::Receiver<Arc<TlsConfigs>>;

/// Watches `dir` and publishes validated material.
pub struct Reloader {
    dir: PathBuf,
    seen: Fingerprint,
    policy: TlsPolicy,
    /// The identity rules every rebuilt configuration carries.
    rules: Arc<Rules>,
    tx: watch::Sender<Arc<TlsConfigs>>,
}

impl Reloader {
    /// Starts from material already loaded from `dir` (fingerprint taken before loading, so
    /// a change during the load is noticed at the first poll).
    pub fn new(
        dir: PathBuf,
        seen: Fingerprint,
        policy: TlsPolicy,
        rules: Arc<Rules>,
        initial: TlsConfigs,
    ) -> (Self, TlsWatch) {
        let (tx, rx) = watch::channel(Arc::new(initial));
        (Self { dir, seen, policy, rules, tx }, rx)
    }

    /// One poll: reload when the files changed. Returns whether new material was published.
    pub fn poll_once(&mut self) -> bool {
        let now = Fingerprint::of(&self.dir);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        match TlsConfigs::load(&self.dir, rustls_pki_types::UnixTime::now(), &self.policy, &self.rules) {
            Ok(configs) => {
                tracing::info!(PODMESH_EVENT = "tls_reloaded", dir = %self.dir.display(), "new TLS material from {} in use for new handshakes ({})", self.dir.display(), configs.summary);
                self.tx.send_replace(Arc::new(configs));
                true
            }
            Err(e) => {
                tracing::warn!(PODMESH_EVENT = "tls_reload_rejected", dir = %self.dir.display(), "changed TLS material rejected, keeping the current one: {e}");
                false
            }
        }
    }

    /// Polls every `interval` until the last receiver is gone.
    pub async fn run(mut self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.tx.is_closed() {
                return;
            }
            // Loading is a few file reads and signature checks: fine on a blocking thread.
            let dir_unchanged = Fingerprint::of(&self.dir) == self.seen;
            if dir_unchanged {
                continue;
            }
            self = match tokio::task::spawn_blocking(move || {
                self.poll_once();
                self
            })
            .await
            {
                Ok(me) => me,
                Err(e) => {
                    tracing::error!(PODMESH_EVENT = "tls_reload_failed", "TLS reload task died: {e}");
                    return;
                }
            };
        }
    }
}
