//! `podmesh proxy`: the mesh data plane of the pod (runs inside the pod's network namespace).
//!
//! Reads the mesh configuration like `podmesh config check` (environment > `--env-file` >
//! kernel command line), then runs `mesh::proxy`: TLS material verified, listeners bound,
//! interception installed, and only then the deny table removed and `READY=1` sent.
//! SIGTERM/SIGINT: stop accepting, drain, exit 0. Any startup failure: exit 1, deny table
//! untouched.

use crate::cli::{parse_on_off, parse_u32, Dur, NetnsArg, SourceArgs, TlsDirArg};
use anyhow::Context;
use mesh::proxy::{defaults, Options, Plan};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    tls_dir: TlsDirArg,
    #[command(flatten)]
    sources: SourceArgs,
    /// The proxy enters this namespace before anything else: listeners, interception rules,
    /// routes and the deny table all live there (needs CAP_SYS_ADMIN at startup).
    #[command(flatten)]
    netns: NetnsArg,
    /// Transparent listener for mTLS ingress (every intercepted port not listed otherwise).
    #[arg(long, default_value_t = defaults::MTLS_PORT)]
    mtls_port: u16,
    /// Transparent listener for `#false` ingress entries (TLS, no client certificate).
    #[arg(long, default_value_t = defaults::TLS_PORT)]
    tls_port: u16,
    /// fwmark of intercepted packets (policy routing to the local table).
    #[arg(long, default_value_t = defaults::TPROXY_MARK, value_parser = parse_u32)]
    tproxy_mark: u32,
    /// Routing table holding the `local default dev lo` route.
    #[arg(long, default_value_t = defaults::ROUTE_TABLE, value_parser = parse_u32)]
    route_table: u32,
    /// SO_MARK of the proxy's upstream sockets (must differ from --tproxy-mark; 0 = none).
    #[arg(long, default_value_t = defaults::UPSTREAM_MARK, value_parser = parse_u32)]
    upstream_mark: u32,
    /// Limit for a TLS handshake (e.g. 10s, 500ms).
    #[arg(long, default_value_t = Dur(defaults::HANDSHAKE_TIMEOUT))]
    handshake_timeout: Dur,
    /// Limit for resolving and connecting to an upstream.
    #[arg(long, default_value_t = Dur(defaults::CONNECT_TIMEOUT))]
    connect_timeout: Dur,
    /// Close connections without traffic in either direction for this long.
    #[arg(long, default_value_t = Dur(defaults::IDLE_TIMEOUT))]
    idle_timeout: Dur,
    /// Maximum open proxied connections; more are closed at once.
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS)]
    max_connections: u32,
    /// Maximum ingress connections still in their TLS handshake (not yet authenticated);
    /// more are closed at once. They never count against --max-connections.
    #[arg(long, default_value_t = defaults::MAX_HANDSHAKES, value_parser = clap::value_parser!(u32).range(1..))]
    max_handshakes: u32,
    /// Of those, at most this many from one source address (IPv6: one /64).
    #[arg(long, default_value_t = defaults::MAX_HANDSHAKES_PER_SOURCE, value_parser = clap::value_parser!(u32).range(1..))]
    max_handshakes_per_source: u32,
    /// On SIGTERM, how long open connections may finish.
    #[arg(long, default_value_t = Dur(defaults::DRAIN_TIMEOUT))]
    drain_timeout: Dur,
    /// How often the tls dir is checked for renewed material.
    #[arg(long, default_value_t = Dur(defaults::RELOAD_INTERVAL))]
    reload_interval: Dur,
    /// After a manifest update brings a new mesh CA: how long the old CA stays trusted (our
    /// own certificate switches half way), after which connections made under it are closed.
    #[arg(long, env = "PODMESH_ROTATION_GRACE", default_value_t = Dur(defaults::ROTATION_GRACE))]
    rotation_grace: Dur,
    /// Threads serving connections, each a single-threaded event loop (default: half the CPUs, rounded up).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// TLS session resumption (tickets, ≤ 1 h): `off` makes every connection a full mTLS
    /// handshake, on both the ingress (no tickets) and the egress (no session cache) side.
    #[arg(long, env = "PODMESH_TLS_RESUMPTION", default_value = "on", value_name = "on|off", action = clap::ArgAction::Set, value_parser = parse_on_off)]
    tls_resumption: bool,
    /// TLS 1.3 suites, most preferred first, comma-separated (e.g.
    /// TLS13_AES_256_GCM_SHA384,TLS13_AES_128_GCM_SHA256). Default: AES-128-GCM, AES-256-GCM,
    /// ChaCha20-Poly1305.
    #[arg(long, env = "PODMESH_TLS13_CIPHERS", value_parser = parse_tls13_ciphers)]
    tls13_ciphers: Option<Tls13Ciphers>,
    /// Key exchange of every handshake: `hybrid` offers and prefers X25519MLKEM768 (post-quantum
    /// hybrid) and falls back to X25519/P-256/P-384; `classical` offers no ML-KEM; `pq-only`
    /// refuses peers without X25519MLKEM768 (and so TLS 1.2).
    #[arg(long, env = "PODMESH_KEY_EXCHANGE", default_value = "hybrid", value_name = "classical|hybrid|pq-only", value_parser = parse_key_exchange)]
    key_exchange: mesh::tls::KeyExchange,
}

