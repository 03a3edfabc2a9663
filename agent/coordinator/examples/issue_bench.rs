//! Coordinator issue-rate benchmark: a real coordinator on loopback TLS, SNP evidence from
//! tsm-sim's simulated signer. Prints certificates per second for
//!
//! - issue: `POST /v1/certificate` with pre-signed evidence (the coordinator's own cost: TLS
//!   handshake, JSON, SNP chain + report verification, signing a P-384 leaf),
//! - full flow: nonce + sign (simulated guest) + issue, as `podmesh attest` does it,
//! - baseline: `POST /v1/nonce` (TLS handshake + HTTP round trip, the transport floor),
//!
//! and the ratio issue/baseline. Bounded by --count; run it via tests/bench/coordinator.sh.
//!
//! `--flood` runs the issue's attacker during those phases: from 127.0.0.2, nonce requests on
//! 16 keep-alive connections without pause and 2 000 silent connections reopened every 5 s,
//! while the measuring client is 127.0.0.1.
//!
//! `--pods 100,1000,10000` is the scale benchmark instead: for each N a fresh coordinator in a
//! child process (this binary, so its memory is its own) and N simulated pods, each with its
//! own key and source address (127.1.x.y), renewing once as `podmesh attest` does (nonce,
//! tsm-sim evidence, certificate; a new TLS connection per request; a 503 waits Retry-After).
//! Prints certificates/s, issuance p50/p99 (the certificate request), renewal p99 (the whole
//! flow), the coordinator's RSS, and how many pods it carries at a 12 h renewal interval.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
#[path = "../tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wire::api::CertificateRequest;
use wire::client::Client;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Renewal at half of the 24 h certificate lifetime.
const RENEWAL_INTERVAL_SECS: f64 = 12.0 * 3600.0;

#[derive(Parser)]
#[command(about = "podmesh coordinator issue-rate benchmark (loopback, tsm-sim SNP evidence)")]
struct Args {
    /// Certificates to issue per phase.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Flood from 127.0.0.2 (nonces + silent connections) while measuring.
    #[arg(long)]
    flood: bool,
    /// Scale benchmark: numbers of simulated pods, comma-separated (e.g. 100,1000,10000).
    #[arg(long, value_delimiter = ',')]
    pods: Vec<usize>,
    /// Internal: serve a coordinator for the scale benchmark (platform dir), print its URL.
    #[arg(long, hide = true)]
    serve_child: Option<PathBuf>,
}

