//! `podmesh deny install|remove|status`: the default-deny ingress table `inet podmesh_deny`.

use crate::cli::NetnsArg;
use anyhow::Context;
use clap::Subcommand;
use mesh::lifecycle::EXIT_DENY_ABSENT;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Exit codes: 0 success (for `status`: installed), 3 `status` only: table absent, \
1 error (nft missing, kernel without nf_tables, no such netns, not root).")]
pub struct Args {
    #[command(flatten)]
    netns: NetnsArg,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Install (or atomically replace) the table: loopback and established/related traffic
    /// pass, every new inbound connection is dropped (IPv4 and IPv6).
    Install,
    /// Remove the table; succeeds (and logs deny_absent) when it is not installed.
    Remove,
    /// Print whether the table is installed. Exit 0 installed, 3 absent.
    #[command(after_help = "Exit codes: 0 installed, 3 absent, 1 error.")]
    Status,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let netns = args.netns.name.as_deref();
    let where_ = netns.map(|n| format!(" in netns {n}")).unwrap_or_default();
    let table = format!("inet {}", firewall::deny::TABLE);
    match args.action {
        Action::Install => {
            firewall::deny::install(netns).context("podmesh deny install")?;
            tracing::info!(
                PODMESH_EVENT = "deny_installed",
                NETNS = netns.unwrap_or(""),
                "installed {table}{where_}: new inbound connections are dropped"
            );
        }
        Action::Remove => {
            if firewall::deny::remove(netns).context("podmesh deny remove")? {
                tracing::info!(
                    PODMESH_EVENT = "deny_removed",
                    NETNS = netns.unwrap_or(""),
                    "removed {table}{where_}: inbound connections are allowed"
                );
            } else {
                tracing::info!(
                    PODMESH_EVENT = "deny_absent",
                    NETNS = netns.unwrap_or(""),
                    "{table} was not installed{where_}: nothing to remove"
                );
            }
        }
        Action::Status => {
            let installed = firewall::deny::is_installed(netns).context("podmesh deny status")?;
            println!("{table}{where_}: {}", if installed { "installed" } else { "absent" });
            if !installed {
                return Ok(ExitCode::from(EXIT_DENY_ABSENT));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