/// Validated `--tls13-ciphers` (a newtype: clap would read a bare `Vec` as repeated flags).
#[derive(Debug, Clone)]
struct Tls13Ciphers(Vec<String>);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Before any thread exists: every thread we start (event loops, the blocking pool) and
    // every child (nft, ip) inherits the namespace and the reduced capabilities.
    if let Some(ns) = &args.netns.name {
        crate::sys::enter_netns(ns).with_context(|| format!("--netns {ns}"))?;
        tracing::info!(PODMESH_EVENT = "netns_entered", NETNS = ns.as_str(), "running inside network namespace {ns}");
    }
    let loaded = match args.sources.load() {
        Ok(l) => l,
        Err(e) => {
            // Like attest: a configuration (or initdata) nobody may trust is final, not retried.
            tracing::error!(PODMESH_EVENT = e.event(), "mesh configuration: {e}; the deny table stays in place");
            return Ok(ExitCode::from(mesh::lifecycle::EXIT_CONFIG));
        }
    };
    loaded.log_warnings();
    let kept = crate::sys::keep_only(crate::sys::PROXY_CAPS).context("dropping capabilities")?;
    tracing::info!(PODMESH_EVENT = "capabilities_dropped", "capabilities kept: {}", kept.join(", "));
    let threads = args.worker_threads.unwrap_or_else(default_threads);
    // Startup, admin, reload and the first event loop run on this thread; `proxy::run`
    // starts the other event loops (see mesh::event_loops for why not work stealing).
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let Some(config) = loaded.mesh else {
        tracing::info!(
            PODMESH_EVENT = "proxy_disabled",
            "no mesh configured: nothing to proxy, idling (podmesh attest opens the pod)"
        );
        mesh::lifecycle::notify_ready(None, None);
        runtime.block_on(async {
            mesh::lifecycle::shutdown_signal().context("installing the SIGTERM/SIGINT handlers")?.stopping().await;
            anyhow::Ok(())
        })?;
        return Ok(ExitCode::SUCCESS);
    };
    let plan = Plan::from_config(&config);
    let opts = Options {
        tls_dir: args.tls_dir.path,
        mtls_port: args.mtls_port,
        tls_port: args.tls_port,
        tproxy_mark: args.tproxy_mark,
        route_table: args.route_table,
        upstream_mark: args.upstream_mark,
        timeouts: mesh::Timeouts {
            handshake: args.handshake_timeout.0,
            connect: args.connect_timeout.0,
            idle: args.idle_timeout.0,
        },
        max_connections: args.max_connections,
        max_handshakes: args.max_handshakes,
        max_handshakes_per_source: args.max_handshakes_per_source,
        drain_timeout: args.drain_timeout.0,
        reload_interval: args.reload_interval.0,
        rotation_grace: args.rotation_grace.0,
        // Already inside it (see above): nft and ip run in our own namespace.
        netns: None,
        tls: mesh::tls::TlsPolicy {
            resumption: args.tls_resumption,
            tls13_ciphers: args.tls13_ciphers.map(|c| c.0),
            key_exchange: args.key_exchange,
        },
        threads,
    };
    let config_json =
        serde_json::json!({ "config": config, "identity_rules": plan.identity_rules(), "options": opts }).to_string();
    runtime.block_on(async move {
        let stopping = mesh::lifecycle::shutdown_signal().context("installing the SIGTERM/SIGINT handlers")?.stopping();
        mesh::proxy::run(plan, opts, config_json, stopping, || mesh::lifecycle::notify_ready(None, None))
            .await
            .context("podmesh proxy")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Half the CPUs, rounded up: the proxy shares the podVM with the workload it fronts, and
/// one event loop carries about 5 Gbit/s of AES-GCM. On 2 vCPUs one loop also measured
/// better than two (p50/p99 at a fixed rate, handshakes/s: fewer threads to wake).
fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.div_ceil(2).min(mesh::proxy::MAX_THREADS)
}

fn parse_tls13_ciphers(s: &str) -> Result<Tls13Ciphers, String> {
    mesh::tls::parse_tls13_ciphers(s).map(Tls13Ciphers).map_err(|e| e.to_string())
}

fn parse_key_exchange(s: &str) -> Result<mesh::tls::KeyExchange, String> {
    mesh::tls::KeyExchange::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_exchange_parses_or_explains() {
        assert_eq!(parse_key_exchange("pq-only"), Ok(mesh::tls::KeyExchange::PqOnly));
        let e = parse_key_exchange("kyber").unwrap_err();
        assert!(e.contains("\"kyber\"") && e.contains("classical, hybrid"), "{e}");
    }
}
