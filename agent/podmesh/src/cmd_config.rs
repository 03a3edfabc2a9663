//! `podmesh config` (not yet implemented).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("podmesh config is not implemented yet")
}
