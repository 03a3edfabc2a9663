//! The threads that serve connections: the caller's runtime plus `threads - 1` more, each a
//! current-thread tokio runtime accepting from the same listening sockets.
//!
//! Why not tokio's work-stealing scheduler: in a podVM of a few vCPUs shared with the app,
//! it wakes a second worker for almost every socket event to look for work to steal, and
//! those wakeups cost more latency than stealing saves (p99 of the benchmark's fixed-rate
//! load: 554 µs with 2 work-stealing workers, 423 µs with 1). Here a connection lives on the
//! thread that accepted it and an event wakes that thread only. Each thread registers its
//! own descriptor (dup) of every listener with its own epoll; the kernel gives a new
//! connection to whichever thread accepts first, so an idle thread picks it up.

use std::{future::Future, pin::Pin, sync::Arc, thread::JoinHandle};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

type ServeFn = Arc<dyn Fn(TcpListener) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A bound listener and its accept loop, started on every event loop.
#[derive(Clone)]
pub struct Service {
    what: Arc<str>,
    listener: Arc<std::net::TcpListener>,
    serve: ServeFn,
}

impl Service {
    /// `what` names the listener in errors; `serve` is its accept loop.
    pub fn new<S, F>(what: String, listener: std::net::TcpListener, serve: S) -> Self
    where
        S: Fn(TcpListener) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        Self { what: what.into(), listener: Arc::new(listener), serve: Arc::new(move |l| Box::pin(serve(l))) }
    }
}

/// Every service's listener, registered with one runtime, not yet accepting.
pub struct Registered(Vec<(TcpListener, ServeFn)>);

impl Registered {
    /// Registers a descriptor of each listener with the current runtime.
    pub fn new(services: &[Service]) -> Result<Self, String> {
        let register = |s: &Service| {
            let fd = s.listener.try_clone().map_err(|e| format!("duplicating the {} socket: {e}", s.what))?;
            let l =
                TcpListener::from_std(fd).map_err(|e| format!("registering the {} with the runtime: {e}", s.what))?;
            Ok((l, s.serve.clone()))
        };
        services.iter().map(register).collect::<Result<_, String>>().map(Self)
    }

    /// Starts the accept loops.
    pub fn spawn(self, tasks: &mut JoinSet<()>) {
        for (listener, serve) in self.0 {
            tasks.spawn(serve(listener));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Registered,
    Serve,
    Quit,
}

/// The event-loop threads beyond the caller's own. Dropping it ends them (their accept
/// loops and whatever connections they still carry).
pub struct Threads {
    phase: watch::Sender<Phase>,
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    /// Starts `n` threads; returns once each has registered every listener (not accepting
    /// yet, see [`Threads::serve`]), or with the first thread's error.
    pub async fn start(n: usize, services: &[Service]) -> Result<Self, String> {
        let (phase, _) = watch::channel(Phase::Registered);
        let mut threads = Self { phase, handles: Vec::with_capacity(n) };
        let mut registered = Vec::with_capacity(n);
        for i in 1..=n {
            let (services, mut phase) = (services.to_vec(), threads.phase.subscribe());
            let (tx, rx) = tokio::sync::oneshot::channel();
            let body = move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(tx.send(Err(format!("event loop {i}: starting its runtime: {e}")))),
                };
                rt.block_on(async move {
                    let mine = match Registered::new(&services) {
                        Ok(r) => r,
                        Err(e) => return drop(tx.send(Err(format!("event loop {i}: {e}")))),
                    };
                    let _ = tx.send(Ok(()));
                    // A dropped sender (startup failed elsewhere) reads as an error: quit.
                    if !matches!(phase.wait_for(|p| *p != Phase::Registered).await.as_deref(), Ok(Phase::Serve)) {
                        return;
                    }
                    let mut tasks = JoinSet::new();
                    mine.spawn(&mut tasks);
                    let _ = phase.wait_for(|p| *p == Phase::Quit).await;
                });
                // Connections still open after the drain deadline are dropped here; a DNS
                // lookup stuck in the blocking pool must not hold the exit.
                rt.shutdown_background();
            };
            let handle = std::thread::Builder::new()
                .name(format!("podmesh-loop-{i}"))
                .spawn(body)
                .map_err(|e| format!("starting event loop thread {i}: {e}"))?;
            threads.handles.push(handle);
            registered.push(rx);
        }
        for rx in registered {
            rx.await.map_err(|_| "an event loop thread died while starting".to_string())??;
        }
        Ok(threads)
    }

    /// The threads start accepting.
    pub fn serve(&self) {
        self.phase.send_replace(Phase::Serve);
    }

    /// Ends the threads and waits for them (after the drain).
    pub async fn stop(mut self) {
        self.phase.send_replace(Phase::Quit);
        let handles = std::mem::take(&mut self.handles);
        let _ = tokio::task::spawn_blocking(move || handles.into_iter().for_each(|h| drop(h.join()))).await;
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Quit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Read, net::TcpStream, time::Duration};
    use tokio::io::AsyncWriteExt;

    /// A service that answers every connection with the name of the thread that accepted it.
    fn thread_name_service() -> (Service, std::net::SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let svc = Service::new("test listener".into(), l, |l: TcpListener| async move {
            while let Ok((mut s, _)) = l.accept().await {
                let name = std::thread::current().name().unwrap_or("?").to_string();
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        (svc, addr)
    }

    fn ask(addr: std::net::SocketAddr, timeout: Duration) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(timeout))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[tokio::test]
    async fn threads_accept_only_once_told_to_serve_and_stop_ends_them() {
        let (svc, addr) = thread_name_service();
        let threads = Threads::start(2, &[svc]).await.unwrap();
        let early = tokio::task::spawn_blocking(move || ask(addr, Duration::from_millis(300))).await.unwrap();
        assert!(early.is_err(), "a connection was served before serve(): {early:?}");

        threads.serve();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let name = tokio::task::spawn_blocking(move || ask(addr, Duration::from_secs(5))).await.unwrap().unwrap();
            assert!(name.starts_with("podmesh-loop-"), "served by {name:?}");
            seen.insert(name);
        }
        let started = std::time::Instant::now();
        threads.stop().await;
        assert!(started.elapsed() < Duration::from_secs(2), "stop took {:?}", started.elapsed());
        let after = tokio::task::spawn_blocking(move || ask(addr, Duration::from_millis(300))).await.unwrap();
        assert!(after.is_err(), "a connection was served after stop(): {after:?} (threads that served: {seen:?})");
    }

    #[tokio::test]
    async fn the_callers_loop_serves_its_own_registration() {
        let (svc, addr) = thread_name_service();
        let mine = Registered::new(&[svc]).unwrap();
        let mut tasks = JoinSet::new();
        mine.spawn(&mut tasks);
        let name = tokio::task::spawn_blocking(move || ask(addr, Duration::from_secs(5))).await.unwrap().unwrap();
        assert!(!name.starts_with("podmesh-loop-"), "served by {name:?}");
    }
}
