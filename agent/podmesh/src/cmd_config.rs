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
    /// Parse the configuration and print it as JSON ({"enabled": bool, "config",
    /// "identity_rules", "settings", "warnings"}); the error on stderr and exit 2 when it is
    /// invalid.
    #[command(after_help = CHECK_HELP)]
    Check(SourceArgs),
}

const CHECK_HELP: &str = "\
Settings (legacy EDG_* names accepted; CONTRAST_* wins, with a warning):
  CONTRAST_INGRESS_PROXY_CONFIG  podmesh.ingress=     DISABLED | name#port#bool##... | name#port#mtls[#id1|id2]
  CONTRAST_EGRESS_PROXY_CONFIG   podmesh.egress=      name#127.x.y.z:port#host:port[#strict|#any|#id1|id2]##...
  CONTRAST_ADMIN_PORT            podmesh.admin_port=  port
  PODMESH_INGRESS_UDP            podmesh.ingress_udp= name#port##...  (podmesh extension)
Ingress bool (Go's ParseBool: 1 t T TRUE True true / 0 f F FALSE False false): true =
plaintext to the app, false = TLS without client certificate; unlisted ports require mTLS.
mtls (extension) names an mTLS port; its optional list admits only client certificates with
one of these DNS or URI SANs. Egress remote: DNS name, IPv4 or [IPv6]; the remote's
certificate must carry the host as a SAN (#strict: the same), or one of the listed
identities; #any accepts any mesh server (warned). \"identity_rules\" says who may talk to
whom. Ingress UDP: the only UDP ports open to new inbound
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
            let plan = cfg.as_ref().map(mesh::proxy::Plan::from_config);
            let mut warnings = resolved.warnings.clone();
            warnings.extend(plan.iter().flat_map(mesh::proxy::Plan::identity_warnings));
            let out = serde_json::json!({
                "enabled": cfg.is_some(),
                "config": cfg,
                "identity_rules": plan.as_ref().map(mesh::proxy::Plan::identity_rules),
                "settings": resolved.settings.iter().flatten().collect::<Vec<_>>(),
                "warnings": warnings,
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
