//! `podmesh-coordinator`: serve the attestation/CA API, or talk to a running coordinator.
//! One `cmd_*` module per subcommand, as in `podmesh`.

// The package's other dependencies are its library's, where the lint checks them.
#![allow(unused_crate_dependencies)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod cmd_client;
mod cmd_evidence;
mod cmd_initdata;
mod cmd_owner_token;
mod cmd_reference_values;
mod cmd_serve;

#[derive(Parser)]
#[command(
    name = "podmesh-coordinator",
    version,
    about = "podmesh coordinator: verifies TEE evidence against a manifest and issues mesh certificates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the coordinator API over HTTPS.
    Serve(cmd_serve::ServeArgs),
    /// Read or replace the manifest of a running coordinator.
    #[command(subcommand)]
    Manifest(cmd_client::ManifestCommand),
    /// Print the CA certificates of a running coordinator (JSON), for data owners.
    Ca(cmd_client::ClientArgs),
    /// Inspect and verify TEE evidence files offline (prints the verified claims as JSON).
    #[command(subcommand)]
    Evidence(cmd_evidence::Command),
    /// Attested configuration: initdata digests (HOSTDATA / MRCONFIGID) and Contrast's annotations.
    #[command(subcommand)]
    Initdata(cmd_initdata::Command),
    /// Launch measurements computed before boot (SNP launch digest, TDX MRTD/RTMRs), as JSON.
    #[command(subcommand)]
    ReferenceValues(cmd_reference_values::Command),
    /// Generate an owner token: prints the token on stdout, writes its SHA-256 (hex) to --hash-out.
    OwnerToken {
        /// Where to write the hash (pass this file to `serve --owner-token-file`).
        #[arg(long)]
        hash_out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => cmd_serve::serve(args).await,
        Command::Manifest(cmd) => cmd_client::manifest(cmd).await,
        Command::Ca(args) => cmd_client::ca(args).await,
        Command::Evidence(cmd) => cmd_evidence::run(cmd),
        Command::Initdata(cmd) => cmd_initdata::run(cmd),
        Command::ReferenceValues(cmd) => cmd_reference_values::run(cmd),
        Command::OwnerToken { hash_out } => cmd_owner_token::run(&hash_out),
    }
}
