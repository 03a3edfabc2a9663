//! `podmesh proxy`: the mesh data plane of the pod (runs inside the pod's network namespace).
//!
//! Reads the mesh configuration like `podmesh config check` (environment > `--env-file` >
//! kernel command line), then runs `mesh::proxy`: TLS material verified, listeners bound,
//! interception installed, and only then the deny table removed and `READY=1` sent.
//! SIGTERM/SIGINT: stop accepting, drain, exit 0. Any startup failure: exit 1, deny table
//! untouched.

use anyhow::Context;
use mesh::proxy::{Options, Plan};
use std::{path::PathBuf, process::ExitCode, time::Duration};

#[derive(clap::Args)]
pub struct Args {
    /// Directory with mesh-ca.pem, certChain.pem (leaf + intermediate) and key.pem.
    #[arg(long, env = "PODMESH_TLS_DIR", default_value = "/run/podmesh/tls")]
    tls_dir: PathBuf,
    /// Extra configuration source (systemd EnvironmentFile syntax).
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Kernel command line to read `podmesh.*` settings from.
    #[arg(long, default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// Transparent listener for mTLS ingress (every intercepted port not listed otherwise).
    #[arg(long, default_value_t = 15006)]
    mtls_port: u16,
    /// Transparent listener for `#false` ingress entries (TLS, no client certificate).
    #[arg(long, default_value_t = 15007)]
    tls_port: u16,
    /// fwmark of intercepted packets (policy routing to the local table).
    #[arg(long, default_value = "0x1", value_parser = parse_u32)]
    tproxy_mark: u32,
    /// Routing table holding the `local default dev lo` route.
    #[arg(long, default_value = "100", value_parser = parse_u32)]
    route_table: u32,
    /// SO_MARK of the proxy's upstream sockets (must differ from --tproxy-mark; 0 = none).
    #[arg(long, default_value = "0x2", value_parser = parse_u32)]
    upstream_mark: u32,
    /// Limit for a TLS handshake (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Limit for resolving and connecting to an upstream.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Close connections without traffic in either direction for this long.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Maximum open proxied connections; more are closed at once.
    #[arg(long, default_value_t = 65_536)]
    max_connections: u32,
    /// Maximum ingress connections still in their TLS handshake (not yet authenticated);
    /// more are closed at once. They never count against --max-connections.
    #[arg(long, default_value_t = mesh::proxy::DEFAULT_MAX_HANDSHAKES, value_parser = clap::value_parser!(u32).range(1..))]
    max_handshakes: u32,
    /// Of those, at most this many from one source address (IPv6: one /64).
    #[arg(long, default_value_t = mesh::proxy::DEFAULT_MAX_HANDSHAKES_PER_SOURCE, value_parser = clap::value_parser!(u32).range(1..))]
    max_handshakes_per_source: u32,
    /// On SIGTERM, how long open connections may finish.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// How often the tls dir is checked for renewed material.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    reload_interval: Duration,
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
    let sources = mesh::config::Sources::system(args.env_file.as_deref(), Some(&args.cmdline))
        .context("reading the mesh configuration")?;
    let config = mesh::config::load(&sources).context("mesh configuration")?;
    let threads = args.worker_threads.unwrap_or_else(default_threads);
    // Startup, admin, reload and the first event loop run on this thread; `proxy::run`
    // starts the other event loops (see mesh::event_loops for why not work stealing).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let Some(config) = config else {
        tracing::info!(PODMESH_EVENT = "proxy_disabled", "no mesh configured: nothing to proxy, idling (podmesh attest opens the pod)");
        notify_ready();
        runtime.block_on(async {
            shutdown_signal().await?.await;
            anyhow::Ok(())
        })?;
        return Ok(ExitCode::SUCCESS);
    };
    let plan = Plan::from_config(&config);
    let opts = Options {
        tls_dir: args.tls_dir,
        mtls_port: args.mtls_port,
        tls_port: args.tls_port,
        tproxy_mark: args.tproxy_mark,
        route_table: args.route_table,
        upstream_mark: args.upstream_mark,
        timeouts: mesh::Timeouts {
            handshake: args.handshake_timeout,
            connect: args.connect_timeout,
            idle: args.idle_timeout,
        },
        max_connections: args.max_connections,
        max_handshakes: args.max_handshakes,
        max_handshakes_per_source: args.max_handshakes_per_source,
        drain_timeout: args.drain_timeout,
        reload_interval: args.reload_interval,
        netns: None,
        tls: mesh::tls::TlsPolicy {
            resumption: args.tls_resumption,
            tls13_ciphers: args.tls13_ciphers.map(|c| c.0),
            key_exchange: args.key_exchange,
        },
        threads,
    };
    let config_json = serde_json::json!({ "config": config, "options": opts }).to_string();
    runtime.block_on(async move {
        let signals = shutdown_signal().await?;
        let stopping = async move {
            signals.await;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        };
        mesh::proxy::run(plan, opts, config_json, stopping, notify_ready).await.context("podmesh proxy")
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

fn notify_ready() {
    // Not under systemd (no NOTIFY_SOCKET) this is a no-op.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(PODMESH_EVENT = "notify_failed", "sd_notify READY=1 failed: {e}");
    }
}

/// Installs the SIGTERM/SIGINT handlers now (so an early signal is not lost) and returns a
/// future that resolves on the first of them.
async fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a 32-bit number (decimal or 0x-hex): {e}"))
}

/// `on`/`off` (also `true`/`false`, `yes`/`no`, `1`/`0`): the kernel command line's words.
fn parse_on_off(s: &str) -> Result<bool, String> {
    crate::attest::kernel_cmdline::on_off(s).ok_or_else(|| format!("{s:?} is neither on nor off"))
}

fn parse_tls13_ciphers(s: &str) -> Result<Tls13Ciphers, String> {
    mesh::tls::parse_tls13_ciphers(s).map(Tls13Ciphers).map_err(|e| e.to_string())
}

fn parse_key_exchange(s: &str) -> Result<mesh::tls::KeyExchange, String> {
    mesh::tls::KeyExchange::parse(s).map_err(|e| e.to_string())
}

/// `500ms`, `10s`, `5m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 5m, 1h)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_marks_parse_or_explain() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "10x", "-1s", "0s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_u32("0x1"), Ok(1));
        assert_eq!(parse_u32("100"), Ok(100));
        for bad in ["", "0x", "0xg", "-1", "4294967296"] {
            assert!(parse_u32(bad).is_err(), "{bad:?}");
        }
        assert_eq!((parse_on_off("on"), parse_on_off("OFF"), parse_on_off("false")), (Ok(true), Ok(false), Ok(false)));
        assert!(parse_on_off("maybe").is_err());
        assert_eq!(parse_key_exchange("pq-only"), Ok(mesh::tls::KeyExchange::PqOnly));
        let e = parse_key_exchange("kyber").unwrap_err();
        assert!(e.contains("\"kyber\"") && e.contains("classical, hybrid"), "{e}");
    }
}
