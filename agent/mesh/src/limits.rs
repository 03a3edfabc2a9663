//! Connection limit, handshake budget and graceful drain.
//!
//! Every proxied connection holds a permit of one semaphore sized to the connection limit.
//! Over the limit, new connections are closed at once (fail fast, counted). Draining means
//! stopping the accept loops, then waiting until every permit is back or the deadline hits.
//!
//! Ingress connections that have not finished their TLS handshake are not authenticated
//! yet: anyone the host routes to the pod can open them and stay silent. They hold a slot
//! of the [`HandshakeBudget`] instead (a global cap and a cap per source address), and take
//! a connection permit only once the handshake is done. So a flood of silent connections
//! fills the handshake budget (and from one source only its own share of it), never the
//! connection limit that established and egress connections live in.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Shared by all listeners.
#[derive(Clone)]
pub struct Limits {
    permits: Arc<Semaphore>,
    max: u32,
    handshakes: Arc<HandshakeBudget>,
    stop_tx: Arc<watch::Sender<bool>>,
    stop_rx: watch::Receiver<bool>,
}

/// Caps on connections still in their TLS handshake (ingress).
#[derive(Debug)]
pub struct HandshakeBudget {
    max_total: u32,
    max_per_source: u32,
    state: Mutex<HandshakeState>,
}

#[derive(Debug, Default)]
struct HandshakeState {
    total: u32,
    per_source: HashMap<Source, u32>,
}

/// The unit a per-source cap counts: an IPv4 address, or an IPv6 /64 (one host usually
/// holds a whole /64, so counting single IPv6 addresses would cap nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4([u8; 4]),
    V6Prefix64([u8; 8]),
}

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Source::V6Prefix64([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        }
    }
}

/// Held by one ingress connection while its handshake runs; frees its share on drop.
#[derive(Debug)]
pub struct HandshakeSlot {
    budget: Arc<HandshakeBudget>,
    source: Source,
}

impl HandshakeBudget {
    fn new(max_total: u32, max_per_source: u32) -> Self {
        Self { max_total: max_total.max(1), max_per_source: max_per_source.max(1), state: Mutex::default() }
    }

    fn try_start(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeSlot> {
        let source = Source::of(ip);
        // A poisoned lock only means another thread panicked mid-update of two counters:
        // keep counting rather than refusing every handshake from now on.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.total >= self.max_total {
            return None;
        }
        let n = state.per_source.entry(source).or_insert(0);
        if *n >= self.max_per_source {
            return None;
        }
        *n += 1;
        state.total += 1;
        Some(HandshakeSlot { budget: self.clone(), source })
    }

    /// Connections in their handshake right now: in total, and from `ip`'s source.
    pub fn in_progress(&self, ip: IpAddr) -> (u32, u32) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.total, state.per_source.get(&Source::of(ip)).copied().unwrap_or(0))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut state = self.budget.state.lock().unwrap_or_else(|p| p.into_inner());
        state.total = state.total.saturating_sub(1);
        if let std::collections::hash_map::Entry::Occupied(mut e) = state.per_source.entry(self.source) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// What a new connection holds while its handler runs.
#[derive(Debug)]
pub enum Ticket {
    /// A connection permit (egress, and ingress once the handshake is done).
    Connection(ConnPermit),
    /// A handshake slot (ingress before the handshake finished).
    Handshake(HandshakeSlot),
}

impl Ticket {
    /// The connection permit the handshake earned: the slot is given back first, then a
    /// permit is taken (`None` at the connection limit).
    pub fn established(self, limits: &Limits) -> Option<ConnPermit> {
        match self {
            Ticket::Connection(p) => Some(p),
            Ticket::Handshake(slot) => {
                drop(slot);
                limits.try_admit()
            }
        }
    }
}

/// Held by one connection for its lifetime.
pub type ConnPermit = OwnedSemaphorePermit;

impl Limits {
    /// `max_connections` established (or egress) connections; `max_handshakes` ingress
    /// connections in their handshake, at most `max_handshakes_per_source` of them from one
    /// [`Source`].
    pub fn new(max_connections: u32, max_handshakes: u32, max_handshakes_per_source: u32) -> Self {
        let max = max_connections.clamp(1, Semaphore::MAX_PERMITS as u32);
        let (tx, rx) = watch::channel(false);
        Self {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            handshakes: Arc::new(HandshakeBudget::new(max_handshakes, max_handshakes_per_source)),
            stop_tx: Arc::new(tx),
            stop_rx: rx,
        }
    }

    /// A permit for one more connection, or `None` at the limit.
    pub fn try_admit(&self) -> Option<ConnPermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A handshake slot for a connection from `peer`, or `None` over either cap.
    pub fn try_handshake(&self, peer: IpAddr) -> Option<HandshakeSlot> {
        self.handshakes.try_start(peer)
    }

    pub fn handshakes(&self) -> &HandshakeBudget {
        &self.handshakes
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
        let l = Limits::new(2, 10, 10);
        let a = l.try_admit().unwrap();
        let _b = l.try_admit().unwrap();
        assert!(l.try_admit().is_none());
        assert_eq!(l.active(), 2);
        drop(a);
        assert!(l.try_admit().is_some());
    }

    #[test]
    fn handshakes_are_capped_per_source_and_in_total_and_never_take_connection_permits() {
        let l = Limits::new(2, 5, 3);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut flood: Vec<_> = (0..10).filter_map(|_| l.try_handshake(ip("10.0.0.9"))).collect();
        assert_eq!(flood.len(), 3, "per-source cap");
        // The same IPv4 address as v4-mapped IPv6 (dual-stack listener) is the same source.
        assert!(l.try_handshake(ip("::ffff:10.0.0.9")).is_none());
        // IPv6 counts per /64: other addresses of the prefix share its cap.
        let v6: Vec<_> = (1..=4).filter_map(|i| l.try_handshake(ip(&format!("fd00:1:2:3::{i}")))).collect();
        assert_eq!(v6.len(), 2, "global cap (5) reached after 3 + 2");
        assert!(l.try_handshake(ip("10.0.0.10")).is_none(), "global cap");
        assert_eq!(l.handshakes().in_progress(ip("10.0.0.9")), (5, 3));
        // Handshakes in progress hold no connection permit: established connections still fit.
        let (a, b) = (l.try_admit(), l.try_admit());
        assert!(a.is_some() && b.is_some());
        drop((a, b));
        // A finished handshake frees its slot, then needs a connection permit like any other.
        let done = Ticket::Handshake(flood.pop().unwrap()).established(&l);
        assert!(done.is_some());
        assert_eq!(l.handshakes().in_progress(ip("10.0.0.9")), (4, 2));
        assert!(l.try_handshake(ip("10.0.0.10")).is_some());
        drop(v6);
        assert_eq!(l.handshakes().in_progress(ip("fd00:1:2:3::1")), (2, 0), "the /64's entry is gone");
    }

    #[tokio::test]
    async fn drain_waits_for_connections_then_gives_up_at_the_deadline() {
        let l = Limits::new(10, 10, 10);
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

        let l = Limits::new(3, 10, 10);
        let _stuck = l.try_admit().unwrap();
        assert_eq!(l.drain(Duration::from_millis(200)).await, 1);
    }
}
