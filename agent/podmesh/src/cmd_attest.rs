//! `podmesh attest` (not yet implemented).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("podmesh attest is not implemented yet")
}
