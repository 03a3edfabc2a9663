//! Building blocks of the proxy tests: an app server and the proxy inside pods, TLS clients.
//!
//! - [`App::start`]: a plaintext app in a pod on some ports. On every connection it writes
//!   `port=<the port it was reached on>\n`, then echoes; on [`App::SINK_PORT`] it instead
//!   checks the [`pattern`] stream and answers `OK <bytes>\n` after the client's EOF.
//! - [`Proxy::start`]: `mesh::proxy::run` on its own runtime inside a pod; returns once ready
//!   (or with the startup error). Dropping it shuts the proxy down (drain) and joins it.
//! - [`client_config`]: rustls client configs (with/without a client certificate).
//! - [`http_get`]: a GET on the admin port from inside a pod.

use anyhow::{anyhow, bail, Context, Result};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use crate::netns::Pod;

/// A plaintext app server running in a pod.
pub struct App {
    /// Connections accepted so far, over all ports.
    pub connections: Arc<AtomicUsize>,
}

impl App {
    /// The port whose connections verify the [`pattern`] instead of echoing.
    pub const SINK_PORT: u16 = 8090;

    /// Listens on `0.0.0.0:port` and, separately, IPv6-only on `[::]:port` for each port,
    /// inside `pod` (like most apps: the proxy must reach IPv4 listeners over IPv4).
    pub fn start(pod: &Pod, ports: &[u16]) -> Result<Self> {
        let connections = Arc::new(AtomicUsize::new(0));
        for (&port, v6) in ports.iter().flat_map(|p| [(p, false), (p, true)]) {
            let listener =
                pod.in_netns(move || bind_one_family(port, v6))?.with_context(|| format!("app bind :{port}"))?;
            let count = connections.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        let _ = serve_one(stream, port);
                    });
                }
            });
        }
        Ok(Self { connections })
    }

    pub fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn bind_one_family(port: u16, v6: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let (domain, addr): (Domain, SocketAddr) = if v6 {
        (Domain::IPV6, SocketAddr::from(([0u16; 8], port)))
    } else {
        (Domain::IPV4, SocketAddr::from(([0u8; 4], port)))
    };
    let s = Socket::new(domain, Type::STREAM, None)?;
    if v6 {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn serve_one(mut s: TcpStream, listen_port: u16) -> std::io::Result<()> {
    let local = s.local_addr()?.port();
    s.write_all(format!("port={local}\n").as_bytes())?;
    if listen_port == App::SINK_PORT {
        let mut checker = PatternCheck::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if !checker.feed(&buf[..n]) {
                s.write_all(format!("MISMATCH at {}\n", checker.offset).as_bytes())?;
                return Ok(());
            }
        }
        s.write_all(format!("OK {}\n", checker.offset).as_bytes())?;
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return s.shutdown(std::net::Shutdown::Write);
        }
        s.write_all(&buf[..n])?;
    }
}

const BLOCK: usize = 1 << 20;

/// The test stream: 1 MiB pseudo-random blocks, each starting with its block number, so
/// lost, duplicated or reordered data is caught at its offset.
pub fn pattern_block(index: u64) -> Vec<u8> {
    let mut block = Vec::with_capacity(BLOCK);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while block.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    block[..8].copy_from_slice(&index.to_le_bytes());
    block
}

/// Incremental check of the pattern stream.
#[derive(Default)]
pub struct PatternCheck {
    pub offset: u64,
    template: Vec<u8>,
}

impl PatternCheck {
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        if self.template.is_empty() {
            self.template = pattern_block(0);
        }
        while !data.is_empty() {
            let pos = (self.offset % BLOCK as u64) as usize;
            let take = data.len().min(BLOCK - pos);
            let index = self.offset / BLOCK as u64;
            self.template[..8].copy_from_slice(&index.to_le_bytes());
            if data[..take] != self.template[pos..pos + take] {
                return false;
            }
            self.offset += take as u64;
            data = &data[take..];
        }
        true
    }
}

/// Sends `total` bytes of the pattern on `s`, half-closes, and returns the app's verdict.
pub fn send_pattern<S: Read + Write>(
    s: &mut S,
    total: u64,
    half_close: impl FnOnce(&mut S) -> std::io::Result<()>,
) -> Result<String> {
    let mut sent = 0u64;
    let mut index = 0u64;
    let mut block = pattern_block(0);
    while sent < total {
        block[..8].copy_from_slice(&index.to_le_bytes());
        let take = (total - sent).min(BLOCK as u64) as usize;
        s.write_all(&block[..take]).context("sending the pattern")?;
        sent += take as u64;
        index += 1;
    }
    s.flush()?;
    half_close(s).context("half-closing")?;
    let mut rest = String::new();
    s.read_to_string(&mut rest).context("reading the verdict")?;
    Ok(rest)
}

/// The mesh proxy running in a pod.
pub struct Proxy {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<Result<(), String>>>>,
}

