//! `podmesh status` (not yet implemented).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("podmesh status is not implemented yet")
}
