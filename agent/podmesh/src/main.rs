//! `podmesh`: the guest binary. One subcommand per systemd unit, plus inspection tools.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
mod attest;
mod cli;
mod cmd_attest;
mod cmd_config;
mod cmd_deny;
mod cmd_proxy;
mod cmd_status;
mod initdata_check;
mod logging;
mod sys;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "podmesh", version, about = "Guest side of a confidential service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install, remove or inspect the default-deny ingress table (inet podmesh_deny).
    Deny(cmd_deny::Args),
    /// Attest this VM to the coordinator and keep the mesh certificate fresh.
    Attest(cmd_attest::Args),
    /// Run the mesh proxy: TPROXY ingress with (m)TLS termination and egress origination.
    Proxy(cmd_proxy::Args),
    /// Parse and check the mesh proxy configuration.
    Config(cmd_config::Args),
    /// Show the state of the deny table, certificates and proxy.
    Status(cmd_status::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        Command::Deny(a) => cmd_deny::run(a),
        Command::Attest(a) => cmd_attest::run(a),
        Command::Proxy(a) => cmd_proxy::run(a),
        Command::Config(a) => cmd_config::run(a),
        Command::Status(a) => cmd_status::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line that explains the failure: the whole cause chain.
            tracing::error!(PODMESH_EVENT = "failed", "{e:#}");
            ExitCode::FAILURE
        }
    }
}
