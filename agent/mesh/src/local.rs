//! Is an address one of the pod's own? The ingress asks before it opens an upstream
//! connection: a TPROXY'd connection whose original destination is a foreign address must
//! never be forwarded in plaintext to that address (defence in depth behind the
//! `fib daddr type local` rule of the interception table).
//!
//! The check is the upstream socket's own `bind()` to the destination address (port 0 with
//! `IP_BIND_ADDRESS_NO_PORT`, so no port is reserved before `connect`): the kernel refuses a
//! non-local address with `EADDRNOTAVAIL`. It costs about 1 µs on top of the socket we need
//! anyway, where a `getifaddrs` snapshot costs about 40 µs (measured on the development VM),
//! and the source address it pins is the one routing would pick for a local destination.
//!
//! `bind()` proves nothing when `net.ipv4.ip_nonlocal_bind` (or the IPv6 twin) is on, which
//! a container's sysctls could switch at any time. So each check first reads that sysctl
//! (`pread` on a file opened at startup, about 1 µs) and, when it is on or cannot be read,
//! asks `getifaddrs` instead.

use std::{
    fs::File,
    io,
    net::{IpAddr, SocketAddr},
    os::unix::fs::FileExt,
};

const NONLOCAL_BIND_V4: &str = "/proc/sys/net/ipv4/ip_nonlocal_bind";
const NONLOCAL_BIND_V6: &str = "/proc/sys/net/ipv6/ip_nonlocal_bind";

/// The sysctls that decide whether `bind()` proves locality, opened in the proxy's network
/// namespace (procfs binds a `net` sysctl file to the namespace of its opener).
#[derive(Debug)]
pub struct LocalCheck {
    v4: Option<File>,
    v6: Option<File>,
}

impl LocalCheck {
    /// Opens the sysctls of the calling thread's network namespace. A file that cannot be
    /// opened (no IPv6) makes every check of that family take the exact, slower path.
    pub fn new() -> Self {
        Self { v4: File::open(NONLOCAL_BIND_V4).ok(), v6: File::open(NONLOCAL_BIND_V6).ok() }
    }

    /// Whether a successful `bind()` to `ip` proves that `ip` is local: the family's
    /// `ip_nonlocal_bind` reads `0`.
    pub fn bind_proves(&self, ip: IpAddr) -> bool {
        let file = if ip.to_canonical().is_ipv4() { &self.v4 } else { &self.v6 };
        let mut buf = [0u8; 8];
        match file.as_ref().map(|f| f.read_at(&mut buf, 0)) {
            Some(Ok(n)) => buf[..n].trim_ascii() == b"0",
            _ => false,
        }
    }
}

impl Default for LocalCheck {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `ip` is configured on an interface of the calling thread's network namespace
/// (exact, from `getifaddrs`). Multicast and broadcast addresses are never local here.
pub fn is_interface_address(ip: IpAddr) -> io::Result<bool> {
    let ip = ip.to_canonical();
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addrs.filter_map(|a| a.address).any(|a| {
        let found = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => return false,
        };
        found == ip
    }))
}

/// Why an ingress connection got no upstream.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0} is not an address of this pod")]
    NotLocal(SocketAddr),
    #[error("cannot check whether {addr} is an address of this pod: {source}")]
    Check { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Socket(#[from] crate::sockopt::SockoptError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_an_interface_address_and_documentation_space_is_not() {
        assert!(is_interface_address("127.0.0.1".parse().unwrap()).unwrap());
        assert!(is_interface_address("::ffff:127.0.0.1".parse().unwrap()).unwrap(), "v4-mapped counts as IPv4");
        assert!(!is_interface_address("192.0.2.1".parse().unwrap()).unwrap());
        assert!(!is_interface_address("2001:db8::1".parse().unwrap()).unwrap());
    }

    #[test]
    fn bind_proves_only_when_the_sysctl_reads_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (zero, one) = (dir.path().join("zero"), dir.path().join("one"));
        std::fs::write(&zero, "0\n").unwrap();
        std::fs::write(&one, "1\n").unwrap();
        let check = LocalCheck { v4: File::open(&zero).ok(), v6: File::open(&one).ok() };
        assert!(check.bind_proves("10.0.0.1".parse().unwrap()));
        assert!(check.bind_proves("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!check.bind_proves("fd00::1".parse().unwrap()), "nonlocal bind on: bind() proves nothing");
        let none = LocalCheck { v4: None, v6: None };
        assert!(!none.bind_proves("10.0.0.1".parse().unwrap()), "unreadable: take the exact path");
    }
}
