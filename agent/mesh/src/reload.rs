//! Certificate hot reload: watch the tls dir, validate new material, publish it.
//!
//! The attestation daemon replaces the files by atomic rename, so a changed file shows up
//! as a new inode/mtime. Every `interval` we compare a fingerprint of the three files; on a
//! change the material is loaded and validated exactly like at startup and, when good,
//! published on a `watch` channel that every handshake borrows from. Bad material is
//! rejected with one log line and the current configuration stays; established connections
//! never notice either way. The files of a renewal land one by one, so a half-written set
//! (new certificate, old key) is rejected once and picked up at the next change.
//!
//! A new mesh CA (a manifest update) is not switched to at once: [`crate::rotation`] keeps
//! the old CA trusted for the grace period and moves our own certificate over half way; this
//! loop publishes each of its steps.

use crate::rotation::{Rotation, Step};
use crate::tls::{Material, TlsConfigs, CHAIN_FILE, KEY_FILE, MESH_CA_FILE};
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
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
    rotation: Rotation,
    tx: watch::Sender<Arc<TlsConfigs>>,
}

impl Reloader {
    /// Starts from material already loaded from `dir` (fingerprint taken before loading, so
    /// a change during the load is noticed at the first poll).
    pub fn new(dir: PathBuf, seen: Fingerprint, rotation: Rotation, initial: TlsConfigs) -> (Self, TlsWatch) {
        let (tx, rx) = watch::channel(Arc::new(initial));
        (Self { dir, seen, rotation, tx }, rx)
    }

    /// One poll: reload when the files changed, then move a rotation on when one is due.
    /// Returns whether new material was published.
    pub fn poll_once(&mut self) -> bool {
        let now = Instant::now();
        let fingerprint = Fingerprint::of(&self.dir);
        let mut published = false;
        if fingerprint != self.seen {
            self.seen = fingerprint;
            match Material::read(&self.dir).and_then(|m| self.rotation.accept(m, now)) {
                Ok((configs, steps)) => {
                    tracing::info!(PODMESH_EVENT = "tls_reloaded", dir = %self.dir.display(), "new TLS material from {} in use for new handshakes ({})", self.dir.display(), configs.summary);
                    self.publish(configs, &steps);
                    published = true;
                }
                Err(e) => {
                    tracing::warn!(PODMESH_EVENT = "tls_reload_rejected", dir = %self.dir.display(), "changed TLS material rejected, keeping the current one: {e}");
                }
            }
        }
        match self.rotation.advance(now) {
            Ok(Some((configs, step))) => {
                self.publish(configs, &[step]);
                published = true;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(
                PODMESH_EVENT = "mesh_ca_rotation_failed",
                "the next step of the mesh CA rotation cannot be built, keeping the current one: {e}"
            ),
        }
        published
    }

    /// Configuration first, then the connections are told (see [`crate::rotation::Retirement::stamp`]).
    fn publish(&self, configs: TlsConfigs, steps: &[Step]) {
        self.tx.send_replace(Arc::new(configs));
        for step in steps {
            self.rotation.announce(*step);
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
            if dir_unchanged && !self.rotation.due(Instant::now()) {
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
