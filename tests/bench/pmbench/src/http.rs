//! HTTP/1.1 load through a proxy pair: fixed-rate keep-alive requests, one new
//! connection per request, and idle connections held open.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: app.pmbn\r\n\r\n";
const CLOSE_REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: app.pmbn\r\nConnection: close\r\n\r\n";

async fn open(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr} timed out"))?
        .with_context(|| format!("connect to {addr} failed"))?;
    s.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    Ok(s)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one `200` response with a Content-Length body off a keep-alive connection.
/// `buf` keeps bytes beyond the response (there are none without pipelining).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.context("reading response header failed")?;
        if n == 0 {
            bail!("connection closed before the response header ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("unexpected response status line {:?}", head.lines().next().unwrap_or(""));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .context("response has no Content-Length")?
        .trim()
        .parse()
        .context("response Content-Length is not a number")?;
    while buf.len() < header_end + len {
        let n = s.read(&mut chunk).await.context("reading response body failed")?;
        if n == 0 {
            bail!("connection closed inside the response body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..header_end + len);
    Ok(())
}

async fn request(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    timeout(IO_TIMEOUT, async {
        s.write_all(KEEPALIVE_REQ).await.context("writing request failed")?;
        read_response(s, buf).await
    })
    .await
    .context("request timed out")?
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn latency_summary(mut us: Vec<u64>) -> serde_json::Value {
    us.sort_unstable();
    serde_json::json!({
        "p50_us": percentile(&us, 0.50),
        "p90_us": percentile(&us, 0.90),
        "p99_us": percentile(&us, 0.99),
        "p999_us": percentile(&us, 0.999),
        "max_us": us.last().copied().unwrap_or(0),
    })
}

pub async fn rate(
    addr: SocketAddr,
    rps: u32,
    conns: u32,
    run: Duration,
    warmup: Duration,
) -> anyhow::Result<serde_json::Value> {
    if rps == 0 || conns == 0 {
        bail!("--rps and --conns must be positive");
    }
    let mut streams = Vec::new();
    for _ in 0..conns {
        streams.push(open(addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let record_from = start + warmup;
    let end = record_from + run;
    let interval = Duration::from_secs_f64(f64::from(conns) / f64::from(rps));
    let mut tasks = Vec::new();
    for (i, mut s) in streams.into_iter().enumerate() {
        let mut next = start + Duration::from_secs_f64(i as f64 / f64::from(rps));
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut buf) = (Vec::new(), 0u64, Vec::new());
            let mut last_done = start;
            while next < end {
                // Late because the previous response arrived after this request was due:
                // the wait counts (no coordinated omission). On time: count from the real
                // send, so the 1 ms timer granularity does not pollute the figure.
                let t0 = if last_done > next {
                    next
                } else {
                    sleep_until(next.into()).await;
                    Instant::now()
                };
                match request(&mut s, &mut buf).await {
                    Ok(()) => {
                        if next >= record_from {
                            lat.push(t0.elapsed().as_micros() as u64);
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        eprintln!("pmbench rate: {e:#}");
                        buf.clear();
                        match open(addr).await {
                            Ok(n) => s = n,
                            Err(e) => return Err(e),
                        }
                    }
                }
                last_done = Instant::now();
                next += interval;
            }
            Ok::<_, anyhow::Error>((lat, errors))
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (lat, e) = t.await.context("rate task panicked")??;
        all.extend(lat);
        errors += e;
    }
    let done = all.len();
    let mut out = latency_summary(all);
    out["target_rps"] = rps.into();
    out["rps"] = (done as f64 / run.as_secs_f64()).into();
    out["requests"] = done.into();
    out["errors"] = errors.into();
    Ok(out)
}

async fn one_closed_request(addr: SocketAddr) -> anyhow::Result<()> {
    timeout(IO_TIMEOUT, async {
        let mut s = open(addr).await?;
        s.write_all(CLOSE_REQ).await.context("writing request failed")?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.context("reading response failed")?;
        if !resp.starts_with(b"HTTP/1.1 200") {
            bail!(
                "unexpected response ({} bytes) {:?}",
                resp.len(),
                String::from_utf8_lossy(&resp[..resp.len().min(40)])
            );
        }
        Ok(())
    })
    .await
    .context("request timed out")?
}

pub async fn connect(addr: SocketAddr, concurrency: u32, run: Duration) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let end = start + run;
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < end {
                let t0 = Instant::now();
                match one_closed_request(addr).await {
                    Ok(()) => lat.push(t0.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("pmbench connect: {e:#}");
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (lat, e) = t.await.context("connect task panicked")?;
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = all.len();
    let mut out = latency_summary(all);
    out["conn_per_s"] = (done as f64 / elapsed).into();
    out["connections"] = done.into();
    out["errors"] = errors.into();
    Ok(out)
}

pub async fn hold(addr: SocketAddr, count: u32, parallel: u32, hold: Duration) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1) as usize));
    let mut tasks = Vec::new();
    for _ in 0..count {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            let mut s = open(addr).await?;
            request(&mut s, &mut Vec::new()).await?;
            Ok::<_, anyhow::Error>(s)
        }));
    }
    let (mut held, mut errors) = (Vec::new(), 0u64);
    for t in tasks {
        match t.await.context("hold task panicked")? {
            Ok(s) => held.push(s),
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("pmbench hold: {e:#}");
                }
            }
        }
    }
    // The caller measures while we hold: announce now, on one line.
    println!(
        "{}",
        serde_json::json!({ "held": held.len(), "errors": errors, "open_seconds": start.elapsed().as_secs_f64() })
    );
    tokio::time::sleep(hold).await;
    Ok(serde_json::json!({ "released": held.len() }))
}
