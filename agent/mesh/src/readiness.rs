//! Readiness as a set of RAII tokens: the proxy is ready when the last token is dropped.
//!
//! Each startup step that waits (the TLS material, the event loops with their listeners,
//! the interception rules) holds a token and drops it when done. A step that fails keeps its token, so the proxy never reports
//! ready, and the deny table stays.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};
use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    pending: Mutex<BTreeSet<String>>,
    done: Notify,
}

/// The set of pending startup steps.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Inner>);

/// One pending step; ready when dropped.
pub struct Token {
    inner: Arc<Inner>,
    name: String,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a step that must finish before the proxy is ready.
    pub fn token(&self, name: impl Into<String>) -> Token {
        let name = name.into();
        self.lock().insert(name.clone());
        Token { inner: self.0.clone(), name }
    }

    /// Steps still pending, sorted (shown by `/ready`).
    pub fn pending(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    pub fn is_ready(&self) -> bool {
        self.lock().is_empty()
    }

    /// Resolves once no step is pending.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.done.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A panic while holding this lock cannot leave the set inconsistent: recover it.
        self.0.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let mut set = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.name);
        if set.is_empty() {
            self.inner.done.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_only_after_the_last_token() {
        let r = Readiness::new();
        let a = r.token("rules");
        let b = r.token("listener 15006");
        assert_eq!(r.pending(), ["listener 15006", "rules"]);
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!r.is_ready() && !waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(r.is_ready());
    }
}
