//! Per-route counters, rendered as Prometheus text on the admin port.
//!
//! Routes are fixed at startup (the mTLS listener, each `#false` entry, each egress entry),
//! so the hot path touches only preallocated atomics: no map lookup, no lock.

use std::{
    fmt::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

/// Why a connection failed before or while being proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// mTLS listener: the client sent no certificate.
    NoClientCert,
    /// The peer's certificate did not verify (unknown CA, expired, wrong name, ...).
    BadCertificate,
    /// Any other TLS protocol error (plaintext, wrong version, alerts, ...).
    Protocol,
    /// The upstream (app or remote) refused the connection, timed out or did not resolve.
    Upstream,
    /// Connection addressed to one of our own listener ports (a self-loop).
    SelfLoop,
    /// Over the connection limit.
    Limit,
    /// Arrived on a listener that does not serve its destination port.
    WrongListener,
    /// Its original destination is not an address of the pod: never forwarded.
    NotLocal,
    /// The TLS stream ended without close_notify (cut, reset or tampered with): the
    /// plaintext side was reset, never given an orderly end.
    Truncated,
    /// Ingress: over the budget of connections still in their TLS handshake (globally or
    /// for the client's source address), closed before reading a byte.
    HandshakeLimit,
    /// The peer's certificate is of the mesh but names an identity the entry does not admit
    /// (see [`crate::identity`]); refused in the handshake.
    IdentityRefused,
    /// Made under a mesh CA that a manifest update replaced, and closed when the rotation's
    /// grace period ended (see [`crate::rotation`]).
    Superseded,
}

impl Failure {
    pub const ALL: [Failure; 13] = [
        Failure::HandshakeTimeout,
        Failure::NoClientCert,
        Failure::BadCertificate,
        Failure::Protocol,
        Failure::Upstream,
        Failure::SelfLoop,
        Failure::Limit,
        Failure::WrongListener,
        Failure::NotLocal,
        Failure::Truncated,
        Failure::HandshakeLimit,
        Failure::IdentityRefused,
        Failure::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::HandshakeTimeout => "handshake_timeout",
            Failure::NoClientCert => "no_client_cert",
            Failure::BadCertificate => "bad_certificate",
            Failure::Protocol => "protocol",
            Failure::Upstream => "upstream",
            Failure::SelfLoop => "self_loop",
            Failure::Limit => "limit",
            Failure::WrongListener => "wrong_listener",
            Failure::NotLocal => "not_local",
            Failure::Truncated => "truncated",
            Failure::HandshakeLimit => "handshake_limit",
            Failure::IdentityRefused => "identity_refused",
            Failure::Superseded => "superseded",
        }
    }

    /// Classifies a handshake error from rustls (wrapped in io::Error by tokio-rustls).
    pub fn of_handshake(e: &std::io::Error) -> Self {
        use rustls::Error;
        match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
            Some(e) if crate::identity::Refused::of(e).is_some() => Failure::IdentityRefused,
            Some(Error::NoCertificatesPresented) => Failure::NoClientCert,
            Some(Error::InvalidCertificate(_)) => Failure::BadCertificate,
            Some(Error::AlertReceived(rustls::AlertDescription::BadCertificate))
            | Some(Error::AlertReceived(rustls::AlertDescription::UnknownCA))
            | Some(Error::AlertReceived(rustls::AlertDescription::CertificateExpired)) => Failure::BadCertificate,
            Some(Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => Failure::NoClientCert,
            Some(_) => Failure::Protocol,
            None if e.kind() == std::io::ErrorKind::TimedOut => Failure::HandshakeTimeout,
            None => Failure::Protocol,
        }
    }
}

