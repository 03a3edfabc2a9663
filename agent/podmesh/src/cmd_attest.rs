//! `podmesh attest`: prove this VM to the coordinator and keep the mesh certificate fresh.
//!
//! Every setting comes from a flag, else the environment (`PODMESH_*`, also via the unit's
//! EnvironmentFile), else `--env-file`, else the kernel command line (`podmesh.<name>=`): the
//! same loader, and so the same answer to "is a mesh configured", as `podmesh proxy`.

use crate::attest::coordinator::Coordinator;
use crate::attest::coordinator_tls::{parse_fingerprint, Trust};
use crate::attest::daemon::{self, DaemonError, Settings};
use crate::attest::{cert_info, endpoint::Endpoint};
use crate::cli::{Dur, LoadError, NetnsArg, SourceArgs, TlsDirArg};
use anyhow::Context;
use mesh::lifecycle::{EXIT_CONFIG, EXIT_NO_TEE};
use std::path::PathBuf;
use std::process::ExitCode;

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
    #[command(flatten)]
    tls_dir: TlsDirArg,
    #[command(flatten)]
    sources: SourceArgs,
    /// configfs-tsm privlevel (SNP VMPL 0..3); the kernel default when unset
    #[arg(long, env = "PODMESH_TSM_PRIVLEVEL")]
    tsm_privlevel: Option<u8>,
    /// With no mesh configured: remove the deny table even when the coordinator is
    /// unreachable (or not configured) [podmesh.open_without_coordinator]
    #[arg(long, env = "PODMESH_OPEN_WITHOUT_COORDINATOR")]
    open_without_coordinator: bool,
    /// The deny table removed when no mesh is configured lives there.
    #[command(flatten)]
    netns: NetnsArg,
    /// First retry delay (e.g. 500ms, 2s)
    #[arg(long, env = "PODMESH_BACKOFF_INITIAL", default_value = "1s")]
    backoff_initial: Dur,
    /// Longest retry delay
    #[arg(long, env = "PODMESH_BACKOFF_MAX", default_value = "60s")]
    backoff_max: Dur,
    /// Deadline for one request to the coordinator
    #[arg(long, env = "PODMESH_REQUEST_TIMEOUT", default_value = "10s")]
    request_timeout: Dur,
    /// Do not publish status on the system bus
    #[arg(long, env = "PODMESH_NO_DBUS")]
    no_dbus: bool,
    /// Exit 0 after the first certificate is written (no renewal)
    #[arg(long)]
    once: bool,
    /// Without initdata and without a root CA or fingerprint: trust whichever coordinator
    /// answers first. INSECURE (the host answers first); never honoured in attested mode.
    #[arg(long, env = "PODMESH_INSECURE_TRUST_ON_FIRST_USE")]
    insecure_trust_on_first_use: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let settings = match runtime.block_on(settings(args)) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(ExitCode::SUCCESS),
        Err(e) => {
            let event = e.downcast_ref::<LoadError>().map_or("config_invalid", LoadError::event);
            tracing::error!(PODMESH_EVENT = event, "{e:#}; the deny table stays in place");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    match runtime.block_on(daemon::run(settings)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ DaemonError::NoTee(_)) => {
            tracing::error!(PODMESH_EVENT = "no_tee", "{e}; the deny table stays in place");
            Ok(ExitCode::from(EXIT_NO_TEE))
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolve flags/env/env-file/kernel command line. `None`: nothing to do (opened without
/// coordinator).
async fn settings(args: Args) -> anyhow::Result<Option<Settings>> {
    // An invalid mesh configuration is an error: nobody may open the pod.
    let loaded = args.sources.load().context("mesh configuration")?;
    loaded.log_warnings();
    let attested = loaded.attested.is_some();
    let mesh_configured = loaded.mesh.is_some();
    let open_without_coordinator = args.open_without_coordinator || loaded.flag("open_without_coordinator")?;
    let netns = args.netns.name;
    let coordinator = loaded.attested_arg(args.coordinator.clone(), "PODMESH_COORDINATOR");
    let Some(address) = coordinator.or(loaded.value("coordinator")?) else {
        if open_without_coordinator && !mesh_configured {
            tracing::warn!(PODMESH_EVENT = "no_coordinator", "no coordinator configured and no mesh: opening the pod without a certificate (--open-without-coordinator)");
            mesh::lifecycle::open_pod(
                netns.as_deref(),
                "no coordinator and no mesh configured (--open-without-coordinator)",
            )?;
            mesh::lifecycle::notify_ready(None, None);
            return Ok(None);
        }
        anyhow::bail!("no coordinator configured: set --coordinator, PODMESH_COORDINATOR or podmesh.coordinator= on the kernel command line");
    };
    let endpoint: Endpoint = address.parse()?;
    let root_ca_file = loaded.attested_arg(args.coordinator_root_ca.clone(), "PODMESH_COORDINATOR_ROOT_CA");
    let root_ca_file = root_ca_file.or(loaded.value("coordinator_root_ca")?.map(PathBuf::from));
    // The initdata document coordinator-root-ca.pem is attested like the rest of initdata.
    let initdata_root_ca =
        loaded.attested.as_ref().and_then(|v| v.initdata.root_ca_pem().map(|pem| (v.path.clone(), pem.to_owned())));
    let root_ca = match (root_ca_file, initdata_root_ca) {
        (Some(_), Some((path, _))) => {
            anyhow::bail!("a coordinator root CA is set both in initdata {} and elsewhere: set one", path.display())
        }
        (Some(path), None) => {
            let pem =
                std::fs::read(&path).with_context(|| format!("reading coordinator root CA {}", path.display()))?;
            Some((path.display().to_string(), pem))
        }
        (None, Some((path, pem))) => {
            Some((format!("{} in initdata {}", initdata::ROOT_CA_PEM, path.display()), pem.into_bytes()))
        }
        (None, None) => None,
    };
    let fingerprint = loaded.attested_arg(args.coordinator_fingerprint.clone(), "PODMESH_COORDINATOR_FINGERPRINT");
    let fingerprint = fingerprint.or(loaded.value("coordinator_fingerprint")?);
    let trust = match (root_ca, fingerprint) {
        (Some(_), Some(_)) => anyhow::bail!("set either a coordinator root CA or a coordinator fingerprint, not both"),
        (Some((name, pem)), None) => {
            let mut certs = cert_info::parse_pem_chain(&name, &pem)?;
            if certs.len() != 1 {
                anyhow::bail!("coordinator root CA {name}: expected one certificate, found {}", certs.len());
            }
            Trust::RootCa { pem: String::from_utf8_lossy(&pem).into_owned(), der: certs.remove(0) }
        }
        (None, Some(fp)) => Trust::Fingerprint(parse_fingerprint(&fp)?),
        (None, None) if attested => anyhow::bail!(
            "initdata is present but names no coordinator root CA or fingerprint (nor does the kernel command line): \
             an attested pod does not trust the first coordinator that answers"
        ),
        (None, None) if args.insecure_trust_on_first_use => Trust::FirstUse,
        (None, None) => anyhow::bail!(
            "no coordinator root CA or fingerprint: pass one (initdata, kernel command line or flag), \
             or --insecure-trust-on-first-use to trust whichever coordinator answers first"
        ),
    };
    if let Some(level) = args.tsm_privlevel {
        anyhow::ensure!(
            level <= tsm::PRIVLEVEL_MAX,
            "--tsm-privlevel {level} is above the maximum {}",
            tsm::PRIVLEVEL_MAX
        );
    }
    tracing::info!(
        PODMESH_EVENT = "attest_starting",
        "attesting to coordinator {endpoint} ({}), tls dir {}, mesh {}",
        match &trust {
            Trust::RootCa { .. } => "verified against the configured root CA",
            Trust::Fingerprint(_) => "verified against the configured fingerprint",
            Trust::FirstUse => "TRUST ON FIRST USE",
        },
        args.tls_dir.path.display(),
        if mesh_configured {
            "configured: the proxy opens the pod"
        } else {
            "not configured: this daemon opens the pod"
        },
    );
    Ok(Some(Settings {
        coordinator: Coordinator::new(endpoint, trust, args.request_timeout.0)?,
        tls_dir: args.tls_dir.path,
        tsm_root: args.sources.tsm_root,
        privlevel: args.tsm_privlevel,
        mesh_configured,
        open_without_coordinator,
        netns,
        backoff_initial: args.backoff_initial.0,
        backoff_max: args.backoff_max.0,
        dbus: !args.no_dbus,
        once: args.once,
    }))
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
        // Trust on first use where no trust is given: what these tests check comes after it.
        let mut full = vec!["attest", "--cmdline", cmdline_file.to_str().unwrap(), "--tsm-root", "/nonexistent"];
        if !argv.contains(&"--no-tofu") {
            full.push("--insecure-trust-on-first-use");
        }
        full.extend(argv.iter().filter(|a| **a != "--no-tofu"));
        let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(settings(cli.args)).map_err(|e| format!("{e:#}"))
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
        let e = err(
            &["--coordinator", "h:1", "--coordinator-root-ca", garbage.to_str().unwrap()],
            &format!("podmesh.coordinator_fingerprint={fp}"),
        );
        assert!(e.contains("not both"), "{e}");
        // An invalid mesh configuration stops the daemon too (nobody may open the pod).
        let e = err(&["--coordinator", "h:1"], "podmesh.ingress=web#99999#true");
        assert!(e.contains("mesh configuration"), "{e}");
    }

    #[test]
    fn trust_on_first_use_needs_the_insecure_flag() {
        let e = err(&["--no-tofu", "--coordinator", "h:1"], "");
        assert!(e.contains("--insecure-trust-on-first-use"), "{e}");
        let fp = "ab".repeat(32);
        assert!(
            resolve(&["--no-tofu", "--coordinator", "h:1"], &format!("podmesh.coordinator_fingerprint={fp}")).is_ok()
        );
    }

    #[test]
    fn the_kernel_command_line_is_the_last_source() {
        let fp = "ab".repeat(32);
        let s = resolve(&[], &format!("quiet podmesh.coordinator=10.0.0.1:1313 podmesh.coordinator_fingerprint={fp}"))
            .unwrap()
            .unwrap();
        assert!(!s.mesh_configured && !s.open_without_coordinator);
        let s = resolve(&["--coordinator", "c:1"], "podmesh.coordinator=ignored:2 podmesh.open_without_coordinator")
            .unwrap()
            .unwrap();
        assert!(s.open_without_coordinator);
        let s = resolve(&["--coordinator", "c:1"], "podmesh.ingress=web#8080#true").unwrap().unwrap();
        assert!(s.mesh_configured);
    }

    #[test]
    fn the_env_file_configures_the_mesh_and_the_daemon_like_for_the_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("podmesh.env");
        std::fs::write(&env_file, "CONTRAST_INGRESS_PROXY_CONFIG=web#8080#false\nPODMESH_COORDINATOR=file:1\n")
            .unwrap();
        let s = resolve(&["--env-file", env_file.to_str().unwrap()], "podmesh.coordinator=cmd:2").unwrap().unwrap();
        assert!(s.mesh_configured, "the proxy would intercept: attest must leave the pod to it");
        // The env-file's coordinator wins over the kernel command line's (a bad one shows it).
        std::fs::write(&env_file, "PODMESH_COORDINATOR=nocolon\n").unwrap();
        let e = err(&["--env-file", env_file.to_str().unwrap()], "podmesh.coordinator=cmd:2");
        assert!(e.contains("missing :port"), "{e}");
        // Nothing is opened without a coordinator when the env-file configures a mesh.
        std::fs::write(&env_file, "CONTRAST_INGRESS_PROXY_CONFIG=web#8080#false\n").unwrap();
        let e = err(&["--env-file", env_file.to_str().unwrap(), "--open-without-coordinator"], "");
        assert!(e.contains("no coordinator configured"), "{e}");
    }

    #[test]
    fn zero_durations_are_refused_like_for_the_proxy() {
        for flag in ["--backoff-initial", "--backoff-max", "--request-timeout"] {
            let e = err(&["--coordinator", "h:1", flag, "0s"], "");
            assert!(e.contains("must be greater than zero"), "{flag}: {e}");
        }
    }
}
