//! Connection limit and graceful drain, one primitive for both.
//!
//! Every proxied connection holds a permit of one semaphore sized to the connection limit.
//! Over the limit, new connections are closed at once (fail fast, counted). Draining means
//! stopping the accept loops, then waiting until every permit is back or the deadline hits.

use std::{sync::Arc, time::Duration};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Shared by all listeners.
#[derive(Clone)]
pub struct Limits {
    permits: Arc<Semaphore>,
    max: u32,
    stop_tx: Arc<watch::Sender<bool>>,
    stop_rx: watch::Receiver<bool>,
}

/// Held by one connection for its lifetime.
pub type ConnPermit = OwnedSemaphorePermit;

impl Limits {
    pub fn new(max_connections: u32) -> Self {
        let max = max_connections.clamp(1, Semaphore::MAX_PERMITS as u32);
        let (tx, rx) = watch::channel(false);
        Self { permits: Arc::new(Semaphore::new(max as usize)), max, stop_tx: Arc::new(tx), stop_rx: rx }
    }

    /// A permit for one more connection, or `None` at the limit.
    pub fn try_admit(&self) -> Option<ConnPermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Open connections right now.
    pub fn active(&self) -> u32 {
        self.max - self.permits.available_permits() as u32
    }

    /// Resolves when the accept loops must stop.
    pub async fn stopped(&self) {
        let mut rx = self.stop_rx.clone();
        // An error means the sender is gone, which only happens at exit: stop as well.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Stops accepting, then waits up to `deadline` for open connections to finish.
    /// Returns how many were still open at the deadline (they are dropped with the runtime).
    pub async fn drain(&self, deadline: Duration) -> u32 {
        self.stop_tx.send_replace(true);
        match tokio::time::timeout(deadline, self.permits.acquire_many(self.max)).await {
            Ok(_) => 0,
            Err(_) => self.active(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limit_refuses_then_admits_again() {
        let l = Limits::new(2);
        let a = l.try_admit().unwrap();
        let _b = l.try_admit().unwrap();
        assert!(l.try_admit().is_none());
        assert_eq!(l.active(), 2);
        drop(a);
        assert!(l.try_admit().is_some());
    }

    #[tokio::test]
    async fn drain_waits_for_connections_then_gives_up_at_the_deadline() {
        let l = Limits::new(10);
        let p = l.try_admit().unwrap();
        let stopped = tokio::spawn({
            let l = l.clone();
            async move { l.stopped().await }
        });
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(p);
        });
        assert_eq!(l.drain(Duration::from_secs(5)).await, 0);
        stopped.await.unwrap();
        releaser.await.unwrap();

        let l = Limits::new(3);
        let _stuck = l.try_admit().unwrap();
        assert_eq!(l.drain(Duration::from_millis(200)).await, 1);
    }
}
