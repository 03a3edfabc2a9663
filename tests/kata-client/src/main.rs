//! `pmvm-kata`: the VM boot test's stand-in for the Kata runtime. It speaks the real
//! kata-agent's ttRPC API over the agent's unix socket, from inside the guest:
//!
//! - `details`: GetGuestDetails (the agent's version);
//! - `run-pod`: CreateSandbox, CreateContainer from a directory of the image, StartContainer.
//!
//! No ExecProcess: with the agent not PID 1 (the cloud-api-adaptor way, under systemd) kata-agent
//! 4.1.0 answers it with "failed to join pidns: EINVAL" (seen in the VM and on a plain host), so
//! the VM test looks inside the container through the container's own CGI program instead.
//! Each command opens its own connection. kata-agent-ctl is not used for this: its fixed OCI
//! template gives the container a new network namespace (a Kata pod shares the VM's) and it
//! pulls an image for CreateContainer.

mod agent;
mod proto;
mod ttrpc;

use agent::{Agent, Pod};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Drive the kata-agent over its ttRPC socket as the Kata runtime would (VM test only)")]
struct Cli {
    /// The agent's socket (server_addr in /etc/agent-config.toml).
    #[arg(long, default_value = "/run/kata-agent.sock")]
    socket: PathBuf,
    /// Per-call timeout in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// GetGuestDetails: the agent's version.
    Details,
    /// CreateSandbox, CreateContainer (local rootfs, the VM's network), StartContainer.
    RunPod {
        #[arg(long)]
        sandbox: String,
        #[arg(long)]
        container: String,
        #[arg(long, default_value = "pod")]
        hostname: String,
        /// The container's root file system: a directory in the VM.
        #[arg(long)]
        rootfs: String,
        /// The container's process.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
}

fn step<T>(what: &str, f: impl FnOnce() -> Result<T, agent::AgentError>) -> anyhow::Result<T> {
    let t0 = Instant::now();
    let out = f().with_context(|| format!("{what} failed"))?;
    println!("{what}: ok ({} ms)", t0.elapsed().as_millis());
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let timeout = Duration::from_secs(cli.timeout);
    let client = ttrpc::Client::connect(&cli.socket, timeout)?;
    let mut agent = Agent::new(client, timeout);
    match cli.command {
        Command::Details => {
            let d = agent.guest_details()?;
            println!("kata-agent {} (init daemon: {}, seccomp: {})", d.version, d.init_daemon, d.supports_seccomp);
        }
        Command::RunPod { sandbox, container, hostname, rootfs, args } => {
            let pod = Pod {
                sandbox_id: &sandbox,
                container_id: &container,
                hostname: &hostname,
                rootfs: &rootfs,
                args: &args,
            };
            let d = step("GetGuestDetails", || agent.guest_details())?;
            println!(
                "agent: kata-agent {} (init daemon: {}, seccomp: {})",
                d.version, d.init_daemon, d.supports_seccomp
            );
            step(&format!("CreateSandbox {sandbox} (hostname {hostname})"), || agent.create_sandbox(&pod))?;
            step(&format!("CreateContainer {container} (rootfs {rootfs}, args {args:?})"), || {
                agent.create_container(&pod)
            })?;
            step(&format!("StartContainer {container}"), || agent.start_container(&container))?;
        }
    }
    Ok(())
}
