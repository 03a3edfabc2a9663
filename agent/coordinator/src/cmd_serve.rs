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
    /// Manifest JSON; required on first start. Later the persisted history is authoritative: a
    /// file that is not the current manifest is refused (a restart must not roll back an update)
    /// unless --apply-manifest is given. Manifests are strict: SNP needs measurements,
    /// guest_policy and minimum_tcb; TDX needs mrtds, rtmrs (RTMR0..2), attributes and xfam; write
    /// "any" to accept every value of one (logged as a warning). Example:
    /// {"reference_values": {"snp": {"measurements": ["<96 hex>"], "guest_policy": "0x30000",
    /// "minimum_tcb": {"bootloader": 10, "tee": 0, "snp": 25, "microcode": 84}}},
    /// "policies": {"<HOSTDATA 64 hex>": {"name": "web", "sans": ["web"]}}}
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Make a --manifest that differs from the current one the next generation (a mesh CA
    /// rotation, exactly as `PUT /v1/manifest`), instead of refusing to start.
    #[arg(long, requires = "manifest")]
    pub apply_manifest: bool,
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
    /// Seconds a new connection may take to finish its TLS handshake.
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// Seconds to receive a request's headers, also between keep-alive requests (idle connections).
    #[arg(long, default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Open connections at most (handshaking included); more are closed at accept. Lowered to
    /// fit the open-file limit.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Open connections per client address (IPv6: per /64).
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_source: usize,
    /// Outstanding nonces at most; more `POST /v1/nonce` get 429 with Retry-After.
    #[arg(long, default_value_t = coordinator::service::MAX_OUTSTANDING_NONCES)]
    pub max_nonces: usize,
    /// Outstanding nonces per client address (IPv6: per /64).
    #[arg(long, default_value_t = coordinator::service::MAX_NONCES_PER_SOURCE)]
    pub max_nonces_per_source: usize,
    /// Evidence verifications running at once. Default: the number of CPUs.
    #[arg(long)]
    pub verify_workers: Option<usize>,
    /// Certificate requests waiting for a verification worker; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub verify_queue: usize,
}

/// The soft open-file limit, from /proc/self/limits (None when unreadable).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
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
    if [
        args.cert_lifetime_secs,
        args.nonce_ttl_secs,
        args.request_timeout_secs,
        args.handshake_timeout_secs,
        args.header_timeout_secs,
    ]
    .contains(&0)
        || [args.max_connections, args.max_connections_per_source, args.max_nonces, args.max_nonces_per_source]
            .contains(&0)
        || args.verify_workers == Some(0)
    {
        bail!("every --*-secs, --max-* and --verify-workers must be at least 1");
    }
    let config = Config {
        cert_lifetime: Duration::from_secs(args.cert_lifetime_secs),
        nonce_ttl: Duration::from_secs(args.nonce_ttl_secs),
        anchors,
        owner,
        max_nonces: args.max_nonces,
        max_nonces_per_source: args.max_nonces_per_source,
        apply_manifest: args.apply_manifest,
    };
    let state = args.state.clone();
    let coordinator = tokio::task::spawn_blocking(move || Coordinator::open(&state, manifest, config)).await??;
    let coordinator = Arc::new(coordinator);
    let sans = if args.sans.is_empty() { default_sans(args.listen) } else { args.sans.clone() };
    let tls = server::tls_config(coordinator.root(), &sans)?;
    // Leave room for the state dir, the listener and the runtime's own descriptors.
    let mut max_connections = args.max_connections;
    if let Some(fits) = open_file_limit().map(|n| n.saturating_sub(64).max(1)) {
        if fits < max_connections {
            tracing::warn!(
                PODMESH_EVENT = "coordinator_connection_limit_lowered",
                max_connections = fits,
                "--max-connections {max_connections} lowered to {fits} to fit the open-file limit (raise LimitNOFILE)"
            );
            max_connections = fits;
        }
    }
    let defaults = Limits::default();
    let limits = Limits {
        body_bytes: args.body_limit,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        max_connections,
        max_connections_per_source: args.max_connections_per_source,
        verify_workers: args.verify_workers.unwrap_or(defaults.verify_workers),
        verify_queue: args.verify_queue,
        ..defaults
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
