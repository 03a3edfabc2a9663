//! `GET /v1/generation?after=N`: the long poll through which pods notice a manifest update
//! (a new mesh CA) within a second instead of at their next renewal.
//!
//! One `tokio::sync::watch` channel carries the live generation. A waiting request is the
//! connection's task parked on that channel: `Receiver::changed` links the task into the
//! channel's intrusive waiter list, so a waiter costs no allocation beyond its connection, and
//! one `send` wakes every waiter. Requests are held for at most [`api::GENERATION_HOLD`]
//! (below the 60 s idle timeouts of common middleboxes), then answered with the unchanged
//! generation, and the pod asks again.
//!
//! The answer is public (like `GET /v1/ca`): a generation number and a manifest digest. The
//! pod reads it only over the TLS connection it pinned to the coordinator's root, and acts on
//! it only by attesting again, so a forged or withheld answer can at most delay a rotation (the
//! old certificate still expires) or cost one attestation.
//!
//! Measured (tests/bench/watch.sh, 2 vCPUs): see README "Manifest updates reach the mesh".

use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use wire::api::{self, ErrorBody, GenerationResponse, Reason};

/// The live generation, published by every manifest update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub generation: u64,
    pub manifest_sha256: String,
}

/// The channel every `/v1/generation` request waits on.
pub struct Generations {
    tx: watch::Sender<Live>,
}

impl Generations {
    pub fn new(live: Live) -> Self {
        Self { tx: watch::Sender::new(live) }
    }

    /// Publishes a new generation and wakes every waiter.
    pub fn publish(&self, live: Live) {
        let waiters = self.tx.receiver_count();
        self.tx.send_replace(live.clone());
        tracing::info!(
            PODMESH_EVENT = "coordinator_generation_published",
            generation = live.generation,
            waiters,
            "generation {} announced to {waiters} waiting pod(s)",
            live.generation
        );
    }

    /// Requests waiting right now.
    pub fn waiters(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Answers at once when the generation is not `after`, else when it changes or after `hold`.
    pub async fn wait(&self, after: Option<u64>, hold: Duration) -> GenerationResponse {
        let mut rx = self.tx.subscribe();
        let answer = |live: &Live| GenerationResponse {
            generation: live.generation,
            manifest_sha256: live.manifest_sha256.clone(),
        };
        if let Some(after) = after {
            // The sender lives as long as the coordinator; a closed channel just ends the wait.
            let changed = rx.wait_for(|live| live.generation != after);
            if let Ok(Ok(live)) = tokio::time::timeout(hold, changed).await {
                return answer(&live);
            }
        }
        let live = rx.borrow_and_update();
        answer(&live)
    }
}

#[derive(serde::Deserialize)]
struct Params {
    after: Option<String>,
}

/// The route, with its own hold instead of the server's per-request timeout (a long poll is
/// supposed to outlast it). Generic in the state so it merges into any router.
pub fn router<S: Clone + Send + Sync + 'static>(generations: Arc<Generations>) -> Router<S> {
    Router::new().route(
        api::GENERATION_PATH,
        get(move |params: Result<Query<Params>, axum::extract::rejection::QueryRejection>| async move {
            let after = match params.map(|p| p.0.after) {
                Ok(None) => None,
                Ok(Some(text)) => match text.parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => return bad_request(format!("after={text:?} is not a generation number")),
                },
                Err(e) => return bad_request(format!("query: {e}")),
            };
            let body = generations.wait(after, api::GENERATION_HOLD).await;
            match serde_json::to_vec(&body) {
                Ok(bytes) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }),
    )
}

fn bad_request(detail: String) -> Response {
    tracing::warn!(
        PODMESH_EVENT = "coordinator_request_rejected",
        endpoint = api::GENERATION_PATH,
        reason = Reason::MalformedRequest.as_str(),
        "rejected {}: {detail}",
        api::GENERATION_PATH
    );
    let body = ErrorBody { reason: Reason::MalformedRequest, detail };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn live(generation: u64) -> Live {
        Live { generation, manifest_sha256: format!("sha-{generation}") }
    }

    #[tokio::test]
    async fn answers_at_once_when_different_and_holds_when_equal() {
        let g = Arc::new(Generations::new(live(3)));
        assert_eq!(g.wait(None, Duration::from_secs(5)).await.generation, 3);
        assert_eq!(g.wait(Some(2), Duration::from_secs(5)).await.generation, 3);
        let start = Instant::now();
        let held = g.wait(Some(3), Duration::from_millis(200)).await;
        assert_eq!(held.generation, 3);
        assert!(start.elapsed() >= Duration::from_millis(200));

        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move { g.wait(Some(3), Duration::from_secs(30)).await })
            })
            .collect();
        while g.waiters() < 100 {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        g.publish(live(4));
        for w in waiters {
            let got = w.await.unwrap();
            assert_eq!((got.generation, got.manifest_sha256.as_str()), (4, "sha-4"));
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(g.waiters(), 0, "no waiter outlives its request");
    }
}