/// Counters of one route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub kind: &'static str,
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub proxied: AtomicU64,
    /// Bytes from the downstream (accepting) side to the upstream side.
    pub bytes_up: AtomicU64,
    /// Bytes from upstream back to downstream.
    pub bytes_down: AtomicU64,
    /// Completed TLS handshakes: full, and resumed from a session ticket.
    pub handshakes_full: AtomicU64,
    pub handshakes_resumed: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
    /// Rate limit of the route's `identity_refused` log lines: the second (since process
    /// start) of the last line, and how many refusals went unlogged since.
    log_second: AtomicU64,
    log_suppressed: AtomicU64,
    /// Refused foreign destinations and how often, at most [`MAX_REFUSED`] distinct ones (the
    /// host picks them, so the list is bounded); the rest count as `other`.
    refused: Mutex<Vec<(Option<SocketAddr>, u64)>>,
}

/// Distinct refused destinations kept per route.
pub const MAX_REFUSED: usize = 16;

impl Route {
    pub fn new(name: impl Into<String>, kind: &'static str) -> Self {
        Self {
            name: name.into(),
            kind,
            accepted: AtomicU64::new(0),
            active: AtomicU64::new(0),
            proxied: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            handshakes_full: AtomicU64::new(0),
            handshakes_resumed: AtomicU64::new(0),
            failures: Default::default(),
            log_second: AtomicU64::new(0),
            log_suppressed: AtomicU64::new(0),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// Counts a connection refused because `dest` is not an address of the pod.
    pub fn refuse(&self, dest: SocketAddr) {
        self.fail(Failure::NotLocal);
        let mut list = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let key = match list.iter().any(|(d, _)| *d == Some(dest)) || list.len() < MAX_REFUSED {
            true => Some(dest),
            false => None,
        };
        match list.iter_mut().find(|(d, _)| *d == key) {
            Some((_, n)) => *n += 1,
            None => list.push((key, 1)),
        }
    }

    /// Counts a completed handshake; returns whether it was a resumption.
    pub fn count_handshake(&self, kind: Option<rustls::HandshakeKind>) -> bool {
        let resumed = kind == Some(rustls::HandshakeKind::Resumed);
        let counter = if resumed { &self.handshakes_resumed } else { &self.handshakes_full };
        counter.fetch_add(1, Ordering::Relaxed);
        resumed
    }

    /// At most one line per second and route: `Some(n)` when this event may be logged, `n`
    /// being the events left unlogged since the last line; `None` when it must not.
    pub fn log_allowed(&self) -> Option<u64> {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        self.log_allowed_at(START.get_or_init(std::time::Instant::now).elapsed().as_secs() + 1)
    }

    fn log_allowed_at(&self, second: u64) -> Option<u64> {
        let last = self.log_second.load(Ordering::Relaxed);
        if last != second
            && self.log_second.compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            Some(self.log_suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.log_suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    pub fn fail(&self, f: Failure) {
        self.failures[f as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failures(&self, f: Failure) -> u64 {
        self.failures[f as usize].load(Ordering::Relaxed)
    }
}

/// Renders all routes in the Prometheus text exposition format.
pub fn render(routes: &[std::sync::Arc<Route>]) -> String {
    let mut out = String::with_capacity(2048);
    type Family = (&'static str, &'static str, &'static str, fn(&Route) -> u64);
    let families: [Family; 5] = [
        ("podmesh_connections_total", "counter", "Connections accepted.", |r| r.accepted.load(Ordering::Relaxed)),
        ("podmesh_connections_active", "gauge", "Connections currently open.", |r| r.active.load(Ordering::Relaxed)),
        ("podmesh_connections_proxied_total", "counter", "Connections that reached their upstream.", |r| {
            r.proxied.load(Ordering::Relaxed)
        }),
        ("podmesh_bytes_upstream_total", "counter", "Bytes copied from the accepting side to the upstream.", |r| {
            r.bytes_up.load(Ordering::Relaxed)
        }),
        ("podmesh_bytes_downstream_total", "counter", "Bytes copied from the upstream back.", |r| {
            r.bytes_down.load(Ordering::Relaxed)
        }),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in routes {
            let _ = writeln!(out, "{name}{{route=\"{}\",kind=\"{}\"}} {}", escape(&r.name), r.kind, get(r));
        }
    }
    let name = "podmesh_tls_handshakes_total";
    let _ = writeln!(
        out,
        "# HELP {name} Completed TLS handshakes, full or resumed from a session ticket.\n# TYPE {name} counter"
    );
    for r in routes {
        for (handshake, n) in [("full", &r.handshakes_full), ("resumed", &r.handshakes_resumed)] {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",kind=\"{}\",handshake=\"{handshake}\"}} {}",
                escape(&r.name),
                r.kind,
                n.load(Ordering::Relaxed)
            );
        }
    }
    let name = "podmesh_connection_failures_total";
    let _ = writeln!(out, "# HELP {name} Connections that failed, by reason.\n# TYPE {name} counter");
    for r in routes {
        for f in Failure::ALL {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",kind=\"{}\",reason=\"{}\"}} {}",
                escape(&r.name),
                r.kind,
                f.as_str(),
                r.failures(f)
            );
        }
    }
    let name = "podmesh_ingress_refused_total";
    let _ = writeln!(out, "# HELP {name} Ingress connections refused: their destination is not an address of the pod.\n# TYPE {name} counter");
    for r in routes {
        for (dest, n) in r.refused.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let dest = dest.map_or_else(|| "other".to_string(), |d| d.to_string());
            let _ =
                writeln!(out, "{name}{{route=\"{}\",kind=\"{}\",destination=\"{dest}\"}} {n}", escape(&r.name), r.kind);
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_counters_and_failures_per_route() {
        let r = Arc::new(Route::new("web\"x", "ingress_tls"));
        r.accepted.fetch_add(3, Ordering::Relaxed);
        r.fail(Failure::NoClientCert);
        let text = render(&[r]);
        assert!(text.contains("podmesh_connections_total{route=\"web\\\"x\",kind=\"ingress_tls\"} 3"), "{text}");
        assert!(text.contains("reason=\"no_client_cert\"} 1"), "{text}");
        assert!(text.contains("# TYPE podmesh_connections_active gauge"));
    }

    #[test]
    fn refused_destinations_are_named_and_bounded() {
        let r = Arc::new(Route::new("mtls", "ingress_mtls"));
        r.refuse("192.0.2.1:8080".parse().unwrap());
        r.refuse("192.0.2.1:8080".parse().unwrap());
        r.refuse("[2001:db8::1]:8080".parse().unwrap());
        for port in 0..100 {
            r.refuse(SocketAddr::from(([198, 51, 100, 1], port)));
        }
        let text = render(std::slice::from_ref(&r));
        assert!(
            text.contains(
                "podmesh_ingress_refused_total{route=\"mtls\",kind=\"ingress_mtls\",destination=\"192.0.2.1:8080\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("destination=\"[2001:db8::1]:8080\"} 1"), "{text}");
        assert!(text.contains("destination=\"other\"} 86"), "{text}");
        assert_eq!(text.matches("podmesh_ingress_refused_total{").count(), MAX_REFUSED + 1, "{text}");
        assert_eq!(r.failures(Failure::NotLocal), 103);
    }

    #[test]
    fn log_lines_are_limited_to_one_per_second_and_count_the_rest() {
        let r = Route::new("web", "ingress_mtls");
        assert_eq!(r.log_allowed_at(1), Some(0));
        assert_eq!((0..99).filter_map(|_| r.log_allowed_at(1)).count(), 0, "a burst in one second logs once");
        assert_eq!(r.log_allowed_at(2), Some(99), "the next second logs and counts the suppressed");
        assert_eq!(r.log_allowed_at(2), None);
        assert!(r.log_allowed().is_some(), "the clock starts past second 2's line");
    }

    #[test]
    fn failure_indices_match_all() {
        for (i, f) in Failure::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }
}
