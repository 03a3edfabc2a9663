//! `podmesh-coordinator manifest get|set` and `ca`: talk to a running coordinator.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use coordinator::manifest::Manifest;
use std::path::PathBuf;
use wire::client::{Client, ServerTrust};

#[derive(Args)]
pub struct ClientArgs {
    /// Coordinator URL, https://HOST:PORT.
    #[arg(long)]
    pub coordinator: String,
    /// The coordinator's root CA certificate (PEM), e.g. STATE/root-ca.pem.
    #[arg(long, conflicts_with = "root_fingerprint")]
    pub root_ca: Option<PathBuf>,
    /// SHA-256 (hex) of the coordinator's root CA certificate DER.
    #[arg(long)]
    pub root_fingerprint: Option<String>,
}

#[derive(Subcommand)]
pub enum ManifestCommand {
    /// Print the current manifest with its generation (JSON).
    Get(ClientArgs),
    /// Replace the manifest (rotates the mesh CA when it changed).
    Set {
        #[command(flatten)]
        client: ClientArgs,
        /// File holding the owner token (not its hash).
        #[arg(long)]
        token_file: PathBuf,
        /// The new manifest JSON.
        manifest: PathBuf,
    },
}

/// `manifest get|set`.
pub async fn manifest(cmd: ManifestCommand) -> Result<()> {
    match cmd {
        ManifestCommand::Get(args) => print_json(&client(&args)?.manifest().await?),
        ManifestCommand::Set { client: args, token_file, manifest } => {
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("reading owner token {}", token_file.display()))?;
            let body = std::fs::read(&manifest).with_context(|| format!("reading manifest {}", manifest.display()))?;
            Manifest::from_json(&body).with_context(|| format!("manifest {}", manifest.display()))?;
            print_json(&client(&args)?.set_manifest(token.trim(), body).await?)
        }
    }
}

/// `ca`.
pub async fn ca(args: ClientArgs) -> Result<()> {
    print_json(&client(&args)?.ca().await?)
}

fn client(args: &ClientArgs) -> Result<Client> {
    let trust = match (&args.root_ca, &args.root_fingerprint) {
        (Some(path), _) => ServerTrust::RootCaPem(
            std::fs::read_to_string(path).with_context(|| format!("reading root CA {}", path.display()))?,
        ),
        (None, Some(hex_fp)) => {
            let bytes = hex::decode(hex_fp.trim()).context("--root-fingerprint is not hex")?;
            ServerTrust::RootFingerprint(
                bytes.try_into().map_err(|_| anyhow::anyhow!("--root-fingerprint must be 32 bytes (64 hex digits)"))?,
            )
        }
        (None, None) => bail!("pass --root-ca FILE or --root-fingerprint HEX to authenticate the coordinator"),
    };
    Ok(Client::new(&args.coordinator, trust)?)
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
