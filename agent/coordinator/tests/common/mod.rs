//! Test harness: a real coordinator on loopback TLS, and workloads whose SNP evidence comes
//! from tsm-sim's simulated signer (the same code path as the FUSE configfs-tsm emulator).

#![allow(dead_code)]

use coordinator::manifest::Manifest;
use coordinator::server::{self, Limits};
use coordinator::service::{Config, Coordinator};
use coordinator::verify::Anchors;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tsm_sim::signer::{Provider, SnpProvider};
use tsm_sim::snp_chain::{Product, SimAmdChain};
use tsm_sim::snp_report::SnpLaunch;
use tsm_sim::tdx_quote::TdxLaunch;
use wire::api::{self, CertificateRequest, CertificateResponse};
use wire::client::{Client, ClientError, ServerTrust};

pub const MEASUREMENT: [u8; 48] = [0xa1; 48];
pub const WEB_HOST_DATA: [u8; 32] = [0x11; 32];
pub const DB_HOST_DATA: [u8; 32] = [0x22; 32];

/// The simulated guests' TCB (tsm-sim's default) as a manifest `minimum_tcb`: the strictest
/// floor their evidence meets.
pub fn sim_min_tcb() -> serde_json::Value {
    let t = tsm_sim::snp_chain::TcbVersion::default();
    serde_json::json!({ "bootloader": t.bootloader, "tee": t.tee, "snp": t.snp, "microcode": t.microcode })
}

/// A strict SNP manifest for the simulated guests: web and db policies, `measurement` only.
pub fn manifest_json(allow_sim: bool, measurement: &[u8; 48]) -> serde_json::Value {
    serde_json::json!({
        "reference_values": {
            "snp": { "products": ["Milan"], "measurements": [hex::encode(measurement)], "guest_policy": "0x30000",
                     "minimum_tcb": sim_min_tcb(), "max_vmpl": 0 }
        },
        "policies": {
            hex::encode(WEB_HOST_DATA): { "name": "web", "sans": ["web", "web.default.svc", "10.0.0.7", "spiffe://podmesh/web"] },
            hex::encode(DB_HOST_DATA): { "name": "db", "sans": ["10.0.0.8"] }
        },
        "allow_simulated_tee": allow_sim
    })
}

/// A strict TDX manifest pinning everything `launch` reports (MRTD, RTMR0..3, attributes, XFAM,
/// TEE_TCB_SVN as the floor, MRSEAM), with one policy `name` for its MRCONFIGID.
pub fn tdx_manifest_json(allow_sim: bool, launch: &TdxLaunch, name: &str) -> serde_json::Value {
    serde_json::json!({
        "reference_values": { "tdx": {
            "mrtds": [hex::encode(launch.mr_td)],
            "rtmrs": launch.rtmr.iter().map(hex::encode).collect::<Vec<_>>(),
            "attributes": hex::encode(launch.td_attributes.to_le_bytes()),
            "xfam": hex::encode(launch.xfam.to_le_bytes()),
            "minimum_tcb_status": "UpToDate",
            "minimum_tee_tcb_svn": hex::encode(launch.tee_tcb_svn),
            "mrseams": [hex::encode(launch.mr_seam)]
        } },
        "policies": { hex::encode(launch.mr_config_id): { "name": name, "sans": [name, "10.0.1.1"] } },
        "allow_simulated_tee": allow_sim
    })
}

pub fn manifest(value: &serde_json::Value) -> Manifest {
    Manifest::from_json(value.to_string().as_bytes()).expect("test manifest is valid")
}

/// The simulated AMD platform (ARK/ASK/VCEK) and its exported anchor directory.
pub struct SimPlatform {
    pub dir: PathBuf,
    pub anchor: PathBuf,
}

