//! `podmesh config check`: parse the mesh proxy configuration and print it as JSON.

use clap::Subcommand;
use mesh::config::{self, Sources};
use std::{path::PathBuf, process::ExitCode};

/// Exit code when the configuration is invalid.
pub const EXIT_INVALID: u8 = 2;

/// Where the configuration comes from; flatten into any subcommand that needs it.
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Also read variables from FILE (systemd EnvironmentFile syntax). Precedence per
    /// setting: process environment > env-file > kernel command line.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Kernel command line to read podmesh.ingress=, podmesh.egress=, podmesh.admin_port=,
    /// podmesh.ingress_udp= from.
    #[arg(long, value_name = "FILE", default_value = config::PROC_CMDLINE)]
    pub cmdline: PathBuf,
}

impl SourceArgs {
    /// Reads all sources (files included).
    pub fn sources(&self) -> Result<Sources, config::ConfigError> {
        Sources::system(self.env_file.as_deref(), Some(&self.cmdline))
    }

    /// Reads and parses the configuration; `None` = no mesh configured. Warnings are logged.
    #[allow(dead_code)] // for the attest and proxy subcommands
    pub fn load(&self) -> Result<Option<config::MeshConfig>, config::ConfigError> {
        config::load(&self.sources()?)
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Parse the configuration and print it as JSON ({"enabled": bool, "config", "settings",
    /// "warnings"}); the error on stderr and exit 2 when it is invalid.
    #[command(after_help = CHECK_HELP)]
    Check(SourceArgs),
}

const CHECK_HELP: &str = "\
Settings (legacy EDG_* names accepted; CONTRAST_* wins, with a warning):
  CONTRAST_INGRESS_PROXY_CONFIG  podmesh.ingress=     DISABLED | name#port#bool##...
  CONTRAST_EGRESS_PROXY_CONFIG   podmesh.egress=      name#127.x.y.z:port#host:port[#strict]##...
  CONTRAST_ADMIN_PORT            podmesh.admin_port=  port
  PODMESH_INGRESS_UDP            podmesh.ingress_udp= name#port##...  (podmesh extension)
Ingress bool: true = plaintext to the app, false = TLS without client certificate; unlisted
ports require mTLS. Egress remote: DNS name, IPv4 or [IPv6]; #strict also checks the remote
certificate's SAN against the host. Ingress UDP: the only UDP ports open to new inbound
flows once the proxy is ready (every other non-TCP flow stays dropped). No Contrast setting
anywhere: mesh disabled (\"enabled\": false).

Exit codes: 0 valid (or mesh disabled), 2 invalid configuration, 1 other error.";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Check(src) = args.action;
    let checked = src.sources().and_then(|s| {
        let resolved = s.resolve()?;
        Ok((config::parse(&resolved)?, resolved))
    });
    match checked {
        Ok((cfg, resolved)) => {
            for w in &resolved.warnings {
                tracing::warn!(PODMESH_EVENT = "config_warning", "{w}");
            }
            let out = serde_json::json!({
                "enabled": cfg.is_some(),
                "config": cfg,
                "settings": resolved.settings.iter().flatten().collect::<Vec<_>>(),
                "warnings": resolved.warnings,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            tracing::error!(PODMESH_EVENT = "config_invalid", "invalid mesh configuration: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}
