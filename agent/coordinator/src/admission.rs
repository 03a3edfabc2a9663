//! What an unauthenticated client may hold: connection slots (in total and per source address)
//! and a place in the bounded verification pool. Everything past a bound is refused at once
//! (connection closed, or 503 with `Retry-After`) instead of queueing without limit.

use crate::nonce::Source;
use crate::verify::Rejection;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wire::api::Reason;

/// Open connections, counted from accept until the connection task ends (TLS handshake
/// included), in total and per [`Source`].
pub struct ConnLimiter {
    max: usize,
    per_source: usize,
    open: Mutex<(usize, HashMap<Source, usize>)>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    Total(usize),
    Source(usize),
}

impl std::fmt::Display for ConnRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnRefusal::Total(n) => write!(f, "{n} connections open in total (--max-connections)"),
            ConnRefusal::Source(n) => {
                write!(f, "{n} connections open from this address (--max-connections-per-source)")
            }
        }
    }
}

/// One admitted connection; frees its slot when dropped.
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    source: Source,
}

impl ConnLimiter {
    pub fn new(max: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), per_source: per_source.max(1), open: Mutex::new((0, HashMap::new())) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<Source, usize>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, ConnRefusal> {
        let source = Source::from(ip);
        let mut open = self.lock();
        let mine = open.1.get(&source).copied().unwrap_or(0);
        if mine >= self.per_source {
            return Err(ConnRefusal::Source(mine));
        }
        if open.0 >= self.max {
            return Err(ConnRefusal::Total(open.0));
        }
        open.0 += 1;
        *open.1.entry(source).or_insert(0) += 1;
        Ok(ConnSlot { limiter: self.clone(), source })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().0
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.source);
            }
        }
    }
}

/// Evidence verification and signing: at most `workers` at a time on blocking threads, at most
/// `queue` more waiting; the rest get `busy` (503) with `Retry-After`.
pub struct VerifyPool {
    workers: usize,
    queue: usize,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    retry_after: Duration,
}

impl VerifyPool {
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            queue,
            admitted: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(Semaphore::new(workers)),
            retry_after: Duration::from_secs(1),
        }
    }

    /// Runs `f` on a blocking thread once a worker is free, or refuses at once when the pool
    /// and its queue are full. The permits travel with the blocking work, so a request that
    /// times out while `f` runs still holds its worker until `f` returns.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Rejection> + Send + 'static,
    ) -> Result<T, Rejection> {
        let ticket = self.admitted.clone().try_acquire_owned().map_err(|_| {
            Rejection::new(
                Reason::Busy,
                format!(
                    "verification pool full ({} running, {} waiting; --verify-workers, --verify-queue)",
                    self.workers, self.queue
                ),
            )
            .retry_after(self.retry_after)
        })?;
        let worker = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Rejection::new(Reason::Internal, format!("verification pool closed: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let _held = (ticket, worker);
            f()
        })
        .await
        .unwrap_or_else(|e| Err(Rejection::new(Reason::Internal, format!("worker failed: {e}"))))
    }
}

/// At most one line per `every` for a repeated refusal (a flood must not flood the journal);
/// the line carries how many were folded into it.
pub struct LogThrottle {
    every: Duration,
    start: Instant,
    /// Milliseconds since `start` of the last line + 1 (0: never).
    last: AtomicU64,
    folded: AtomicU64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        Self { every, start: Instant::now(), last: AtomicU64::new(0), folded: AtomicU64::new(0) }
    }

    /// `Some(n)` when a line is due now (n earlier ones were folded into it), `None` otherwise.
    pub fn due(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            self.folded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.folded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.folded.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_per_source_and_total() {
        let limiter = ConnLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limiter.admit(a).unwrap();
        let _a2 = limiter.admit(a).unwrap();
        assert_eq!(limiter.admit(a).err(), Some(ConnRefusal::Source(2)));
        let _b1 = limiter.admit(b).unwrap();
        assert_eq!(limiter.admit(b).err(), Some(ConnRefusal::Total(3)));
        drop(a1);
        assert_eq!(limiter.open(), 2);
        limiter.admit(b).unwrap();
    }

    #[tokio::test]
    async fn a_full_pool_refuses_with_retry_after() {
        let pool = Arc::new(VerifyPool::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        let mut running = Vec::new();
        for _ in 0..2 {
            let (pool, wait) = (pool.clone(), wait.clone());
            running.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = wait.lock().unwrap().recv();
                    Ok(())
                })
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = pool.run(|| Ok(())).await.unwrap_err();
        assert_eq!(refused.reason, Reason::Busy);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        release.send(()).unwrap();
        release.send(()).unwrap();
        for r in running {
            r.await.unwrap().unwrap();
        }
        pool.run(|| Ok(())).await.unwrap();
    }

    #[test]
    fn throttle_folds_repeats() {
        let t = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(t.due(), Some(0));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        let t2 = LogThrottle::new(Duration::ZERO);
        assert_eq!(t2.due(), Some(0));
    }
}