impl SimPlatform {
    pub fn new(base: &Path) -> Self {
        let dir = base.join("tsm-sim");
        let anchor = base.join("sim-anchor");
        let chain = SimAmdChain::load_or_create(&dir, Product::Milan).expect("simulated AMD chain");
        chain.export_anchor(&anchor).expect("export sim anchor");
        Self { dir, anchor }
    }

    /// A guest launched with `measurement` and `host_data`.
    pub fn guest(&self, measurement: [u8; 48], host_data: [u8; 32]) -> SnpProvider {
        self.guest_with(SnpLaunch { measurement, host_data, ..SnpLaunch::default() })
    }

    /// A guest with every launch value chosen (policy, launch TCB, ...), e.g. one that lies.
    pub fn guest_with(&self, launch: SnpLaunch) -> SnpProvider {
        SnpProvider::new(self.chain(), launch, true, 0).expect("simulated SNP provider")
    }

    fn chain(&self) -> SimAmdChain {
        SimAmdChain::load_or_create(&self.dir, Product::Milan).expect("simulated AMD chain")
    }

    /// The CHIP_ID every guest of this platform reports.
    pub fn chip_id(&self) -> [u8; 64] {
        *self.chain().chip_id()
    }

    pub fn anchors(&self) -> Anchors {
        Anchors::default().with_sim(&self.anchor).expect("sim anchor")
    }
}

pub struct Running {
    pub url: String,
    pub root_pem: String,
    pub coordinator: Arc<Coordinator>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn client(&self) -> Client {
        Client::new(&self.url, ServerTrust::RootCaPem(self.root_pem.clone())).expect("client")
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub async fn start(state: &Path, manifest: Option<Manifest>, config: Config, limits: Limits) -> Running {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    start_on(listener, state, manifest, config, limits).await
}

/// [`start`] on `listener` (bound in another network namespace, say); its address is a TLS name.
pub async fn start_on(
    listener: std::net::TcpListener,
    state: &Path,
    manifest: Option<Manifest>,
    config: Config,
    limits: Limits,
) -> Running {
    let state = state.to_path_buf();
    let coordinator = tokio::task::spawn_blocking(move || Coordinator::open(&state, manifest, config))
        .await
        .unwrap()
        .expect("coordinator opens");
    let coordinator = Arc::new(coordinator);
    let addr = listener.local_addr().expect("listener address");
    let tls = server::tls_config(coordinator.root(), &["localhost".into(), "127.0.0.1".into(), addr.ip().to_string()])
        .expect("tls config");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let url = format!("https://{addr}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = server::router(coordinator.clone(), limits);
    let task = tokio::spawn(server::serve(listener, tls, router, limits, async {
        let _ = stopped.await;
    }));
    Running { url, root_pem: coordinator.root().cert_pem().to_owned(), coordinator, stop: Some(stop), task: Some(task) }
}

/// A workload key (P-256) as the daemon would generate it.
pub struct Workload {
    pub key: rcgen::KeyPair,
    pub spki: Vec<u8>,
}

impl Workload {
    pub fn new() -> Self {
        let key = pki::leaf::new_workload_key().unwrap();
        let spki = pki::leaf::spki_of(&key);
        Self { key, spki }
    }
}

/// SNP evidence from the simulated guest with report data bound to (`spki`, `nonce`).
pub fn snp_evidence(guest: &SnpProvider, spki: &[u8], nonce: &[u8]) -> api::Evidence {
    let report_data = api::report_data(spki, nonce);
    let evidence = guest.generate(&report_data, 0).expect("simulated report");
    api::Evidence::Snp { report: evidence.outblob, cert_table: Some(evidence.auxblob) }
}

/// The whole attestation flow as `podmesh attest` runs it.
pub async fn attest(
    client: &Client,
    guest: &SnpProvider,
    workload: &Workload,
) -> Result<CertificateResponse, ClientError> {
    let nonce = client.nonce().await?.nonce;
    let request = CertificateRequest {
        evidence: snp_evidence(guest, &workload.spki, &nonce),
        nonce,
        public_key: Some(workload.spki.clone()),
        csr: None,
    };
    client.certificate(&request).await
}

pub fn sim_config(platform: &SimPlatform) -> Config {
    Config { anchors: platform.anchors(), ..Config::default() }
}

/// An attacker at one source address (a loopback alias such as 127.0.0.2, so the victim on
/// 127.0.0.1 is another address): keep-alive nonce requests and silent connections.
pub mod flood {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use std::net::{IpAddr, SocketAddr};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::net::{TcpSocket, TcpStream};
    use tokio_rustls::client::TlsStream;

    /// What the flood's requests got back.
    #[derive(Debug, Default)]
    pub struct Outcome {
        pub ok: AtomicUsize,
        /// 429 with a Retry-After header.
        pub limited: AtomicUsize,
        pub other: AtomicUsize,
        /// Requests that needed a new connection (the server closed or refused one).
        pub reconnects: AtomicUsize,
    }

    impl std::fmt::Display for Outcome {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "{} ok, {} limited (429 + Retry-After), {} other, {} reconnects",
                self.ok.load(Ordering::Relaxed),
                self.limited.load(Ordering::Relaxed),
                self.other.load(Ordering::Relaxed),
                self.reconnects.load(Ordering::Relaxed)
            )
        }
    }

    pub fn connector(root_pem: &str) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(wire::pem::certificate("root", root_pem).expect("root PEM")).expect("root");
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A TCP connection to `target` from `source`.
    pub async fn tcp_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(target).await
    }

