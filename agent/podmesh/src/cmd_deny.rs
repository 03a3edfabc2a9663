//! `podmesh deny` (not yet implemented).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("podmesh deny is not implemented yet")
}
