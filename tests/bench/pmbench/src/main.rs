//! `pmbench`: the small tools `tests/bench/run.sh` needs and Debian does not ship:
//! the benchmark certificates (one set, shared by every proxy), an open-loop
//! fixed-rate HTTP/1.1 load generator with latency percentiles, a
//! new-connection-per-request load generator, an idle-connection holder, a
//! byte-exact echo check, and the single-core AES-256-GCM record rate of rustls.
//! Every measuring subcommand prints one JSON object on stdout.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
mod aead;
mod certs;
mod echo;
mod http;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pmbench", about = "podmesh benchmark helpers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Issue the benchmark's certificates with the coordinator's PKI (root -> intermediate ->
    /// mesh certificates, mesh CA) into the tls dirs `<out>/server` and `<out>/client`.
    Certs {
        #[arg(long)]
        out: PathBuf,
        /// SANs of the server leaf (DNS names or IP addresses).
        #[arg(long, value_delimiter = ',', default_value = "server.pmbn")]
        server_san: Vec<String>,
        /// SANs of the client leaf.
        #[arg(long, value_delimiter = ',', default_value = "client.pmbn")]
        client_san: Vec<String>,
    },
    /// Single-core AES-256-GCM seal/open rate of rustls (aws-lc-rs) on full 16 KiB TLS 1.3 records.
    Aead {
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Open-loop HTTP/1.1 keep-alive load at a fixed total rate; latency is measured from each
    /// request's scheduled send time, so a stalled proxy cannot hide its queueing (wrk2-style).
    Rate {
        #[arg(long)]
        addr: SocketAddr,
        /// Total requests per second across all connections.
        #[arg(long, default_value_t = 2000)]
        rps: u32,
        #[arg(long, default_value_t = 16)]
        conns: u32,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Requests in this first part of the run are sent but not recorded.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// Closed-loop: each worker opens a new TCP connection per request (`Connection: close`),
    /// so every request costs the proxies a full handshake.
    Connect {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Open `count` keep-alive connections, complete one request on each (so every hop is
    /// established), print a JSON line, then hold them idle until stdin closes or `hold` ends.
    Hold {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 5000)]
        count: u32,
        /// Connections being opened at the same time.
        #[arg(long, default_value_t = 64)]
        parallel: u32,
        #[arg(long, default_value_t = 120.0)]
        hold: f64,
    },
    /// Echo server: writes back every byte it reads, half-close preserved.
    EchoServe {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send `bytes` of pseudo-random data through `addr` to an echo server and require the
    /// same bytes back; fails on any difference, short read or timeout.
    EchoCheck {
        /// Send FIN right after the data (the echo must still come back in full) instead of
        /// after all of it came back.
        #[arg(long)]
        half_close: bool,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 8 << 20)]
        bytes: u64,
        #[arg(long, default_value_t = 4)]
        conns: u32,
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
}

fn secs(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("invalid duration {s} s: {e}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread: on the 2-core bench host the load generator must not outcompete the proxies.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let out = match cli.command {
        Command::Certs { out, server_san, client_san } => {
            certs::write(&out, &server_san, &client_san)?;
            serde_json::json!({ "out": out })
        }
        Command::Aead { seconds } => aead::measure(secs(seconds)?)?,
        Command::Rate { addr, rps, conns, seconds, warmup } => {
            rt.block_on(http::rate(addr, rps, conns, secs(seconds)?, secs(warmup)?))?
        }
        Command::Connect { addr, concurrency, seconds } => {
            rt.block_on(http::connect(addr, concurrency, secs(seconds)?))?
        }
        Command::Hold { addr, count, parallel, hold } => rt.block_on(http::hold(addr, count, parallel, secs(hold)?))?,
        Command::EchoServe { listen } => rt.block_on(echo::serve(listen))?,
        Command::EchoCheck { addr, bytes, conns, timeout, half_close } => {
            rt.block_on(echo::check(addr, bytes, conns, secs(timeout)?, half_close))?
        }
    };
    println!("{out}");
    Ok(())
}
