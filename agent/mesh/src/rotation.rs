//! Mesh CA rotation in a running proxy: how the old and the new mesh CA coexist, and how
//! connections made under the old one end.
//!
//! A manifest update gives the mesh a new mesh CA. Each pod notices it within about a second
//! (`podmesh attest` long-polls the coordinator), attests again and writes a certificate under
//! the new CA into the tls dir; [`crate::reload`] sees a `mesh-ca.pem` that differs from the
//! one in use and hands it here. Pods do not rotate at the same instant, and a pod that has
//! not rotated yet trusts only the old CA. So, over `--rotation-grace` G from the moment this
//! proxy sees the new material:
//!
//! ```text
//! 0 .. G/2   trust old + new CA   present the OLD certificate  (peers not yet rotated accept us)
//! G/2 .. G   trust old + new CA   present the NEW certificate
//! G ..       trust only the new   connections made under the old CA are closed
//! ```
//!
//! Two admitted pods that notice the update up to G/2 apart never refuse each other: while
//! one still presents its old certificate, the other still trusts the old CA, and a pod
//! presents its new certificate only once every peer that noticed within G/2 trusts the new
//! CA. A pod that the new manifest no longer admits gets no new certificate; its old one is
//! refused by everyone whose grace ended (see README for the trade-off: the old generation
//! keeps its access for G, never longer).
//!
//! Connections carry a [`Stamp`] taken before their handshake: the identity epoch (which of
//! our certificates they were offered) and, once known, the peer's chain. At the end of the
//! grace every live connection checks itself: made while we presented a superseded
//! certificate, or with a peer chain that the new trust alone no longer verifies, and it is
//! closed (counted as `superseded`). Each stamp is a clone of one `watch` receiver: no
//! registry, no lock, one wake-up per connection per rotation.

use crate::identity::Rules;
use crate::reload::TlsWatch;
use crate::tls::{Material, TlsConfigs, TlsError, TlsPolicy};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// What connections compare themselves against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Epochs {
    /// Bumped whenever we start presenting a certificate under a new mesh CA.
    pub identity: u64,
    /// Connections stamped with an identity below this are superseded.
    pub retire_below: u64,
    /// Bumped at the end of every grace period: connections re-check their peer then.
    pub cut: u64,
}

/// Rotation counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub rotations: AtomicU64,
    pub in_progress: AtomicU64,
    /// Unix seconds of the last completed rotation (0: none).
    pub last_completed: AtomicU64,
}

