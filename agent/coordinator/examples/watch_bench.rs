//! What N pods waiting on `GET /v1/generation` cost the coordinator, and how fast a manifest
//! update reaches all of them. Runs the real `podmesh-coordinator serve` as its own process
//! (so its memory is its own) on loopback TLS, opens N long polls from this process (each pod
//! is one TLS connection, re-polling like `podmesh attest`), then sets a new manifest and
//! measures when each pod hears of it. Prints the coordinator's RSS idle and with N waiting,
//! its CPU time while they wait, and the wake-up latency percentiles. Run it via
//! tests/bench/watch.sh.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
#[path = "../tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::{manifest_json, MEASUREMENT};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::client::{Client, GenerationWatch, ServerTrust};

#[derive(Parser)]
#[command(about = "podmesh coordinator long-poll benchmark: N pods waiting for a manifest update")]
struct Args {
    /// Waiting pods (one TLS connection each).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// New connections opened per second while the pods start waiting.
    #[arg(long, default_value_t = 1_000)]
    connect_rate: usize,
    /// A new TLS connection for every poll (as before keep-alive), for comparison.
    #[arg(long)]
    fresh_connections: bool,
    /// Seconds to watch the coordinator's CPU with every pod waiting; past the 50 s hold it
    /// includes one round of re-polls.
    #[arg(long, default_value_t = 60)]
    observe_secs: u64,
    /// Loopback port of the coordinator.
    #[arg(long, default_value_t = 18_443)]
    port: u16,
}

/// (VmRSS in KiB, utime+stime in clock ticks) of `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (rss, ticks(11) + ticks(12))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(|p| p.parent()).expect("target dir").join("podmesh-coordinator");
    let (token, hash) = coordinator::owner::generate();
    let (hash_file, m1_file) = (tmp.path().join("owner.sha256"), tmp.path().join("m1.json"));
    std::fs::write(&hash_file, hash).expect("owner hash");
    std::fs::write(&m1_file, manifest_json(false, &MEASUREMENT).to_string()).expect("manifest");
    let state = tmp.path().join("state");
    let log = std::fs::File::create(tmp.path().join("coordinator.log")).expect("log");
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", args.port), "--state"])
        .arg(&state)
        .arg("--manifest")
        .arg(&m1_file)
        .arg("--owner-token-file")
        .arg(&hash_file)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let pid = child.id();
    let url = format!("https://127.0.0.1:{}", args.port);
    let root_path = state.join("root-ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        if let Ok(pem) = std::fs::read_to_string(&root_path) {
            let c = Client::new(&url, ServerTrust::RootCaPem(pem)).expect("client");
            if c.generation_after(0).await.is_ok() {
                break c;
            }
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(tmp.path().join("coordinator.log")).unwrap_or_default();
            panic!("coordinator not answering: {log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, _) = usage(pid);

    // N pods start waiting, at --connect-rate (a fleet does not connect in one instant either).
    let started = Instant::now();
    let errors = Arc::new(AtomicUsize::new(0));
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let batch = (args.connect_rate / 10).max(1);
    for i in 0..args.pods {
        let (client, errors, arrived) = (client.clone(), errors.clone(), arrived_tx.clone());
        let fresh = args.fresh_connections;
        tokio::spawn(async move {
            let mut watch = GenerationWatch::new(client.clone());
            loop {
                let answer = if fresh { client.generation_after(1).await } else { watch.after(1).await };
                match answer {
                    Ok(g) if g.generation == 2 => {
                        let _ = arrived.send(Instant::now());
                        return;
                    }
                    Ok(_) => {} // held for the whole hold: ask again, as the daemon does
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        if (i + 1) % batch == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(arrived_tx);
    // Settle: the last connections finish their handshakes and park.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let setup = started.elapsed();
    let (waiting_rss, cpu_before) = usage(pid);
    tokio::time::sleep(Duration::from_secs(args.observe_secs)).await;
    let (_, cpu_after) = usage(pid);
    let ticks_per_sec = 100.0; // CLK_TCK on Linux

    // The update.
    let m2 = serde_json::to_vec(&manifest_json(false, &[0xc3; 48])).expect("m2");
    let put = Instant::now();
    let updated = client.set_manifest(&token, m2).await.expect("set manifest");
    let put_took = put.elapsed();
    let mut latencies = Vec::with_capacity(args.pods);
    while let Ok(Some(at)) = tokio::time::timeout(Duration::from_secs(120), arrived_rx.recv()).await {
        latencies.push(at.saturating_duration_since(put));
        if latencies.len() == args.pods {
            break;
        }
    }
    latencies.sort();
    let log = std::fs::read_to_string(tmp.path().join("coordinator.log")).unwrap_or_default();
    let announced = log
        .lines()
        .rev()
        .filter(|l| l.contains("coordinator_generation_published"))
        .find_map(|l| l.split("announced to ").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();

    let per_pod = (waiting_rss.saturating_sub(idle_rss)) as f64 / args.pods as f64;
    println!(
        "watch bench: {} pods long-polling one coordinator on loopback TLS ({})",
        args.pods,
        if args.fresh_connections { "a new connection per poll" } else { "kept-alive connections" }
    );
    println!("setup_secs {:.1} (connect errors retried: {})", setup.as_secs_f64(), errors.load(Ordering::Relaxed));
    println!("coordinator_rss_idle_kib {idle_rss}");
    println!("coordinator_rss_waiting_kib {waiting_rss}");
    println!("coordinator_kib_per_waiting_pod {per_pod:.1}");
    println!(
        "coordinator_cpu_while_waiting_percent {:.2}",
        (cpu_after - cpu_before) as f64 / ticks_per_sec / args.observe_secs as f64 * 100.0
    );
    println!("waiters_announced_to {announced}");
    println!("put_manifest_ms {:.1} (generation {})", put_took.as_secs_f64() * 1e3, updated.generation);
    println!("pods_notified {}/{}", latencies.len(), args.pods);
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        println!("wakeup_{name}_ms {:.1}", percentile(&latencies, p).as_secs_f64() * 1e3);
    }
}
