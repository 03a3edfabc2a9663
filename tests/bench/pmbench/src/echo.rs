//! Byte-exact data check through a proxy pair: an echo server behind the pair,
//! and a client that sends pseudo-random bytes and compares what comes back.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

pub async fn serve(listen: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let l = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    loop {
        let (s, _) = l.accept().await.context("accept failed")?;
        tokio::spawn(async move {
            let (mut r, mut w) = s.into_split();
            // Copies until the client's FIN, then sends ours: half-close preserved.
            if let Err(e) = tokio::io::copy(&mut r, &mut w).await {
                eprintln!("pmbench echo-serve: {e}");
            }
            let _ = w.shutdown().await;
        });
    }
}

/// xorshift64*: reproducible bytes that make a shifted or repeated block visible.
fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let mut x = seed ^ (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *b = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
    }
}

/// Sends `bytes` and reads them back. With `half_close` the FIN goes out right after the last
/// byte and the echo must still arrive in full (the proxies propagate half-close); without,
/// the FIN goes out only after everything came back.
async fn check_one(addr: SocketAddr, seed: u64, bytes: u64, half_close: bool) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr} failed"))?;
    let (mut r, mut w) = s.into_split();
    let (all_back_tx, all_back) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0;
        while off < bytes {
            let n = (bytes - off).min(buf.len() as u64) as usize;
            fill(seed, off, &mut buf[..n]);
            w.write_all(&buf[..n]).await.context("sending failed")?;
            off += n as u64;
        }
        if !half_close {
            let _ = all_back.await;
        }
        w.shutdown().await.context("half-close (FIN) failed")?;
        Ok::<_, anyhow::Error>(())
    });
    let (mut got, mut buf, mut want) = (0u64, vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut all_back_tx = Some(all_back_tx);
    loop {
        if got == bytes {
            if let Some(tx) = all_back_tx.take() {
                let _ = tx.send(());
            }
        }
        let n = r.read(&mut buf).await.context("receiving failed")?;
        if n == 0 {
            break;
        }
        if got + n as u64 > bytes {
            bail!("received more bytes than sent ({} > {bytes})", got + n as u64);
        }
        fill(seed, got, &mut want[..n]);
        if let Some(i) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
            bail!("byte {} differs from what was sent", got + i as u64);
        }
        got += n as u64;
    }
    writer.await.context("writer panicked")??;
    if got != bytes {
        bail!("received {got} of {bytes} bytes before EOF");
    }
    Ok(())
}

pub async fn check(
    addr: SocketAddr,
    bytes: u64,
    conns: u32,
    limit: Duration,
    half_close: bool,
) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns.max(1) {
        tasks.push(tokio::spawn(check_one(addr, 0xC0FFEE + u64::from(i), bytes, half_close)));
    }
    let all = async {
        for (i, t) in tasks.into_iter().enumerate() {
            t.await
                .context("check task panicked")?
                .with_context(|| format!("echo check connection {i} through {addr}"))?;
        }
        Ok::<_, anyhow::Error>(())
    };
    timeout(limit, all)
        .await
        .with_context(|| format!("echo check through {addr} did not finish within {limit:?}"))??;
    Ok(
        serde_json::json!({ "ok": true, "half_close": half_close, "bytes": bytes * u64::from(conns.max(1)), "seconds": start.elapsed().as_secs_f64() }),
    )
}
