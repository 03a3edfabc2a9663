//! Linux socket options of the data plane, all in one place.
//!
//! Transparent listeners (`IP_TRANSPARENT` / `IPV6_TRANSPARENT`) receive TPROXY'd
//! connections whose local address is the original destination; upstream sockets carry
//! `SO_MARK` so the policy routing of intercepted traffic never applies to them. socket2
//! wraps the syscalls, so this module needs no `unsafe`.

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// Kernel accept queue length of every listener (handshake bursts must not overflow it).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Why a socket could not be set up. One line, naming the address and the step.
#[derive(Debug, thiserror::Error)]
pub enum SockoptError {
    #[error("cannot create a TCP socket for {addr}: {source}")]
    Create { addr: SocketAddr, source: io::Error },
    #[error(
        "cannot set {option} on the socket for {addr}: {source} (transparent sockets and SO_MARK need CAP_NET_ADMIN)"
    )]
    Set { option: &'static str, addr: SocketAddr, source: io::Error },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
}

/// A listening socket on `[::]:port` (dual-stack) that accepts TPROXY'd connections of both
/// families. Falls back to `0.0.0.0:port` when the kernel has no IPv6.
pub fn transparent_listener(port: u16) -> Result<std::net::TcpListener, SockoptError> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match listener(v6, true) {
        Err(SockoptError::Create { source, .. }) if source.raw_os_error() == Some(libc_eafnosupport()) => {
            listener(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), true)
        }
        other => other,
    }
}

/// A plain listening socket on `addr` (egress entries, the admin port). An unspecified IPv6
/// address listens dual-stack.
pub fn plain_listener(addr: SocketAddr) -> Result<std::net::TcpListener, SockoptError> {
    listener(addr, false)
}

fn listener(addr: SocketAddr, transparent: bool) -> Result<std::net::TcpListener, SockoptError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|source| SockoptError::Create { addr, source })?;
    let set = |option, r: io::Result<()>| r.map_err(|source| SockoptError::Set { option, addr, source });
    set("SO_REUSEADDR", socket.set_reuse_address(true))?;
    if addr.is_ipv6() {
        set("IPV6_V6ONLY", socket.set_only_v6(!addr.ip().is_unspecified()))?;
        if transparent {
            // One flag in the kernel (inet->transparent) covers the v4-mapped half as well.
            set("IPV6_TRANSPARENT", socket.set_ip_transparent_v6(true))?;
        }
    } else if transparent {
        set("IP_TRANSPARENT", socket.set_ip_transparent_v4(true))?;
    }
    set("O_NONBLOCK", socket.set_nonblocking(true))?;
    socket.bind(&addr.into()).map_err(|source| SockoptError::Bind { addr, source })?;
    socket.listen(LISTEN_BACKLOG).map_err(|source| SockoptError::Listen { addr, source })?;
    Ok(socket.into())
}

/// A non-connected socket for an upstream connection to `dest`, with `SO_MARK = mark`
/// (0 = leave unmarked) and `TCP_NODELAY`.
pub fn upstream_socket(dest: SocketAddr, mark: u32) -> Result<tokio::net::TcpSocket, SockoptError> {
    let socket = if dest.is_ipv6() { tokio::net::TcpSocket::new_v6() } else { tokio::net::TcpSocket::new_v4() }
        .map_err(|source| SockoptError::Create { addr: dest, source })?;
    if mark != 0 {
        SockRef::from(&socket).set_mark(mark).map_err(|source| SockoptError::Set {
            option: "SO_MARK",
            addr: dest,
            source,
        })?;
    }
    socket.set_nodelay(true).map_err(|source| SockoptError::Set { option: "TCP_NODELAY", addr: dest, source })?;
    Ok(socket)
}

/// Binds `socket` to `local`'s address with port 0 before `connect`. With
/// `IP_BIND_ADDRESS_NO_PORT` the port is picked at `connect` (4-tuple sharing, no port held
/// meanwhile). Fails with `EADDRNOTAVAIL` when the address is not local (see [`crate::local`]).
pub fn bind_source(socket: &tokio::net::TcpSocket, local: SocketAddr) -> io::Result<()> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)?;
    let mut addr = local;
    addr.set_port(0);
    socket.bind(addr)
}

/// Per accepted connection: no Nagle delay (we write whole TLS records or whole reads).
pub fn tune_accepted(stream: &tokio::net::TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// `SO_LINGER` 0: closing the socket sends a reset instead of a FIN, so the app never takes
/// an aborted stream for a complete one.
pub fn reset_on_close(stream: &tokio::net::TcpStream) -> io::Result<()> {
    SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO))
}

/// Reads back whether a socket is transparent (either family's option).
pub fn is_transparent<S: std::os::fd::AsFd>(socket: &S) -> io::Result<bool> {
    let s = SockRef::from(socket);
    match s.local_addr()?.is_ipv6() {
        true => s.ip_transparent_v6(),
        false => s.ip_transparent_v4(),
    }
}

/// Reads back `SO_MARK`.
pub fn mark<S: std::os::fd::AsFd>(socket: &S) -> io::Result<u32> {
    SockRef::from(socket).mark()
}

fn libc_eafnosupport() -> i32 {
    // EAFNOSUPPORT is 97 on every Linux architecture.
    97
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_listener_reads_back_transparent_and_dual_stack() {
        podmesh_tests::skip_unless_root!(); // CAP_NET_ADMIN
        let l = transparent_listener(0).unwrap();
        assert!(is_transparent(&l).unwrap());
        let local = l.local_addr().unwrap();
        assert!(local.is_ipv6() && local.ip().is_unspecified(), "{local}");
        assert!(!SockRef::from(&l).only_v6().unwrap(), "must accept v4-mapped connections");
        // A v4 client reaches the dual-stack listener.
        let c = std::net::TcpStream::connect(("127.0.0.1", local.port())).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(s.local_addr().unwrap().port(), local.port());
        drop(c);
    }

    #[test]
    fn plain_listener_is_not_transparent() {
        let l = plain_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(!is_transparent(&l).unwrap());
    }

    #[tokio::test]
    async fn upstream_socket_reads_back_mark_and_nodelay() {
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(upstream_socket(dest, 0).unwrap().nodelay().unwrap());
        podmesh_tests::skip_unless_root!(); // SO_MARK needs CAP_NET_ADMIN
        let s = upstream_socket(dest, 0x2a).unwrap();
        assert_eq!(mark(&s).unwrap(), 0x2a);
        assert!(s.nodelay().unwrap());
        let s = upstream_socket("[::1]:9".parse().unwrap(), 7).unwrap();
        assert_eq!(mark(&s).unwrap(), 7);
    }

    #[test]
    fn bind_conflict_names_the_address() {
        let a = plain_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.local_addr().unwrap();
        let err = plain_listener(addr).unwrap_err();
        assert!(matches!(err, SockoptError::Bind { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
