//! `podmesh attest`: prove this VM to the coordinator and keep the mesh certificate fresh.
//!
//! Every setting comes from a flag, else the environment (`PODMESH_*`, also via the unit's
//! EnvironmentFile), else the kernel command line (`podmesh.<name>=`).

use crate::attest::coordinator::Coordinator;
use crate::attest::coordinator_tls::{parse_fingerprint, Trust};
use crate::attest::daemon::{self, DaemonError, Settings};
use crate::attest::{cert_info, endpoint::Endpoint, kernel_cmdline};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code for configuration errors (EX_CONFIG); the unit does not restart on it.
const EXIT_CONFIG: u8 = 78;

#[derive(clap::Args)]
pub struct Args {
    /// Coordinator address, host:port or [ipv6]:port [kernel cmdline: podmesh.coordinator=]
    #[arg(long, env = "PODMESH_COORDINATOR", value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// Verify the coordinator's TLS certificate against this root CA (PEM) [podmesh.coordinator_root_ca=]
    #[arg(long, env = "PODMESH_COORDINATOR_ROOT_CA", value_name = "FILE", conflicts_with = "coordinator_fingerprint")]
    coordinator_root_ca: Option<PathBuf>,
    /// Accept the coordinator only if the SHA-256 of its root CA certificate (DER) is this
    /// [podmesh.coordinator_fingerprint=]. With neither option: trust on first use (warned).
    #[arg(long, env = "PODMESH_COORDINATOR_FINGERPRINT", value_name = "SHA256")]
    coordinator_fingerprint: Option<String>,
    /// Where mesh-ca.pem, certChain.pem, key.pem and coordinator-root-ca.pem go
    #[arg(long, env = "PODMESH_TLS_DIR", default_value = "/run/podmesh/tls")]
    tls_dir: PathBuf,
    /// configfs-tsm mount point
    #[arg(long, env = "PODMESH_TSM_ROOT", default_value = tsm::DEFAULT_ROOT)]
    tsm_root: PathBuf,
    /// configfs-tsm privlevel (SNP VMPL 0..3); the kernel default when unset
    #[arg(long, env = "PODMESH_TSM_PRIVLEVEL")]
    tsm_privlevel: Option<u8>,
    /// With no mesh configured: remove the deny table even when the coordinator is
    /// unreachable (or not configured) [podmesh.open_without_coordinator]
    #[arg(long, env = "PODMESH_OPEN_WITHOUT_COORDINATOR")]
    open_without_coordinator: bool,
    /// Network namespace holding the pod's deny table (peer-pods: podns); default: our own
    #[arg(long, env = "PODMESH_NETNS")]
    netns: Option<String>,
    /// First retry delay (e.g. 500ms, 2s)
    #[arg(long, env = "PODMESH_BACKOFF_INITIAL", default_value = "1s", value_parser = parse_duration)]
    backoff_initial: Duration,
    /// Longest retry delay
    #[arg(long, env = "PODMESH_BACKOFF_MAX", default_value = "60s", value_parser = parse_duration)]
    backoff_max: Duration,
    /// Deadline for one request to the coordinator
    #[arg(long, env = "PODMESH_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Do not publish status on the system bus
    #[arg(long, env = "PODMESH_NO_DBUS")]
    no_dbus: bool,
    /// Exit 0 after the first certificate is written (no renewal)
    #[arg(long)]
    once: bool,
    /// Kernel command line to read podmesh.* settings from
    #[arg(long, default_value = "/proc/cmdline", hide = true)]
    kernel_cmdline: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let cmdline = std::fs::read_to_string(&args.kernel_cmdline).unwrap_or_default();
    let settings = match runtime.block_on(settings(args, &cmdline)) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!(PODMESH_EVENT = "config_invalid", "{e:#}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    match runtime.block_on(daemon::run(settings)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ DaemonError::NoTee(_)) => {
            tracing::error!(PODMESH_EVENT = "no_tee", "{e}; the deny table stays in place");
            Ok(ExitCode::from(daemon::EXIT_NO_TEE))
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolve flags/env/kernel command line. `None`: nothing to do (opened without coordinator).
async fn settings(args: Args, cmdline: &str) -> anyhow::Result<Option<Settings>> {
    let from_cmdline = |key: &str| kernel_cmdline::value(cmdline, &format!("podmesh.{key}")).filter(|v| !v.is_empty());
    let open_without_coordinator =
        args.open_without_coordinator || kernel_cmdline::flag(cmdline, "podmesh.open_without_coordinator");
    let mesh_configured = mesh_configured(&args.kernel_cmdline)?;
    let Some(address) = args.coordinator.clone().or_else(|| from_cmdline("coordinator")) else {
        if open_without_coordinator && !mesh_configured {
            tracing::warn!(PODMESH_EVENT = "no_coordinator", "no coordinator configured and no mesh: opening the pod without a certificate (--open-without-coordinator)");
            let was = firewall::deny::remove(args.netns.as_deref())?;
            tracing::warn!(PODMESH_EVENT = "deny_removed", "deny table {}", if was { "removed" } else { "was already absent" });
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            return Ok(None);
        }
        anyhow::bail!("no coordinator configured: set --coordinator, PODMESH_COORDINATOR or podmesh.coordinator= on the kernel command line");
    };
    let endpoint: Endpoint = address.parse()?;
    let root_ca = args.coordinator_root_ca.clone().or_else(|| from_cmdline("coordinator_root_ca").map(PathBuf::from));
    let fingerprint = args.coordinator_fingerprint.clone().or_else(|| from_cmdline("coordinator_fingerprint"));
    let trust = match (root_ca, fingerprint) {
        (Some(_), Some(_)) => anyhow::bail!("set either a coordinator root CA or a coordinator fingerprint, not both"),
        (Some(path), None) => {
            let pem = std::fs::read(&path).with_context(|| format!("reading coordinator root CA {}", path.display()))?;
            let mut certs = cert_info::parse_pem_chain(&path.display().to_string(), &pem)?;
            if certs.len() != 1 {
                anyhow::bail!("coordinator root CA {}: expected one certificate, found {}", path.display(), certs.len());
            }
            Trust::RootCa { pem: String::from_utf8_lossy(&pem).into_owned(), der: certs.remove(0) }
        }
        (None, Some(fp)) => Trust::Fingerprint(parse_fingerprint(&fp)?),
        (None, None) => Trust::FirstUse,
    };
    if let Some(level) = args.tsm_privlevel {
        anyhow::ensure!(level <= tsm::PRIVLEVEL_MAX, "--tsm-privlevel {level} is above the maximum {}", tsm::PRIVLEVEL_MAX);
    }
    tracing::info!(
        PODMESH_EVENT = "attest_starting",
        "attesting to coordinator {endpoint} ({}), tls dir {}, mesh {}",
        match &trust {
            Trust::RootCa { .. } => "verified against the configured root CA",
            Trust::Fingerprint(_) => "verified against the configured fingerprint",
            Trust::FirstUse => "TRUST ON FIRST USE",
        },
        args.tls_dir.display(),
        if mesh_configured { "configured: the proxy opens the pod" } else { "not configured: this daemon opens the pod" },
    );
    Ok(Some(Settings {
        coordinator: Coordinator::new(endpoint, trust, args.request_timeout)?,
        tls_dir: args.tls_dir,
        tsm_root: args.tsm_root,
        privlevel: args.tsm_privlevel,
        mesh_configured,
        open_without_coordinator,
        netns: args.netns,
        backoff_initial: args.backoff_initial,
        backoff_max: args.backoff_max,
        dbus: !args.no_dbus,
        once: args.once,
    }))
}

/// Whether the proxy config grammar finds a mesh (then the proxy removes the deny table).
/// An invalid configuration is an error: nobody opens the pod.
fn mesh_configured(cmdline: &std::path::Path) -> anyhow::Result<bool> {
    let sources = mesh::config::Sources::system(None, Some(cmdline)).context("reading the mesh configuration")?;
    Ok(mesh::config::load(&sources).context("mesh configuration")?.is_some())
}

/// `500ms`, `2s`, `5m`, `1h`, or plain seconds.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("{raw:?} is not a duration like 500ms, 2s, 5m or 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{raw:?} is not a duration like 500ms, 2s, 5m or 1h")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "s", "1x", "-1s", "1.5s", "99999999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Resolves settings from `argv` with an empty kernel command line (and no env influence
    /// beyond what the test process has: the PODMESH_* variables are not set in tests).
    fn resolve(argv: &[&str], cmdline: &str) -> Result<Option<Settings>, String> {
        let dir = tempfile::tempdir().unwrap();
        let cmdline_file = dir.path().join("cmdline");
        std::fs::write(&cmdline_file, cmdline).unwrap();
        let mut full = vec!["attest", "--kernel-cmdline", cmdline_file.to_str().unwrap()];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(settings(cli.args, cmdline)).map_err(|e| format!("{e:#}"))
    }

    fn err(argv: &[&str], cmdline: &str) -> String {
        match resolve(argv, cmdline) {
            Ok(_) => panic!("{argv:?} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_settings_are_named_errors() {
        assert!(err(&[], "").contains("no coordinator configured"));
        assert!(err(&["--coordinator", "host"], "").contains("missing :port"));
        assert!(err(&["--coordinator", "h:1", "--coordinator-fingerprint", "xyz"], "").contains("not 64 hex digits"));
        assert!(err(&["--coordinator", "h:1", "--tsm-privlevel", "4"], "").contains("above the maximum"));
        assert!(err(&["--coordinator", "h:1", "--backoff-max", "soon"], "").contains("not a duration"));
        let e = err(&["--coordinator", "h:1", "--coordinator-root-ca", "/nonexistent/root.pem"], "");
        assert!(e.contains("reading coordinator root CA /nonexistent/root.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("root.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let e = err(&["--coordinator", "h:1", "--coordinator-root-ca", garbage.to_str().unwrap()], "");
        assert!(e.contains("root.pem") && e.contains("no certificate"), "{e}");
        // Both trust options (one from the kernel command line) is ambiguous.
        let fp = "ab".repeat(32);
        let e = err(&["--coordinator", "h:1", "--coordinator-root-ca", garbage.to_str().unwrap()], &format!("podmesh.coordinator_fingerprint={fp}"));
        assert!(e.contains("not both"), "{e}");
        // An invalid mesh configuration stops the daemon too (nobody may open the pod).
        let e = err(&["--coordinator", "h:1"], "podmesh.ingress=web#99999#true");
        assert!(e.contains("mesh configuration"), "{e}");
    }

    #[test]
    fn the_kernel_command_line_is_the_last_source() {
        let fp = "ab".repeat(32);
        let s = resolve(&[], &format!("quiet podmesh.coordinator=10.0.0.1:1313 podmesh.coordinator_fingerprint={fp}")).unwrap().unwrap();
        assert!(!s.mesh_configured && !s.open_without_coordinator);
        let s = resolve(&["--coordinator", "c:1"], "podmesh.coordinator=ignored:2 podmesh.open_without_coordinator").unwrap().unwrap();
        assert!(s.open_without_coordinator);
        let s = resolve(&["--coordinator", "c:1"], "podmesh.ingress=web#8080#true").unwrap().unwrap();
        assert!(s.mesh_configured);
    }
}
