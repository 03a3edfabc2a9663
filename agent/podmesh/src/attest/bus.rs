//! `org.podmesh.Attestation1` on the system bus: state, certificate expiry, mesh CA
//! fingerprint and manifest generation as properties (with PropertiesChanged), the `Renewed`
//! and `MeshCaRotated` signals and `Reattest()`.
//!
//! The bus is optional: without one (early boot, minimal images, tests) the daemon logs a
//! warning and carries on; every update is then a no-op.

use std::sync::Arc;
use tokio::sync::Notify;
use zbus::object_server::SignalEmitter;

pub const BUS_NAME: &str = "org.podmesh.Attestation1";
pub const OBJECT_PATH: &str = "/org/podmesh/Attestation1";

/// The daemon's lifecycle as seen on the bus and in `podmesh status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Getting the first certificate.
    Attesting,
    /// A valid certificate is in the tls dir.
    Ready,
    /// Renewing; the current certificate is still valid and in place.
    Renewing,
    /// Renewal kept failing until the current certificate expired.
    Expired,
    /// A non-recoverable error (no TEE); the daemon is about to exit.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Attesting => "attesting",
            State::Ready => "ready",
            State::Renewing => "renewing",
            State::Expired => "expired",
            State::Failed => "failed",
        }
    }
}

struct Attestation {
    state: State,
    expiry: u64,
    fingerprint: String,
    generation: u64,
    reattest: Arc<Notify>,
}

#[zbus::interface(name = "org.podmesh.Attestation1")]
impl Attestation {
    /// attesting | ready | renewing | expired | failed
    #[zbus(property)]
    fn state(&self) -> String {
        self.state.as_str().to_owned()
    }

    /// notAfter of the current mesh certificate, Unix seconds; 0 before the first one.
    #[zbus(property)]
    fn certificate_expiry(&self) -> u64 {
        self.expiry
    }

    /// SHA-256 of the mesh CA certificate (DER), hex; empty before the first certificate.
    #[zbus(property)]
    fn mesh_ca_fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Manifest generation whose mesh CA issued the current certificate; 0 before the first.
    #[zbus(property)]
    fn mesh_generation(&self) -> u64 {
        self.generation
    }

    /// Attest again now with a fresh key (the current files stay until the new ones are written).
    fn reattest(&self) {
        tracing::info!(PODMESH_EVENT = "reattest_requested", "re-attestation requested over D-Bus");
        self.reattest.notify_one();
    }

    /// Emitted after a new certificate was written (also the first one).
    #[zbus(signal)]
    async fn renewed(emitter: &SignalEmitter<'_>, expiry: u64, mesh_ca_fingerprint: &str) -> zbus::Result<()>;

    /// Emitted after a certificate under a new mesh CA (a new manifest generation) was written.
    #[zbus(signal)]
    async fn mesh_ca_rotated(
        emitter: &SignalEmitter<'_>,
        generation: u64,
        mesh_ca_fingerprint: &str,
    ) -> zbus::Result<()>;
}

/// Handle to the exported object; a no-op when there is no bus.
pub struct Bus {
    conn: Option<zbus::Connection>,
}

impl Bus {
    /// Connects to the system bus (or `DBUS_SYSTEM_BUS_ADDRESS`) and claims [`BUS_NAME`].
    pub async fn connect(reattest: Arc<Notify>) -> Self {
        let iface =
            Attestation { state: State::Attesting, expiry: 0, fingerprint: String::new(), generation: 0, reattest };
        let built = zbus::connection::Builder::system().name(BUS_NAME).serve_at(OBJECT_PATH, iface).build();
        // A wedged bus must not hold up attestation: the bus is only for status.
        let built = match tokio::time::timeout(std::time::Duration::from_secs(5), built).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no answer within 5 s".to_owned()),
        };
        match built {
            Ok(conn) => {
                tracing::info!(PODMESH_EVENT = "dbus_ready", "serving {BUS_NAME} at {OBJECT_PATH} on the system bus");
                Self { conn: Some(conn) }
            }
            Err(e) => {
                tracing::warn!(
                    PODMESH_EVENT = "dbus_unavailable",
                    "system bus unavailable, continuing without D-Bus status: {e}"
                );
                Self { conn: None }
            }
        }
    }

    pub fn disabled() -> Self {
        Self { conn: None }
    }

    pub async fn set_state(&self, state: State) {
        self.update(|a| a.state = state, false).await;
    }

    /// A new certificate is in place: update the properties and emit `Renewed` (and
    /// `MeshCaRotated` when the mesh CA changed).
    pub async fn renewed(&self, expiry: u64, fingerprint: &str, generation: u64) {
        self.update(
            |a| {
                a.state = State::Ready;
                a.expiry = expiry;
                a.fingerprint = fingerprint.to_owned();
                a.generation = generation;
            },
            true,
        )
        .await;
    }

    async fn update(&self, change: impl FnOnce(&mut Attestation), renewed: bool) {
        let Some(conn) = &self.conn else { return };
        let result = async {
            let iface = conn.object_server().interface::<_, Attestation>(OBJECT_PATH).await?;
            let mut a = iface.get_mut().await;
            let before = (a.state, a.expiry, a.fingerprint.clone(), a.generation);
            change(&mut a);
            let emitter = iface.signal_emitter();
            if a.state != before.0 {
                a.state_changed(emitter).await?;
            }
            if a.expiry != before.1 {
                a.certificate_expiry_changed(emitter).await?;
            }
            if a.fingerprint != before.2 {
                a.mesh_ca_fingerprint_changed(emitter).await?;
            }
            if a.generation != before.3 {
                a.mesh_generation_changed(emitter).await?;
            }
            if renewed {
                Attestation::renewed(emitter, a.expiry, &a.fingerprint).await?;
                if !before.2.is_empty() && a.fingerprint != before.2 {
                    Attestation::mesh_ca_rotated(emitter, a.generation, &a.fingerprint).await?;
                }
            }
            Ok::<_, zbus::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("updating the D-Bus status failed: {e}");
        }
    }
}

/// Client side, for `podmesh status`.
#[zbus::proxy(
    interface = "org.podmesh.Attestation1",
    default_service = "org.podmesh.Attestation1",
    default_path = "/org/podmesh/Attestation1"
)]
pub trait Attestation1 {
    fn reattest(&self) -> zbus::Result<()>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn certificate_expiry(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn mesh_ca_fingerprint(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn mesh_generation(&self) -> zbus::Result<u64>;
}
