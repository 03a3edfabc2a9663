//! The coordinator under attack: one address floods nonces and silent connections, saturates
//! verification, speaks HTTP/2 or nothing at all; another address must still be served.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use podmesh_tests::netns::PodPair;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::api::Reason;
use wire::client::ClientError;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The victim's address in pod b, next to the attacker's (PodPair::V4_B).
const VICTIM: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);

/// A coordinator with the standard manifest in `dir`/state, serving on loopback.
async fn start_standard(dir: &std::path::Path, platform: &SimPlatform, limits: Limits) -> Running {
    start(&dir.join("state"), Some(manifest(&manifest_json(true, &MEASUREMENT))), sim_config(platform), limits).await
}

fn target(running: &Running) -> SocketAddr {
    running.url.trim_start_matches("https://").parse().expect("loopback address")
}

/// The test, between network namespaces: from one address of pod b, 100 001 nonce
/// requests (16 keep-alive connections) and 2 000 silent connections (half stop after the TLS
/// handshake) to the coordinator in pod a; from another address of pod b a client renews as
/// `podmesh attest` does, every 0.5 s during the flood and once after: each time a nonce and a
/// certificate within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_does_not_starve_another() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    pods.b.exec(&["ip", "addr", "add", &format!("{VICTIM}/24"), "dev", "eth0"]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    // Nonces outlive the test: the attacker's are never freed by expiry.
    let config = Config { nonce_ttl: Duration::from_secs(600), ..sim_config(&platform) };
    let listener = pods.a.in_netns(|| std::net::TcpListener::bind((PodPair::V4_A, 0))).unwrap().unwrap();
    let state = tmp.path().join("state");
    let m = manifest(&manifest_json(true, &MEASUREMENT));
    let running = start_on(listener, &state, Some(m), config, Limits::default()).await;
    let addr = target(&running);
    let done = Arc::new(AtomicBool::new(false));

    // each side on its own runtime, on a thread inside pod b
    let in_pod_b = |f: std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>| {
        pods.b
            .thread(move || {
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
            })
            .unwrap()
    };
    let (root, flag) = (running.root_pem.clone(), done.clone());
    let attacker = in_pod_b(Box::pin(async move {
        let outcome = Arc::new(flood::Outcome::default());
        let source = IpAddr::V4(PodPair::V4_B);
        let nonces = flood::nonces(root.clone(), source, addr, 100_001, 16, outcome.clone());
        let silent = async {
            // the flood's connections first, then the silent ones take every slot left
            tokio::time::sleep(Duration::from_millis(300)).await;
            flood::silent(&root, source, addr, 2000).await
        };
        let ((), held) = tokio::join!(nonces, silent);
        flag.store(true, Ordering::Relaxed);
        let ok = outcome.ok.load(Ordering::Relaxed);
        let limited = outcome.limited.load(Ordering::Relaxed);
        format!("{ok} {limited} flood: {outcome}; {} silent connections connected", held.len())
    }));
    let (root, flag) = (running.root_pem.clone(), done.clone());
    let guest = platform.guest(MEASUREMENT, WEB_HOST_DATA);
    let victim = in_pod_b(Box::pin(async move {
        let connector = flood::connector(&root);
        let source = IpAddr::V4(VICTIM);
        let renew = || async {
            match flood::renew_from(&connector, source, addr, &guest, &Workload::new()).await {
                Ok((_, took, 0)) => took,
                Ok((_, took, refused)) => panic!("the victim was refused {refused} times ({took:?})"),
                Err(e) => panic!("the victim failed: {e}"),
            }
        };
        let (mut worst, mut renewals) = (Duration::ZERO, 0);
        while !flag.load(Ordering::Relaxed) {
            worst = worst.max(renew().await);
            renewals += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let after = renew().await;
        format!(
            "{} {} victim: {renewals} renewals during the flood, worst {worst:?}; after it {after:?}",
            worst.as_millis(),
            after.as_millis()
        )
    }));
    let join = |h: std::thread::JoinHandle<anyhow::Result<String>>| {
        tokio::task::spawn_blocking(move || h.join().expect("pod thread").expect("in pod b"))
    };
    let (attacker, victim) = (join(attacker).await.unwrap(), join(victim).await.unwrap());
    eprintln!("{attacker}\n{victim}");
    let numbers = |s: &str| s.split(' ').take(2).map(|n| n.parse::<u128>().unwrap()).collect::<Vec<_>>();
    let (flood, renewals) = (numbers(&attacker), numbers(&victim));
    assert!(renewals[0] < 2000 && renewals[1] < 2000, "{victim}");
    assert_eq!(flood[0], coordinator::service::MAX_NONCES_PER_SOURCE as u128, "{attacker}");
    assert!(flood[1] > 90_000, "the refusals carry Retry-After: {attacker}");
    running.stop().await;
}

