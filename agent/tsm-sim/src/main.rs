//! `tsm-sim`: mount a simulated configfs-tsm, export the simulated trust anchor, or write
//! one piece of evidence to files. One `cmd_*` module per subcommand, as in `podmesh`.

// The package's other dependencies are its library's, where the lint checks them.
#![allow(unused_crate_dependencies)]

mod cmd_anchor;
mod cmd_evidence;
mod cmd_mount;
mod signer_args;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tsm-sim",
    version,
    about = "configfs-tsm emulator (FUSE) with a simulated SEV-SNP / TDX signer.\n\
Evidence has the real binary layout but is signed under a SIMULATED trust anchor: a verifier accepts it only when explicitly told to trust that anchor."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount a simulated /sys/kernel/config/tsm at --root and serve it in the foreground
    /// until SIGTERM/SIGINT (then unmount cleanly).
    Mount(cmd_mount::MountArgs),
    /// Export the simulated trust anchor to --out: SNP ark.pem, ask.pem, cert_chain.pem;
    /// TDX intel_root.der/.pem and collateral.json (signed TCB info + QE identity + CRLs,
    /// valid 30 days: re-export to refresh).
    Anchor(cmd_anchor::AnchorArgs),
    /// Generate one report for --report-data without FUSE and write it to files in --out
    /// (SNP: report.bin, auxblob.bin, vcek.der; TDX: quote.bin).
    Evidence(cmd_evidence::EvidenceArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Mount(a) => cmd_mount::mount(a),
        Cmd::Anchor(a) => cmd_anchor::anchor(a),
        Cmd::Evidence(a) => cmd_evidence::evidence(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsm-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
