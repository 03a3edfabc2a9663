//! `GET /v1/generation`: the long poll pods use to notice manifest updates, over real HTTPS.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use std::time::{Duration, Instant};
use wire::api::{ErrorBody, Reason};

#[tokio::test]
async fn a_waiting_pod_hears_of_a_manifest_update_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let (token, hash) = coordinator::owner::generate();
    let owner = coordinator::owner::OwnerToken::from_hash_hex(&hash).unwrap();
    let config = Config { owner: Some(owner), ..sim_config(&platform) };
    let m1 = manifest_json(true, &MEASUREMENT);
    let running = start(&tmp.path().join("state"), Some(manifest(&m1)), config, Limits::default()).await;
    let client = running.client();

    // Not the current generation (or none given): answered at once.
    let now = client.generation_after(0).await.unwrap();
    assert_eq!(now.generation, 1);
    let issued = attest(&client, &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new()).await.unwrap();
    assert_eq!(issued.manifest_generation, 1, "certificates say which generation issued them");
    assert_eq!(now.manifest_sha256, client.ca().await.unwrap().manifest_sha256);

    // The current one: held until the owner sets a new manifest, then answered within a second.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.generation_after(1).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the poll must be held while the generation is unchanged");
    let m2 = serde_json::to_vec(&manifest_json(true, &[0xc3; 48])).unwrap();
    let set_at = Instant::now();
    let updated = client.set_manifest(&token, m2).await.unwrap();
    let heard = waiting.await.unwrap().unwrap();
    assert_eq!((heard.generation, heard.manifest_sha256), (2, updated.manifest_sha256));
    assert!(set_at.elapsed() < Duration::from_secs(1), "woken {:?} after the update", set_at.elapsed());

    // Bad input: a clear 400, never a hang or a 500.
    for bad in ["after=abc", "after=-1", "after=18446744073709551616", "after=1&after=2", "after"] {
        let (status, body) = client.raw("GET", &format!("/v1/generation?{bad}"), Vec::new(), &[]).await.unwrap();
        let err: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{bad}: {body:?}"));
        assert_eq!((status, err.reason), (400, Reason::MalformedRequest), "{bad}: {}", err.detail);
    }
    let (status, _) = client.raw("POST", "/v1/generation", Vec::new(), &[]).await.unwrap();
    assert_eq!(status, 405);
    running.stop().await;
}
