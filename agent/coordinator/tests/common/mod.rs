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
    let state = state.to_path_buf();
    let coordinator = tokio::task::spawn_blocking(move || Coordinator::open(&state, manifest, config))
        .await
        .unwrap()
        .expect("coordinator opens");
    let coordinator = Arc::new(coordinator);
    let tls = server::tls_config(coordinator.root(), &["localhost".into(), "127.0.0.1".into()]).expect("tls config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
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

/// A free loopback port for a `podmesh-coordinator serve` child.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until the coordinator binary `child` (state dir `state`) answers at `url`; returns
/// its root CA PEM. Panics when it exits first.
pub async fn wait_serving(child: &mut podmesh_tests::harness::Proc, state: &Path, url: &str) -> String {
    loop {
        if let Ok(pem) = std::fs::read_to_string(state.join("root-ca.pem")) {
            let client = Client::new(url, ServerTrust::RootCaPem(pem.clone())).unwrap();
            if client.ca().await.is_ok() {
                return pem;
            }
        }
        assert!(child.exited().is_none(), "coordinator exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