    pub async fn tls_from(
        connector: &tokio_rustls::TlsConnector,
        source: IpAddr,
        target: SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = tcp_from(source, target).await?;
        let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
        tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))?
    }

    /// One `POST` on a new TLS connection from `source`, as `podmesh attest` makes it:
    /// (status, Retry-After seconds, body).
    pub async fn post_from(
        connector: &tokio_rustls::TlsConnector,
        source: IpAddr,
        target: SocketAddr,
        path: &str,
        body: Vec<u8>,
    ) -> std::io::Result<(u16, Option<u64>, Bytes)> {
        let other = |e: hyper::Error| std::io::Error::other(e.to_string());
        let tls = tls_from(connector, source, target).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(other)?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::post(path)
            .header("host", "coordinator")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(body)))
            .map_err(std::io::Error::other)?;
        let response = sender.send_request(request).await.map_err(other)?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let bytes = response.into_body().collect().await.map_err(other)?.to_bytes();
        driver.abort();
        Ok((status, retry_after, bytes))
    }

    /// One renewal as `podmesh attest` makes it, from `source`: nonce, evidence, certificate
    /// (a 429/503 waits its Retry-After and tries again). Returns (certificate request time,
    /// whole renewal time, refusals waited out).
    pub async fn renew_from(
        connector: &tokio_rustls::TlsConnector,
        source: IpAddr,
        target: SocketAddr,
        guest: &tsm_sim::signer::SnpProvider,
        workload: &super::Workload,
    ) -> Result<(Duration, Duration, usize), String> {
        let started = std::time::Instant::now();
        let mut refused = 0;
        loop {
            let (status, after, body) = post_from(connector, source, target, wire::api::NONCE_PATH, Vec::new())
                .await
                .map_err(|e| format!("nonce: {e}"))?;
            if status == 429 || status == 503 {
                refused += 1;
                tokio::time::sleep(Duration::from_secs(after.unwrap_or(1))).await;
                continue;
            }
            if status != 200 {
                return Err(format!("nonce: {status}: {}", String::from_utf8_lossy(&body)));
            }
            let nonce: wire::api::NonceResponse = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let request = wire::api::CertificateRequest {
                evidence: super::snp_evidence(guest, &workload.spki, &nonce.nonce),
                nonce: nonce.nonce,
                public_key: Some(workload.spki.clone()),
                csr: None,
            };
            let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
            let issuing = std::time::Instant::now();
            let (status, after, answer) = post_from(connector, source, target, wire::api::CERTIFICATE_PATH, body)
                .await
                .map_err(|e| format!("certificate: {e}"))?;
            match status {
                200 => return Ok((issuing.elapsed(), started.elapsed(), refused)),
                503 => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_secs(after.unwrap_or(1))).await;
                }
                _ => return Err(format!("certificate: {status}: {}", String::from_utf8_lossy(&answer))),
            }
        }
    }

    type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

    async fn open(connector: &tokio_rustls::TlsConnector, source: IpAddr, target: SocketAddr) -> Option<Sender> {
        let tls = tls_from(connector, source, target).await.ok()?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.ok()?;
        tokio::spawn(conn);
        Some(sender)
    }

    /// `requests` `POST /v1/nonce` over `connections` keep-alive connections from `source`.
    pub async fn nonces(
        root_pem: String,
        source: IpAddr,
        target: SocketAddr,
        requests: usize,
        connections: usize,
        outcome: Arc<Outcome>,
    ) {
        let connector = connector(&root_pem);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..connections.max(1) {
            let (connector, next, outcome) = (connector.clone(), next.clone(), outcome.clone());
            tasks.push(tokio::spawn(async move {
                let mut sender: Option<Sender> = None;
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    if sender.as_ref().is_none_or(|s| s.is_closed()) {
                        outcome.reconnects.fetch_add(1, Ordering::Relaxed);
                        sender = open(&connector, source, target).await;
                    }
                    let Some(s) = sender.as_mut() else {
                        outcome.other.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let request = hyper::Request::post(wire::api::NONCE_PATH)
                        .header("host", "coordinator")
                        .body(Empty::new())
                        .expect("request");
                    let response = match s.send_request(request).await {
                        Ok(r) => r,
                        Err(_) => {
                            outcome.other.fetch_add(1, Ordering::Relaxed);
                            sender = None;
                            continue;
                        }
                    };
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let _ = response.into_body().collect().await;
                    let counter = match (status, retry_after) {
                        (200, _) => &outcome.ok,
                        (429, true) => &outcome.limited,
                        _ => &outcome.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.expect("flood task");
        }
    }

    /// `count` connections from `source` that never send a request: odd ones not even a
    /// ClientHello, even ones stop after the TLS handshake (when the server let them that far).
    /// Returns the streams that connected; they stay open on this side while held.
    pub async fn silent(
        root_pem: &str,
        source: IpAddr,
        target: SocketAddr,
        count: usize,
    ) -> Vec<Box<dyn std::any::Any + Send>> {
        let connector = connector(root_pem);
        let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::with_capacity(count);
        let mut tls = Vec::new();
        for i in 0..count {
            if i % 2 == 0 {
                let connector = connector.clone();
                tls.push(tokio::spawn(async move { tls_from(&connector, source, target).await }));
            } else if let Ok(tcp) = tcp_from(source, target).await {
                held.push(Box::new(tcp));
            }
        }
        for t in tls {
            if let Ok(Ok(stream)) = t.await {
                held.push(Box::new(stream));
            }
        }
        held
    }
}

/// A free loopback port for a `podmesh-coordinator serve` child.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until the coordinator binary `child` (state dir `state`) answers at `url`; returns
/// its root CA PEM. Panics when it exits first or is not serving within 20 s.
pub async fn wait_serving(child: &mut podmesh_tests::harness::Proc, state: &Path, url: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(pem) = std::fs::read_to_string(state.join("root-ca.pem")) {
            let client = Client::new(url, ServerTrust::RootCaPem(pem.clone())).unwrap();
            if client.ca().await.is_ok() {
                return pem;
            }
        }
        if let Some(status) = child.exited() {
            panic!("the coordinator exited ({status}) instead of serving");
        }
        assert!(std::time::Instant::now() < deadline, "the coordinator did not come up within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