impl Proxy {
    /// Starts the proxy in `pod` and waits (≤ 20 s) until it is ready or failed.
    pub fn start(pod: &Pod, plan: mesh::proxy::Plan, mut opts: mesh::proxy::Options) -> Result<Self> {
        opts.netns = Some(pod.name().to_string());
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = pod.thread(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let json = serde_json::to_string(&plan).map_err(|e| e.to_string())?;
            rt.block_on(mesh::proxy::run(
                plan,
                opts,
                json,
                async move {
                    let _ = stop_rx.await;
                },
                move || {
                    let _ = ready_tx.send(());
                },
            ))
            .map_err(|e| e.to_string())
        })?;
        let mut proxy = Self { stop: Some(stop_tx), thread: Some(thread) };
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(()) => Ok(proxy),
            Err(_) => {
                let result = proxy.join();
                match result {
                    Err(e) => Err(e),
                    Ok(()) => bail!("proxy exited without becoming ready"),
                }
            }
        }
    }

    /// Stops (drain) and returns the proxy's result.
    pub fn join(&mut self) -> Result<()> {
        drop(self.stop.take());
        let thread = self.thread.take().ok_or_else(|| anyhow!("proxy already joined"))?;
        match thread.join() {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow!(e)),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("proxy thread panicked"),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// Options for tests: short timeouts, fast reload, given tls dir, two event loops.
pub fn test_options(tls_dir: &std::path::Path) -> mesh::proxy::Options {
    let mut o = mesh::proxy::Options { tls_dir: tls_dir.to_path_buf(), ..Default::default() };
    o.drain_timeout = Duration::from_secs(2);
    o.reload_interval = Duration::from_millis(200);
    o.timeouts.handshake = Duration::from_secs(5);
    // Two event loops, as on a 2-vCPU podVM: connections land on either thread.
    o.threads = 2;
    o
}

/// A rustls client config trusting `ca_pem`; with a client certificate when given.
pub fn client_config(ca_pem: &str, client: Option<(&str, &str)>) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(mesh::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
        }
    };
    Ok(Arc::new(config))
}

/// What a TLS client saw.
#[derive(Debug)]
pub struct TlsOutcome {
    /// Certificates the server presented.
    pub server_chain_len: usize,
    /// First line from the app (`port=N`), or the error that ended the exchange.
    pub first_line: Result<String, String>,
}

/// Connects from inside `pod` to `addr` with TLS, then reads one line. The server name is
/// the IP address (our test certificates carry the pods' addresses as SANs).
pub fn tls_exchange(pod: &Pod, addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<TlsOutcome> {
    pod.in_netns(move || -> Result<TlsOutcome> {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .with_context(|| format!("TCP connect to {addr}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(config, name)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut line = String::new();
        let first_line = {
            let mut reader = BufReader::new(&mut tls);
            match reader.read_line(&mut line) {
                Ok(0) => Err("EOF before any byte".to_string()),
                Ok(_) => Ok(line.trim_end().to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let server_chain_len = tls.conn.peer_certificates().map_or(0, |c| c.len());
        Ok(TlsOutcome { server_chain_len, first_line })
    })?
}

/// Connects in plaintext from `pod` and reads one line (or the error).
pub fn plain_exchange(pod: &Pod, addr: SocketAddr, send: &'static [u8]) -> Result<Result<String, String>> {
    pod.in_netns(move || -> Result<Result<String, String>> {
        let mut tcp = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(t) => t,
            Err(e) => return Ok(Err(format!("connect: {e}"))),
        };
        tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
        let _ = tcp.write_all(send);
        let mut line = String::new();
        Ok(match BufReader::new(&mut tcp).read_line(&mut line) {
            Ok(0) => Err("EOF".into()),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(e.to_string()),
        })
    })?
}

/// A plain rustls TLS server (no proxy) in a pod: presents `chain`/`key`, asks for no client
/// certificate, writes `hello-from-tls\n` and closes. Stands in for a remote that egress
/// must (or must not) trust.
pub fn start_tls_server(pod: &Pod, port: u16, chain_pem: &str, key_pem: &str) -> Result<()> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(mesh::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?,
    );
    let listener = pod.in_netns(move || TcpListener::bind(("::", port)))??;
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || -> Result<()> {
                tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                let conn = rustls::ServerConnection::new(config)?;
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                tls.write_all(b"hello-from-tls\n")?;
                tls.flush()?;
                tls.conn.send_close_notify();
                let _ = tls.flush();
                Ok(())
            });
        }
    });
    Ok(())
}

/// From inside `pod`: an HTTP/1.1 GET of `path` on `to` (the admin port), whole response.
pub fn http_get(pod: &Pod, to: SocketAddr, path: &'static str) -> String {
    pod.in_netns(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

/// From inside `pod`: connect to `addr`, read one line (the app's greeting or an error).
pub fn read_line_from(pod: &Pod, addr: SocketAddr) -> Result<Result<String, String>> {
    plain_exchange(pod, addr, b"")
}

/// The DER of the first certificate in a PEM chain.
pub fn leaf_der(chain_pem: &str) -> Result<Vec<u8>> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let first = CertificateDer::pem_slice_iter(chain_pem.as_bytes()).next().context("empty chain")??;
    Ok(first.to_vec())
}

/// Like [`tls_exchange`] but returns the server's leaf certificate DER.
pub fn server_leaf(pod: &Pod, addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<Vec<u8>> {
    pod.in_netns(move || -> Result<Vec<u8>> {
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let mut conn = rustls::ClientConnection::new(config, name)?;
        conn.complete_io(&mut tcp)?;
        let leaf = conn.peer_certificates().and_then(|c| c.first()).context("no server certificate")?;
        Ok(leaf.to_vec())
    })?
}
