//! `podmesh config check`: parse the mesh proxy configuration and print it as JSON.

use crate::cli::SourceArgs;
use clap::Subcommand;
use mesh::lifecycle::EXIT_CONFIG_INVALID;
use std::process::ExitCode;

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

With initdata (--initdata, PODMESH_INITDATA, podmesh.initdata= or where Kata / the
cloud-api-adaptor deliver it) the report from --tsm-root must carry its digest (HOSTDATA /
MRCONFIGID): then \"attested\": true, \"initdata_digest\" is that value, and the settings
come only from its podmesh.env and the kernel command line (\"ignored\" lists the others).

Exit codes: 0 valid (or mesh disabled), 2 invalid configuration or initdata not confirmed by
the report (one-line reason), 1 other error.";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Check(src) = args.action;
    match src.load() {
        Ok(loaded) => {
            loaded.log_warnings();
            let crate::cli::Loaded { mesh: cfg, resolved, attested, .. } = loaded;
            let out = serde_json::json!({
                "enabled": cfg.is_some(),
                "config": cfg,
                "settings": resolved.settings.iter().flatten().collect::<Vec<_>>(),
                "warnings": resolved.warnings,
                "ignored": resolved.ignored,
                "attested": attested.is_some(),
                "initdata_digest": attested.as_ref().map(|v| v.digest_hex.clone()),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            tracing::error!(PODMESH_EVENT = e.event(), "invalid mesh configuration: {e}");
            Ok(ExitCode::from(EXIT_CONFIG_INVALID))
        }
    }
}
