//! Coordinator issue-rate benchmark: a real coordinator on loopback TLS, SNP evidence from
//! tsm-sim's simulated signer. Prints certificates per second for
//!
//! - issue: `POST /v1/certificate` with pre-signed evidence (the coordinator's own cost: TLS
//!   handshake, JSON, SNP chain + report verification, signing a P-384 leaf),
//! - full flow: nonce + sign (simulated guest) + issue, as `podmesh attest` does it,
//! - baseline: `POST /v1/nonce` (TLS handshake + HTTP round trip, the transport floor),
//!
//! and the ratio issue/baseline. Bounded by --count; run it via tests/bench/coordinator.sh.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
#[path = "../tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::api::CertificateRequest;
use wire::client::Client;

#[derive(Parser)]
#[command(about = "podmesh coordinator issue-rate benchmark (loopback, tsm-sim SNP evidence)")]
struct Args {
    /// Certificates to issue per phase.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
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

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("temp dir");
    let platform = SimPlatform::new(tmp.path());
    let config = Config { nonce_ttl: Duration::from_secs(600), ..sim_config(&platform) };
    let running =
        start(&tmp.path().join("state"), Some(manifest(&manifest_json(true, &MEASUREMENT))), config, Limits::default())
            .await;
    let client = Arc::new(running.client());
    let guest = Arc::new(platform.guest(MEASUREMENT, WEB_HOST_DATA));
    let workload = Arc::new(Workload::new());

    // warm-up
    attest(&client, &guest, &workload).await.expect("warm-up issue");

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
}