async fn run_parallel<F, Fut>(count: usize, concurrency: usize, f: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let f = f.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                f(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("bench task");
    }
    start.elapsed()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// The attacker of `--flood`, until aborted.
fn flood(running: &Running, outcome: Arc<flood::Outcome>) -> Vec<tokio::task::JoinHandle<()>> {
    let target: SocketAddr = running.url.trim_start_matches("https://").parse().expect("loopback address");
    let root = running.root_pem.clone();
    let nonces = tokio::spawn(flood::nonces(root.clone(), ATTACKER, target, usize::MAX / 2, 16, outcome));
    let silent = tokio::spawn(async move {
        loop {
            let held = flood::silent(&root, ATTACKER, target, 2000).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(held);
        }
    });
    vec![nonces, silent]
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn serve_child(dir: &Path) {
    let platform = SimPlatform::new(dir);
    let config = Config { nonce_ttl: Duration::from_secs(600), ..sim_config(&platform) };
    let state = dir.join(format!("state-{}", std::process::id()));
    let running = start(&state, Some(manifest(&manifest_json(true, &MEASUREMENT))), config, Limits::default()).await;
    println!("{}", running.url);
    // until the parent closes our stdin
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lock().read_line(&mut String::new())).await;
    running.stop().await;
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// N pods renewing once each against a coordinator in a child process.
async fn scale(pods: &[usize], concurrency: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let platform = SimPlatform::new(tmp.path());
    let guest = Arc::new(platform.guest(MEASUREMENT, WEB_HOST_DATA));
    let exe = std::env::current_exe().expect("own path");
    println!("scale: each pod renews once (nonce + tsm-sim SNP evidence + certificate, new TLS connection per request), {concurrency} at a time");
    println!("| pods | certificates/s | issuance p50 ms | issuance p99 ms | renewal p99 ms | 429/503 waits | RSS idle MiB | RSS peak MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut best = 0.0f64;
    for &n in pods {
        let mut child = Command::new(&exe)
            .arg("--serve-child")
            .arg(tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("coordinator child");
        let mut url = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut url).expect("child URL");
        let target: SocketAddr = url.trim().trim_start_matches("https://").parse().expect("child URL");
        let state = std::fs::read_dir(tmp.path())
            .expect("platform dir")
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy() == format!("state-{}", child.id()))
            .expect("child state dir")
            .path();
        let root = std::fs::read_to_string(state.join("root-ca.pem")).expect("root");
        let connector = flood::connector(&root);
        let idle = status_kib(child.id(), "VmRSS:");
        let workloads: Arc<Vec<Workload>> = Arc::new((0..n).map(|_| Workload::new()).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let retries = Arc::new(AtomicUsize::new(0));
        let times = Arc::new(Mutex::new((Vec::with_capacity(n), Vec::with_capacity(n))));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (connector, guest, workloads, next, retries, times) =
                (connector.clone(), guest.clone(), workloads.clone(), next.clone(), retries.clone(), times.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= workloads.len() {
                        break;
                    }
                    let source = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 1)) + i as u32));
                    let (issuance, renewal, refused) =
                        flood::renew_from(&connector, source, target, &guest, &workloads[i]).await.expect("renewal");
                    retries.fetch_add(refused, Ordering::Relaxed);
                    let mut t = times.lock().expect("times");
                    t.0.push(issuance);
                    t.1.push(renewal);
                }
            }));
        }
        for t in tasks {
            t.await.expect("pod task");
        }
        let elapsed = started.elapsed();
        let peak = status_kib(child.id(), "VmHWM:");
        drop(child.stdin.take());
        let _ = child.wait();
        let (mut issuance, mut renewal) = std::mem::take(&mut *times.lock().expect("times"));
        issuance.sort();
        renewal.sort();
        let rate = n as f64 / elapsed.as_secs_f64();
        best = best.max(rate);
        println!(
            "| {n} | {rate:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} |",
            percentile(&issuance, 0.5),
            percentile(&issuance, 0.99),
            percentile(&renewal, 0.99),
            retries.load(Ordering::Relaxed),
            idle as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    println!(
        "pods carried at a 12 h renewal interval: {:.0} at full load, {:.0} at 50 % load",
        best * RENEWAL_INTERVAL_SECS,
        best * RENEWAL_INTERVAL_SECS / 2.0
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.serve_child {
        return serve_child(dir).await;
    }
    if !args.pods.is_empty() {
        return scale(&args.pods, args.concurrency).await;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let platform = SimPlatform::new(tmp.path());
    // The measuring client (127.0.0.1) holds `count` unused nonces of the baseline; under
    // --flood the attacker must meet the real per-address bound, so --count stays below 500.
    let per_source = if args.flood {
        coordinator::service::MAX_NONCES_PER_SOURCE
    } else {
        coordinator::service::MAX_OUTSTANDING_NONCES
    };
    let config =
        Config { nonce_ttl: Duration::from_secs(600), max_nonces_per_source: per_source, ..sim_config(&platform) };
    let running =
        start(&tmp.path().join("state"), Some(manifest(&manifest_json(true, &MEASUREMENT))), config, Limits::default())
            .await;
    let client = Arc::new(running.client());
    let guest = Arc::new(platform.guest(MEASUREMENT, WEB_HOST_DATA));
    let workload = Arc::new(Workload::new());

    // warm-up
    attest(&client, &guest, &workload).await.expect("warm-up issue");
    let outcome = Arc::new(flood::Outcome::default());
    let attacker = if args.flood { flood(&running, outcome.clone()) } else { Vec::new() };
    if args.flood {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // baseline: nonce round trips
    let c = client.clone();
    let baseline = run_parallel(args.count, args.concurrency, move |_| {
        let c = c.clone();
        async move {
            c.nonce().await.expect("nonce");
        }
    })
    .await;

    // issue only: evidence signed up front
    let mut requests = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let nonce = client.nonce().await.expect("nonce").nonce;
        requests.push(CertificateRequest {
            evidence: snp_evidence(&guest, &workload.spki, &nonce),
            nonce,
            public_key: Some(workload.spki.clone()),
            csr: None,
        });
    }
    let requests = Arc::new(requests);
    let (c, r) = (client.clone(), requests.clone());
    let issue = run_parallel(args.count, args.concurrency, move |i| {
        let (c, r) = (c.clone(), r.clone());
        async move {
            c.certificate(&r[i]).await.expect("issue");
        }
    })
    .await;

    // full flow
    let (c, g, w) = (client.clone(), guest.clone(), workload.clone());
    let full = run_parallel(args.count, args.concurrency, move |_| {
        let (c, g, w): (Arc<Client>, _, _) = (c.clone(), g.clone(), w.clone());
        async move {
            attest(&c, &g, &w).await.expect("attest");
        }
    })
    .await;

    for task in attacker {
        task.abort();
    }
    running.stop().await;
    let (b, i, f) = (rate(args.count, baseline), rate(args.count, issue), rate(args.count, full));
    println!(
        "coordinator bench: count={} concurrency={} (loopback TLS, tsm-sim SNP Milan evidence with cert table)",
        args.count, args.concurrency
    );
    println!("baseline_nonce_per_sec {b:.1}");
    println!("issue_certs_per_sec {i:.1}");
    println!("full_flow_certs_per_sec {f:.1}");
    println!("issue_vs_baseline_ratio {:.3}", i / b);
    if args.flood {
        println!(
            "flood from {ATTACKER} during the phases: nonce requests {outcome}; 2000 silent connections every 5 s"
        );
    }
}