impl Stats {
    /// Prometheus text of the rotation metrics.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let families = [
            ("podmesh_mesh_ca_rotations_total", "counter", "Mesh CA rotations seen in the tls dir.", &self.rotations),
            (
                "podmesh_mesh_ca_rotation_in_progress",
                "gauge",
                "1 while the old and the new mesh CA are both trusted (the grace period).",
                &self.in_progress,
            ),
            (
                "podmesh_mesh_ca_rotation_completed_timestamp_seconds",
                "gauge",
                "When the last grace period ended (Unix seconds; 0: never).",
                &self.last_completed,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ =
                writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

/// The connections' side: stamps new connections.
#[derive(Debug, Clone)]
pub struct Retirement(watch::Receiver<Epochs>);

impl Retirement {
    /// Take it BEFORE borrowing the TLS configuration: a rotation step publishes the
    /// configuration first and the epochs second, so a race can only make a connection look
    /// older than it is (closed a grace period early), never younger.
    pub fn stamp(&self) -> Stamp {
        let e = *self.0.borrow();
        Stamp { identity: e.identity, cut: e.cut, rx: self.0.clone() }
    }
}

/// Whose certificate a connection's peer presented, for the check at the end of a grace.
pub enum Peer {
    /// No peer certificate (TLS-only ingress): only our own certificate matters.
    None,
    /// Ingress mTLS to `port` (whose allow-list applies): the client's chain.
    Client { port: u16, chain: Vec<CertificateDer<'static>> },
    /// Egress entry `entry` (its identity rule applies): the server's chain, checked like the
    /// handshake did.
    Server { entry: usize, chain: Vec<CertificateDer<'static>>, name: ServerName<'static> },
}

/// One connection's view of rotations.
pub struct Stamp {
    identity: u64,
    cut: u64,
    rx: watch::Receiver<Epochs>,
}

impl Stamp {
    /// Resolves when the connection was made under a superseded mesh CA and its grace is over;
    /// never resolves otherwise.
    pub async fn superseded(mut self, peer: Peer, tls: TlsWatch) {
        loop {
            if self.rx.changed().await.is_err() {
                // The proxy is shutting down; draining decides from here.
                return std::future::pending().await;
            }
            let e = *self.rx.borrow_and_update();
            if e.cut == self.cut {
                continue;
            }
            self.cut = e.cut;
            if self.identity < e.retire_below {
                return;
            }
            let current = tls.borrow().clone();
            let now = UnixTime::now();
            let still_trusted = match &peer {
                Peer::None => true,
                Peer::Client { port, chain } => current.recheck_client(*port, chain, now).is_ok(),
                Peer::Server { entry, chain, name } => current.recheck_server(*entry, chain, name, now).is_ok(),
            };
            if !still_trusted {
                return;
            }
        }
    }
}

/// The files as last accepted.
struct Held {
    mesh_ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Held {
    fn of(m: &Material) -> Self {
        Self { mesh_ca: m.mesh_ca.clone(), chain: m.chain.clone(), key: m.key.clone_key() }
    }

    fn material(&self) -> Material {
        Material { mesh_ca: self.mesh_ca.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

/// The grace period in progress.
struct Overlap {
    /// The superseded material: its CA stays trusted, its certificate is presented until `switch_at`.
    old: Held,
    switch_at: Instant,
    end_at: Instant,
    switched: bool,
}

/// The reloader's side: decides which configuration to publish, and when.
pub struct Rotation {
    dir: PathBuf,
    policy: TlsPolicy,
    /// The identity rules every rebuilt configuration carries.
    rules: Arc<Rules>,
    grace: Duration,
    current: Held,
    overlap: Option<Overlap>,
    epochs: watch::Sender<Epochs>,
    stats: Arc<Stats>,
}

/// Hex SHA-256 of the first certificate, for logs (what `podmesh attest` logs too).
fn fingerprint(certs: &[CertificateDer<'_>]) -> String {
    certs.first().map(|c| Sha256::digest(c.as_ref()).iter().map(|b| format!("{b:02x}")).collect()).unwrap_or_default()
}

impl Rotation {
    /// Starts from the material the proxy was started with (no grace: nothing to overlap).
    pub fn new(
        dir: &Path,
        policy: TlsPolicy,
        rules: Arc<Rules>,
        grace: Duration,
        initial: &Material,
        stats: Arc<Stats>,
    ) -> (Self, Retirement) {
        let (epochs, rx) = watch::channel(Epochs::default());
        let current = Held::of(initial);
        let me = Self { dir: dir.to_path_buf(), policy, rules, grace, current, overlap: None, epochs, stats };
        (me, Retirement(rx))
    }

    /// The configuration for `m`, read from the tls dir: a renewal under the same mesh CA is
    /// used as is (or, during a grace, with the old CA still trusted); a new mesh CA starts
    /// a grace period. `Err` leaves everything as it was.
    pub fn accept(&mut self, m: Material, now: Instant) -> Result<(TlsConfigs, Vec<Step>), TlsError> {
        // The new material must stand on its own (a half-written set fails here).
        let alone =
            TlsConfigs::from_material(&self.dir, Held::of(&m).material(), UnixTime::now(), &self.policy, &self.rules)?;
        if m.mesh_ca == self.current.mesh_ca {
            self.current = Held::of(&m);
            return match &self.overlap {
                None => Ok((alone, Vec::new())),
                Some(_) => Ok((self.build()?, Vec::new())),
            };
        }
        let mut steps = Vec::new();
        if self.overlap.is_some() {
            // A second update within the grace: the first one's old CA goes now.
            steps.push(Step::Retire);
        }
        let old = std::mem::replace(&mut self.current, Held::of(&m));
        tracing::info!(
            PODMESH_EVENT = "mesh_ca_rotation_started",
            PODMESH_MESH_CA_SHA256 = %fingerprint(&m.mesh_ca),
            PODMESH_OLD_MESH_CA_SHA256 = %fingerprint(&old.mesh_ca),
            "new mesh CA {} in {}: trusting it and the old one ({}) for {:?}, presenting the old certificate for the first half",
            fingerprint(&m.mesh_ca),
            self.dir.display(),
            fingerprint(&old.mesh_ca),
            self.grace
        );
        self.stats.rotations.fetch_add(1, Ordering::Relaxed);
        self.stats.in_progress.store(1, Ordering::Relaxed);
        self.overlap =
            Some(Overlap { old, switch_at: now + self.grace / 2, end_at: now + self.grace, switched: false });
        match self.build() {
            Ok(configs) => Ok((configs, steps)),
            Err(e) => {
                // Our old certificate is no longer usable (expired): present the new one now.
                tracing::info!(
                    PODMESH_EVENT = "mesh_ca_identity_switched",
                    "the old certificate cannot be presented ({e}): presenting the new one at once"
                );
                if let Some(o) = self.overlap.as_mut() {
                    o.switched = true;
                }
                steps.push(Step::Switched);
                Ok((self.build()?, steps))
            }
        }
    }

    /// Whether [`Rotation::advance`] has something to do at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.overlap.as_ref().is_some_and(|o| (!o.switched && now >= o.switch_at) || now >= o.end_at)
    }

    /// Moves the grace period on: switch our certificate at G/2, drop the old CA at G.
    pub fn advance(&mut self, now: Instant) -> Result<Option<(TlsConfigs, Step)>, TlsError> {
        let Some(o) = self.overlap.as_mut() else { return Ok(None) };
        if now >= o.end_at {
            self.overlap = None;
            let configs = TlsConfigs::from_material(
                &self.dir,
                self.current.material(),
                UnixTime::now(),
                &self.policy,
                &self.rules,
            )?;
            return Ok(Some((configs, Step::Retire)));
        }
        if !o.switched && now >= o.switch_at {
            o.switched = true;
            tracing::info!(
                PODMESH_EVENT = "mesh_ca_identity_switched",
                "presenting the certificate under the new mesh CA {} (the old CA stays trusted until the grace ends)",
                fingerprint(&self.current.mesh_ca)
            );
            return Ok(Some((self.build()?, Step::Switched)));
        }
        Ok(None)
    }

    /// The configuration of the current phase.
    fn build(&self) -> Result<TlsConfigs, TlsError> {
        let Some(o) = &self.overlap else {
            return TlsConfigs::from_material(
                &self.dir,
                self.current.material(),
                UnixTime::now(),
                &self.policy,
                &self.rules,
            );
        };
        let presented = if o.switched { &self.current } else { &o.old };
        let mut m = presented.material();
        m.mesh_ca = [self.current.mesh_ca.clone(), o.old.mesh_ca.clone()].concat();
        TlsConfigs::from_material(&self.dir, m, UnixTime::now(), &self.policy, &self.rules)
    }

    /// Tells the connections, AFTER the configuration of the step was published.
    pub fn announce(&self, step: Step) {
        match step {
            Step::Switched => self.epochs.send_modify(|e| e.identity += 1),
            Step::Retire => {
                self.epochs.send_modify(|e| {
                    // No switch since the last cut (a second update within the grace, whose
                    // certificate we never presented): what we presented is superseded all the same.
                    if e.identity <= e.retire_below {
                        e.identity += 1;
                    }
                    e.retire_below = e.identity;
                    e.cut += 1;
                });
                if self.overlap.is_none() {
                    self.stats.in_progress.store(0, Ordering::Relaxed);
                }
                let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                self.stats.last_completed.store(unix, Ordering::Relaxed);
                tracing::info!(
                    PODMESH_EVENT = "mesh_ca_rotated",
                    PODMESH_MESH_CA_SHA256 = %fingerprint(&self.current.mesh_ca),
                    "grace over: only the mesh CA {} is trusted; connections made under the old one are being closed",
                    fingerprint(&self.current.mesh_ca)
                );
            }
        }
    }
}

/// What a published configuration means for open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// We present a certificate under the new mesh CA from now on.
    Switched,
    /// The old mesh CA is no longer trusted: connections made under it end.
    Retire,
}

#[cfg(test)]
mod tests {
    use super::*;
    use podmesh_tests::proxy_certs::{Identity, TestMesh};
    use rustls_pki_types::pem::PemObject;

    const DAY: Duration = Duration::from_secs(86_400);

    fn material(id: &Identity) -> Material {
        Material {
            mesh_ca: CertificateDer::pem_slice_iter(id.mesh_ca_pem.as_bytes()).map(Result::unwrap).collect(),
            chain: CertificateDer::pem_slice_iter(id.chain_pem.as_bytes()).map(Result::unwrap).collect(),
            key: PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
        }
    }

    /// The leaf our mTLS server presents to a client holding `client` and trusting `cas` (in
    /// memory, no sockets).
    fn presented(configs: &TlsConfigs, client: &Identity, cas: [&Identity; 2]) -> Result<Vec<u8>, rustls::Error> {
        let m = material(client);
        let mut roots = rustls::RootCertStore::empty();
        for pem in cas.map(|id| &id.mesh_ca_pem) {
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(m.chain, m.key)?;
        let name = ServerName::try_from("pod.mesh").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut s = rustls::ServerConnection::new(configs.mtls_server.clone())?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(c.peer_certificates().unwrap()[0].to_vec());
            }
        }
        panic!("handshake did not finish")
    }

    fn leaf(id: &Identity) -> Vec<u8> {
        material(id).chain[0].to_vec()
    }

    #[tokio::test]
    async fn old_and_new_coexist_for_the_grace_then_the_old_is_cut() {
        let (m1, m2) = (TestMesh::new().unwrap(), TestMesh::new().unwrap());
        let sans = ["pod.mesh"];
        let (a1, a2) = (m1.issue("a", &sans, DAY).unwrap(), m2.issue("a", &sans, DAY).unwrap());
        let (b1, b2) = (m1.issue("b", &sans, DAY).unwrap(), m2.issue("b", &sans, DAY).unwrap());
        let dir = Path::new("/tls");
        let grace = Duration::from_secs(10);
        let stats = Arc::new(Stats::default());
        let (mut r, retirement) =
            Rotation::new(dir, TlsPolicy::default(), Arc::default(), grace, &material(&a1), stats.clone());
        let (tx, tls) = watch::channel(Arc::new(
            TlsConfigs::from_material(dir, material(&a1), UnixTime::now(), &TlsPolicy::default(), &Rules::default())
                .unwrap(),
        ));
        let publish = |r: &Rotation, configs: TlsConfigs, steps: &[Step]| {
            tx.send_replace(Arc::new(configs));
            for s in steps {
                r.announce(*s);
            }
        };
        let is_cut = |stamp: Stamp, peer: Peer| {
            let fut = stamp.superseded(peer, tls.clone());
            async move { tokio::time::timeout(Duration::from_millis(100), fut).await.is_ok() }
        };
        let chain = |id: &Identity| Peer::Client { port: 0, chain: material(id).chain };
        // Clients that trust both CAs: these checks are about what we present.
        let both = [&a1, &a2];

        // Before: a renewal under the same CA is no rotation.
        let before = retirement.stamp();
        let t0 = Instant::now();
        let (configs, steps) = r.accept(material(&a1), t0).unwrap();
        assert!(steps.is_empty() && !r.due(t0 + grace));
        publish(&r, configs, &steps);

        // The new CA arrives: both trusted, the old certificate still presented.
        let (configs, steps) = r.accept(material(&a2), t0).unwrap();
        assert!(steps.is_empty());
        assert_eq!(presented(&configs, &b1, both).unwrap(), leaf(&a1), "peers not yet rotated must accept us");
        assert_eq!(presented(&configs, &b2, both).unwrap(), leaf(&a1));
        publish(&r, configs, &steps);
        assert_eq!(stats.in_progress.load(Ordering::Relaxed), 1);
        let phase1 = retirement.stamp();

        // Half way: the new certificate, both CAs still trusted.
        assert!(!r.due(t0 + grace / 2 - Duration::from_millis(1)) && r.due(t0 + grace / 2));
        let (configs, step) = r.advance(t0 + grace / 2).unwrap().unwrap();
        assert_eq!(step, Step::Switched);
        assert_eq!(presented(&configs, &b1, both).unwrap(), leaf(&a2));
        publish(&r, configs, &[step]);
        let phase2_old_peer = retirement.stamp();
        let phase2_new_peer = retirement.stamp();

        // Grace over: only the new CA; what was made under the old one is cut, the rest stays.
        let (configs, step) = r.advance(t0 + grace).unwrap().unwrap();
        assert_eq!(step, Step::Retire);
        let err = presented(&configs, &b1, both).expect_err("an old-CA client is refused after the grace");
        assert!(err.to_string().contains("certificate"), "{err}");
        assert_eq!(presented(&configs, &b2, both).unwrap(), leaf(&a2));
        let (c_before, c1, c2o, c2n) = (
            is_cut(before, chain(&b2)),
            is_cut(phase1, chain(&b2)),
            is_cut(phase2_old_peer, chain(&b1)),
            is_cut(phase2_new_peer, chain(&b2)),
        );
        let untouched = is_cut(retirement.stamp(), Peer::None);
        publish(&r, configs, &[step]);
        assert!(c_before.await, "made before the rotation: cut");
        assert!(c1.await, "made while we presented the old certificate: cut");
        assert!(c2o.await, "peer under the old CA: cut");
        assert!(!c2n.await, "both under the new CA: kept");
        assert!(!untouched.await, "made after the grace: kept");
        assert_eq!(stats.in_progress.load(Ordering::Relaxed), 0);
        assert_eq!(stats.rotations.load(Ordering::Relaxed), 1);
        assert!(!r.due(t0 + grace * 10));

        // A half-written set (new CA, old key and chain) is refused and changes nothing.
        let m3 = TestMesh::new().unwrap();
        let mut torn = material(&a2);
        torn.mesh_ca = material(&m3.issue("a", &sans, DAY).unwrap()).mesh_ca;
        assert!(r.accept(torn, t0 + grace).is_err());
        assert!(!r.due(t0 + grace * 10) && stats.rotations.load(Ordering::Relaxed) == 1);
    }
}
