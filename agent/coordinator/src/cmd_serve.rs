//! `podmesh-coordinator serve`: the attestation/CA API over HTTPS until SIGTERM/SIGINT.

use anyhow::{bail, Context, Result};
use clap::Args;
use coordinator::manifest::Manifest;
use coordinator::owner::OwnerToken;
use coordinator::server::{self, Limits};
use coordinator::service::{Config, Coordinator};
use coordinator::verify::Anchors;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8443 or [::]:8443.
    #[arg(long)]
    pub listen: SocketAddr,
    /// State directory (root CA, mesh CA generations, manifest history); created if missing.
    #[arg(long)]
    pub state: PathBuf,
    /// Manifest JSON; required on first start. When it differs from the persisted manifest it
    /// becomes a new generation and the mesh CA rotates. Manifests are strict: SNP needs
    /// measurements, guest_policy and minimum_tcb; TDX needs mrtds, rtmrs (RTMR0..2), attributes
    /// and xfam; write "any" to accept every value of one (logged as a warning). Example:
    /// {"reference_values": {"snp": {"measurements": ["<96 hex>"], "guest_policy": "0x30000",
    /// "minimum_tcb": {"bootloader": 10, "tee": 0, "snp": 25, "microcode": 84}}},
    /// "policies": {"<HOSTDATA 64 hex>": {"name": "web", "sans": ["web"]}}}
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// File with the hex SHA-256 of the owner's bearer token; without it `PUT /v1/manifest` is disabled.
    #[arg(long)]
    pub owner_token_file: Option<PathBuf>,
    /// tsm-sim anchor directory (ark.pem + ask.pem for SNP, intel_root.der + collateral.json for TDX). Used for evidence only when the manifest sets
    /// allow_simulated_tee; otherwise only to tell such evidence apart in rejections.
    #[arg(long)]
    pub sim_anchor: Option<PathBuf>,
    /// TDX collateral directory (see tee::tdx::load_collateral_dir); TDX quotes are refused without it.
    #[arg(long)]
    pub tdx_collateral: Option<PathBuf>,
    /// Directory of VCEKs named <CHIP_ID hex>.der for SNP reports sent without a certificate table.
    #[arg(long)]
    pub vcek_cache: Option<PathBuf>,
    /// Subject alternative names of the coordinator's TLS certificate (repeatable). Default:
    /// localhost, 127.0.0.1, ::1 and the listen address when it is not a wildcard.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Mesh certificate lifetime in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    pub cert_lifetime_secs: u64,
    /// Nonce lifetime in seconds.
    #[arg(long, default_value_t = 60)]
    pub nonce_ttl_secs: u64,
    /// Maximum request body in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub body_limit: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_secs: u64,
}

fn default_sans(listen: SocketAddr) -> Vec<String> {
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        sans.push(listen.ip().to_string());
    }
    sans
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let manifest = match &args.manifest {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("reading manifest {}", path.display()))?;
            Some(Manifest::from_json(&text).with_context(|| format!("manifest {}", path.display()))?)
        }
        None => None,
    };
    let mut anchors = Anchors::default();
    if let Some(dir) = &args.tdx_collateral {
        anchors.tdx_collateral = Some(Anchors::load_tdx_collateral(dir)?);
    }
    if let Some(dir) = &args.sim_anchor {
        anchors = anchors.with_sim(dir)?;
        tracing::warn!(PODMESH_EVENT = "coordinator_sim_anchor_loaded", anchor = %dir.display(), "simulated TEE anchor loaded from {} (accepted only if the manifest sets allow_simulated_tee)", dir.display());
    }
    anchors.vcek_cache = args.vcek_cache.clone();
    let owner = args.owner_token_file.as_deref().map(OwnerToken::from_hash_file).transpose()?;
    if owner.is_none() {
        tracing::info!(
            PODMESH_EVENT = "coordinator_manifest_updates_disabled",
            "no --owner-token-file: PUT /v1/manifest is disabled"
        );
    }
    if args.cert_lifetime_secs == 0 || args.nonce_ttl_secs == 0 || args.request_timeout_secs == 0 {
        bail!("--cert-lifetime-secs, --nonce-ttl-secs and --request-timeout-secs must be at least 1");
    }
    let config = Config {
        cert_lifetime: Duration::from_secs(args.cert_lifetime_secs),
        nonce_ttl: Duration::from_secs(args.nonce_ttl_secs),
        anchors,
        owner,
    };
    let state = args.state.clone();
    let coordinator = tokio::task::spawn_blocking(move || Coordinator::open(&state, manifest, config)).await??;
    let coordinator = Arc::new(coordinator);
    let sans = if args.sans.is_empty() { default_sans(args.listen) } else { args.sans.clone() };
    let tls = server::tls_config(coordinator.root(), &sans)?;
    let limits = Limits {
        body_bytes: args.body_limit,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        ..Limits::default()
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let fingerprint = hex::encode(Sha256::digest(coordinator.root().cert_der()));
    tracing::info!(
        PODMESH_EVENT = "coordinator_listening",
        listen = %args.listen,
        root_ca_sha256 = %fingerprint,
        "coordinator listening on https://{} (root CA SHA-256 {fingerprint}, TLS names {})", args.listen, sans.join(",")
    );
    server::serve(listener, tls, server::router(coordinator, limits), limits, shutdown_signal()).await;
    tracing::info!(PODMESH_EVENT = "coordinator_stopped", "coordinator stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the coordinator");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(PODMESH_EVENT = "coordinator_shutdown_requested", "shutdown requested");
}
