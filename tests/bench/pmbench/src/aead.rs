//! The single-core AES-GCM rate of the exact record code rustls runs
//! (aws-lc-rs provider, TLS 1.3, 16 KiB records): the crypto term of the
//! benchmark's throughput bound.

use anyhow::Context;
use rustls::crypto::aws_lc_rs::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
use rustls::crypto::cipher::{InboundOpaqueMessage, Iv, OutboundChunks, OutboundPlainMessage};
use rustls::{ContentType, ProtocolVersion, SupportedCipherSuite};
use std::time::{Duration, Instant};

const RECORD: usize = 16384;
const HEADER: usize = 5;

fn gbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

/// AES-256-GCM (what the peers negotiate; the bound uses it) and AES-128-GCM.
pub fn measure(per_direction: Duration) -> anyhow::Result<serde_json::Value> {
    let mut out = rate(TLS13_AES_256_GCM_SHA384, per_direction)?;
    out["aes128"] = rate(TLS13_AES_128_GCM_SHA256, per_direction / 2)?;
    Ok(out)
}

fn rate(suite: SupportedCipherSuite, per_direction: Duration) -> anyhow::Result<serde_json::Value> {
    let SupportedCipherSuite::Tls13(suite) = suite else {
        anyhow::bail!("{:?} is not a TLS 1.3 suite", suite.suite());
    };
    // A key of the suite's length, derived as TLS 1.3 derives traffic keys (AeadKey has no
    // public constructor for 16-byte keys).
    let expander = suite.hkdf_provider.extract_from_secret(None, &[7u8; 48]);
    let key = || rustls::internal::derive_traffic_key(expander.as_ref(), suite.aead_alg);
    let iv = [9u8; 12];
    let mut enc = suite.aead_alg.encrypter(key(), Iv::new(iv));
    let mut dec = suite.aead_alg.decrypter(key(), Iv::new(iv));
    let plain = vec![0x5au8; RECORD];

    let (mut seq, mut bytes, start) = (0u64, 0u64, Instant::now());
    let mut sealed = Vec::new();
    while start.elapsed() < per_direction {
        for _ in 0..64 {
            let msg = OutboundPlainMessage {
                typ: ContentType::ApplicationData,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(&plain),
            };
            sealed = enc.encrypt(msg, seq).context("rustls record encryption failed")?.encode();
            seq += 1;
            bytes += RECORD as u64;
        }
    }
    let seal = gbit(bytes, start.elapsed());

    // Open the same record again and again (with its sequence number), copying it first as a
    // receiver copies out of its socket buffer.
    let mut buf = sealed.clone();
    let last = seq - 1;
    let (mut bytes, start) = (0u64, Instant::now());
    while start.elapsed() < per_direction {
        for _ in 0..64 {
            buf.copy_from_slice(&sealed);
            let msg =
                InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut buf[HEADER..]);
            let plain_len = dec.decrypt(msg, last).context("rustls record decryption failed")?.payload.len();
            anyhow::ensure!(plain_len == RECORD, "decrypted record has {plain_len} bytes, expected {RECORD}");
            bytes += RECORD as u64;
        }
    }
    let open = gbit(bytes, start.elapsed());
    // A proxied byte is sealed once and opened once: the per-core rate of that pair of steps,
    // expressed per byte moved, is the harmonic mean of the two.
    let mean = 2.0 / (1.0 / seal + 1.0 / open);
    Ok(
        serde_json::json!({ "suite": format!("{:?}", suite.common.suite), "seal_gbit": seal, "open_gbit": open, "gbit": mean, "record_bytes": RECORD }),
    )
}