/// Connections over the per-source cap are closed at once; those admitted but silent are
/// closed after the TLS-handshake or header deadline; HTTP/2 is refused.
#[tokio::test]
async fn silent_idle_and_http2_connections_do_not_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let limits = Limits {
        handshake_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        max_connections_per_source: 4,
        ..Limits::default()
    };
    let running = start_standard(tmp.path(), &platform, limits).await;
    let addr = target(&running);
    let connector = flood::connector(&running.root_pem);

    // closed by the server within `deadline`: the read ends (EOF or reset) instead of blocking
    async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), deadline: Duration) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    // over the per-source cap: closed before the handshake
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(flood::tcp_from(ATTACKER, addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = flood::tcp_from(ATTACKER, addr).await.unwrap();
    assert!(closed_within(&mut fifth, Duration::from_millis(500)).await, "a fifth connection from one address stayed");
    // another address is not affected
    running.client().nonce().await.expect("another address gets a nonce");
    // silent TCP (no ClientHello): closed at the handshake deadline
    let started = Instant::now();
    for tcp in &mut held {
        assert!(closed_within(tcp, Duration::from_secs(3)).await, "a silent TCP connection stayed");
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    // TLS done, then silent: closed at the header deadline
    let mut tls = flood::tls_from(&connector, ATTACKER, addr).await.unwrap();
    assert!(closed_within(&mut tls, Duration::from_secs(3)).await, "a silent TLS connection stayed");

    // one request, then idle on keep-alive: closed at the header deadline too
    let mut tls = flood::tls_from(&connector, ATTACKER, addr).await.unwrap();
    tls.write_all(b"GET /v1/ca HTTP/1.1\r\nhost: c\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(closed_within(&mut tls, Duration::from_secs(4)).await, "an idle keep-alive connection stayed");

    // HTTP/2 with prior knowledge: no SETTINGS frame back, the connection ends
    let mut tls = flood::tls_from(&connector, ATTACKER, addr).await.unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut got)).await;
    // an HTTP/2 server answers with a SETTINGS frame: type 0x04 at offset 3
    assert!(!(got.len() >= 9 && got[3] == 0x04), "the server spoke HTTP/2: {got:02x?}");
    assert!(!got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    running.stop().await;
}

/// Verification runs on a bounded pool: a burst beyond workers + queue gets 503 `busy` with
/// Retry-After at once, instead of queueing; the rest are issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_verification_pool_answers_503_with_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let limits = Limits { verify_workers: 1, verify_queue: 1, ..Limits::default() };
    let running = start_standard(tmp.path(), &platform, limits).await;
    let client = Arc::new(running.client());
    let guest = Arc::new(platform.guest(MEASUREMENT, WEB_HOST_DATA));
    let workload = Arc::new(Workload::new());
    // evidence first, so the burst hits the coordinator at once
    let mut requests = Vec::new();
    for _ in 0..24 {
        let nonce = client.nonce().await.unwrap().nonce;
        requests.push(wire::api::CertificateRequest {
            evidence: snp_evidence(&guest, &workload.spki, &nonce),
            nonce,
            public_key: Some(workload.spki.clone()),
            csr: None,
        });
    }
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                (client.certificate(&r).await, started.elapsed())
            })
        })
        .collect();
    let (mut issued, mut busy) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (Ok(_), _) => issued += 1,
            (Err(ClientError::Rejected { reason: Reason::Busy, status: 503, retry_after, .. }), took) => {
                assert_eq!(retry_after, Some(Duration::from_secs(1)));
                assert!(took < Duration::from_secs(2), "a refusal must not wait in a queue: {took:?}");
                busy += 1;
            }
            (Err(e), _) => panic!("unexpected: {e}"),
        }
    }
    assert!(busy > 0 && issued >= 2, "{issued} issued, {busy} busy");
    // a 503 does not burn capacity: once the burst is over, issuing works again
    attest(&client, &guest, &workload).await.expect("issuing after the burst");
    running.stop().await;
}
