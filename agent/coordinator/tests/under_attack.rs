//! The coordinator under attack: one address floods nonces and silent connections, saturates
//! verification, speaks HTTP/2 or nothing at all; another address must still be served.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::api::Reason;
use wire::client::ClientError;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn target(running: &Running) -> SocketAddr {
    running.url.trim_start_matches("https://").parse().expect("loopback address")
}

/// One nonce + certificate for the victim (127.0.0.1), timed.
async fn victim(running: &Running, platform: &SimPlatform) -> Duration {
    let start = Instant::now();
    let client = running.client().with_timeout(Duration::from_secs(10));
    attest(&client, &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new())
        .await
        .unwrap_or_else(|e| panic!("the victim was refused after {:?}: {e}", start.elapsed()));
    start.elapsed()
}

/// The test: 100 001 nonce requests and 2 000 silent connections from one address;
/// another address still gets a nonce and a certificate within 2 s, during the flood and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_does_not_starve_another() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    // Nonces outlive the test: the attacker's are never freed by expiry.
    let config = Config { nonce_ttl: Duration::from_secs(600), ..sim_config(&platform) };
    let running =
        start(&tmp.path().join("state"), Some(manifest(&manifest_json(true, &MEASUREMENT))), config, Limits::default())
            .await;
    let addr = target(&running);
    victim(&running, &platform).await;

    let outcome = Arc::new(flood::Outcome::default());
    let flood = tokio::spawn(flood::nonces(running.root_pem.clone(), ATTACKER, addr, 100_001, 16, outcome.clone()));
    // let the flood's connections in first, then the silent ones take every slot left
    tokio::time::sleep(Duration::from_millis(300)).await;
    let silent = flood::silent(&running.root_pem, ATTACKER, addr, 2000).await;
    let mut worst = Duration::ZERO;
    while !flood.is_finished() {
        worst = worst.max(victim(&running, &platform).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    flood.await.unwrap();
    let after = victim(&running, &platform).await;
    eprintln!(
        "flood: {outcome}; silent connections held by the attacker: {}; victim worst {worst:?} during, {after:?} after",
        silent.len()
    );
    assert!(worst < Duration::from_secs(2) && after < Duration::from_secs(2), "victim took {worst:?} / {after:?}");
    assert_eq!(outcome.ok.load(Ordering::Relaxed), coordinator::service::MAX_NONCES_PER_SOURCE, "{outcome}");
    assert!(outcome.limited.load(Ordering::Relaxed) > 90_000, "the refusals carry Retry-After: {outcome}");
    drop(silent);
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
    let running = start(
        &tmp.path().join("state"),
        Some(manifest(&manifest_json(true, &MEASUREMENT))),
        sim_config(&platform),
        limits,
    )
    .await;
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
    let running = start(
        &tmp.path().join("state"),
        Some(manifest(&manifest_json(true, &MEASUREMENT))),
        sim_config(&platform),
        limits,
    )
    .await;
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
