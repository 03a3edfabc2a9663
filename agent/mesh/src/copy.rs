//! Bidirectional byte copy between two streams, with half-close and an idle timeout.
//!
//! Only an orderly end (a read of 0) is carried on as a half-close. A TLS stream that ends
//! without close_notify reads as `UnexpectedEof` from rustls: that is an error here, never
//! an end, so a host that cuts a stream cannot make the app believe it got all the data.
//!
//! Buffers are 64 KiB (four full TLS records per read on the plaintext side, so one
//! `writev` carries several records) and come from a per-thread pool: a direction holds a
//! buffer only while it has bytes in flight, and gives it back whenever its reader has
//! nothing to read. An idle connection therefore owns no copy buffer at all, which keeps
//! thousands of idle connections cheap. No allocation, lock or log per chunk.

use std::{
    cell::RefCell,
    future::{poll_fn, Future},
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of one copy buffer.
pub const BUF_SIZE: usize = 64 * 1024;
/// Buffers kept per worker thread for reuse.
const POOL_MAX: usize = 32;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

fn give_buf(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

/// How a copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes from `b` to `a`.
    pub b_to_a: u64,
}

/// Byte counters shared with the metrics (updated once per chunk, relaxed).
pub struct Counters<'a> {
    pub a_to_b: &'a AtomicU64,
    pub b_to_a: &'a AtomicU64,
}

struct Pipe {
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
    eof: bool,
    done: bool,
    need_flush: bool,
    total: u64,
}

impl Pipe {
    fn new() -> Self {
        Self { buf: None, pos: 0, end: 0, eof: false, done: false, need_flush: false, total: 0 }
    }

    /// Moves bytes from `r` to `w` until `r` blocks or ends; on end shuts `w` down (half-close).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        counter: &AtomicU64,
        active: &mut bool,
    ) -> Poll<Result<(), Fault>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.eof {
                let buf = self.buf.get_or_insert_with(take_buf);
                let mut rb = ReadBuf::new(buf);
                // Take everything readable right now (further TLS records already in memory),
                // so the writer gets one large write, not one per record; never wait for more.
                let mut blocked = false;
                while rb.remaining() > 0 {
                    let before = rb.filled().len();
                    match r.as_mut().poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if rb.filled().len() > before => {}
                        Poll::Ready(Ok(())) => {
                            self.eof = true;
                            break;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Read(e))),
                        Poll::Pending => {
                            blocked = true;
                            break;
                        }
                    }
                }
                let n = rb.filled().len();
                if n == 0 && blocked {
                    // Nothing in flight: an idle direction holds no buffer.
                    if let Some(b) = self.buf.take() {
                        give_buf(b);
                    }
                    if self.need_flush {
                        ready!(w.as_mut().poll_flush(cx)).map_err(Fault::Write)?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                self.pos = 0;
                self.end = n;
                *active |= n > 0;
            }
            while self.pos < self.end {
                let Some(buf) = self.buf.as_deref() else { break };
                let n = ready!(w.as_mut().poll_write(cx, &buf[self.pos..self.end])).map_err(Fault::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(Fault::Write(io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.total += n as u64;
                counter.fetch_add(n as u64, Ordering::Relaxed);
                self.need_flush = true;
            }
            if self.eof {
                if let Some(b) = self.buf.take() {
                    give_buf(b);
                }
                ready!(w.as_mut().poll_flush(cx)).map_err(Fault::Write)?;
                ready!(w.as_mut().poll_shutdown(cx)).map_err(Fault::Write)?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            give_buf(b);
        }
    }
}

/// A failed operation of one direction: reading its source or writing its sink.
enum Fault {
    Read(io::Error),
    Write(io::Error),
}

/// Which stream a copy failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Why a copy ended before both directions ended in order.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading or writing `side` failed (for a TLS stream, `UnexpectedEof` means it ended
    /// without close_notify).
    #[error("{side:?} side: {source}")]
    Stream { side: Side, source: io::Error },
    #[error("no byte in either direction for {0:?}")]
    Idle(Duration),
}

impl CopyError {
    /// The stream that failed (`None` for the idle timeout).
    pub fn side(&self) -> Option<Side> {
        match self {
            CopyError::Stream { side, .. } => Some(*side),
            CopyError::Idle(_) => None,
        }
    }
}

/// Copies `a` ⇄ `b` until both directions ended (each end shuts the other side's write
/// half, so half-closed connections keep working), an error occurs (naming the stream it
/// occurred on), or no byte moved for `idle`.
pub async fn bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    counters: Counters<'_>,
) -> Result<Transferred, CopyError>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Pipe::new();
    let mut ba = Pipe::new();
    let mut last_activity = tokio::time::Instant::now();
    let sleep = tokio::time::sleep_until(last_activity + idle);
    tokio::pin!(sleep);
    poll_fn(|cx| {
        let mut active = false;
        if !ab.done {
            if let Poll::Ready(Err(f)) =
                ab.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b), counters.a_to_b, &mut active)
            {
                return Poll::Ready(Err(f.on(Side::A, Side::B)));
            }
        }
        if !ba.done {
            if let Poll::Ready(Err(f)) =
                ba.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a), counters.b_to_a, &mut active)
            {
                return Poll::Ready(Err(f.on(Side::B, Side::A)));
            }
        }
        if ab.done && ba.done {
            return Poll::Ready(Ok(Transferred { a_to_b: ab.total, b_to_a: ba.total }));
        }
        if active {
            last_activity = tokio::time::Instant::now();
        }
        // The timer is re-armed lazily: only when it fires do we look at the last activity.
        while sleep.as_mut().poll(cx).is_ready() {
            let deadline = last_activity + idle;
            if deadline <= tokio::time::Instant::now() {
                return Poll::Ready(Err(CopyError::Idle(idle)));
            }
            sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

impl Fault {
    /// The error, attributed to the stream read from (`source`) or written to (`sink`).
    fn on(self, source: Side, sink: Side) -> CopyError {
        match self {
            Fault::Read(e) => CopyError::Stream { side: source, source: e },
            Fault::Write(e) => CopyError::Stream { side: sink, source: e },
        }
    }
}

/// Read-ahead for the socket under a TLS session.
///
/// rustls pulls ciphertext from its transport at most 4 KiB per call, which would cost
/// several `read` syscalls per 16 KiB record. This adapter reads up to [`BUF_SIZE`] at once
/// into a pooled buffer and serves rustls from memory; like [`bidirectional`], it holds the
/// buffer only while unread bytes are in it, so an idle connection owns none. Writes pass
/// straight through (rustls already writes whole records, vectored).
pub struct ReadAhead<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, buf: None, pos: 0, end: 0 }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn release(&mut self) {
        if let Some(b) = self.buf.take() {
            give_buf(b);
        }
        self.pos = 0;
        self.end = 0;
    }
}

