//! `podmesh-coordinator owner-token`: a new owner token on stdout, its SHA-256 to a file.

use anyhow::Result;
use coordinator::owner;
use std::path::Path;

pub fn run(hash_out: &Path) -> Result<()> {
    let (token, hash) = owner::generate();
    coordinator::state::write_atomic(hash_out, format!("{hash}\n").as_bytes(), 0o644)?;
    println!("{token}");
    Ok(())
}