impl<S> Drop for ReadAhead<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.end {
            if out.remaining() >= BUF_SIZE {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let buf = this.buf.get_or_insert_with(take_buf);
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    this.pos = 0;
                    this.end = rb.filled().len();
                }
                other => {
                    // Pending, error or EOF: nothing buffered, so hold no buffer.
                    this.release();
                    return other;
                }
            }
        }
        let Some(buf) = this.buf.as_deref() else { return Poll::Ready(Ok(())) };
        let n = out.remaining().min(this.end - this.pos);
        out.put_slice(&buf[this.pos..this.pos + n]);
        this.pos += n;
        if this.pos == this.end {
            this.release();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn counters() -> (AtomicU64, AtomicU64) {
        (AtomicU64::new(0), AtomicU64::new(0))
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1 << 16);
        let (mut proxy_b, server) = tokio::io::duplex(1 << 16);
        let (c1, c2) = counters();
        let task = tokio::spawn(async move {
            bidirectional(&mut proxy_a, &mut proxy_b, Duration::from_secs(5), Counters { a_to_b: &c1, b_to_a: &c2 })
                .await
        });
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut server = server;
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            (server, got)
        });
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let (mut server, got) = reader.await.unwrap();
        assert_eq!(got, payload, "client→server bytes differ");
        // Half-closed: the server can still answer after the client's EOF.
        server.write_all(b"reply after eof").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply after eof");
        let t = task.await.unwrap().unwrap();
        assert_eq!(t, Transferred { a_to_b: payload.len() as u64, b_to_a: 15 });
    }

    /// A TLS stream as rustls presents it when the peer's TCP ends without close_notify:
    /// some bytes, then `UnexpectedEof`. Writes are swallowed.
    struct CutTls(Option<&'static [u8]>);

    impl AsyncRead for CutTls {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            match self.0.take() {
                Some(data) => {
                    out.put_slice(data);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
            }
        }
    }

    impl AsyncWrite for CutTls {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_stream_cut_without_close_notify_is_an_error_of_its_side_not_an_end() {
        let (c1, c2) = counters();
        for tls_is_a in [true, false] {
            let (mut plain, _app) = tokio::io::duplex(1024);
            let mut tls = CutTls(Some(b"partial"));
            let counters = Counters { a_to_b: &c1, b_to_a: &c2 };
            let r = if tls_is_a {
                bidirectional(&mut tls, &mut plain, Duration::from_secs(5), counters).await
            } else {
                bidirectional(&mut plain, &mut tls, Duration::from_secs(5), counters).await
            };
            let err = r.unwrap_err();
            let want = if tls_is_a { Side::A } else { Side::B };
            assert_eq!(err.side(), Some(want), "{err}");
            assert!(
                matches!(&err, CopyError::Stream { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn idle_connection_times_out() {
        let (_client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, _server) = tokio::io::duplex(1024);
        let (c1, c2) = counters();
        let started = std::time::Instant::now();
        let err = bidirectional(
            &mut proxy_a,
            &mut proxy_b,
            Duration::from_millis(300),
            Counters { a_to_b: &c1, b_to_a: &c2 },
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(matches!(err, CopyError::Idle(_)), "{err}");
    }

    #[tokio::test]
    async fn activity_postpones_the_idle_timeout() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let (c1, c2) = counters();
        let task = tokio::spawn(async move {
            bidirectional(&mut proxy_a, &mut proxy_b, Duration::from_millis(500), Counters { a_to_b: &c1, b_to_a: &c2 })
                .await
        });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
        }
        assert!(!task.is_finished(), "1.5 s of traffic every 0.3 s must not hit a 0.5 s idle timeout");
        client.shutdown().await.unwrap();
        server.shutdown().await.unwrap();
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn read_ahead_serves_small_reads_and_holds_no_buffer_when_drained() {
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        writer.write_all(&data).await.unwrap();
        drop(writer);
        let mut r = ReadAhead::new(reader);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            assert_eq!(r.buf.is_some(), r.pos < r.end, "a buffer is held only while bytes are unread");
        }
        assert_eq!(got, data);
        assert!(r.buf.is_none());
    }
}
