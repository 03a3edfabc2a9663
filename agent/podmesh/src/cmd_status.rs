//! `podmesh status`: deny table, certificate files, the attestation daemon's D-Bus state and
//! the capabilities the running proxy kept.

use crate::attest::bus::Attestation1Proxy;
use crate::attest::cert_info::{parse_pem_chain, CertInfo};
use crate::cli::{NetnsArg, TlsDirArg};
use crate::sys::{cap_names, Cap, PROXY_CAPS};
use mesh::tls_dir::{CERT_CHAIN_FILE, KEY_FILE, MESH_CA_FILE, ROOT_CA_FILE};
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls_dir: TlsDirArg,
    /// The deny table is looked up there.
    #[command(flatten)]
    netns: NetnsArg,
    /// Do not ask the attestation daemon on the system bus
    #[arg(long)]
    no_dbus: bool,
}

#[derive(Serialize)]
struct Status {
    /// true: installed, false: absent, null: could not be determined (see deny_error)
    deny_table_installed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deny_error: Option<String>,
    tls_dir: PathBuf,
    certificate: Option<CertInfo>,
    mesh_ca: Option<CertInfo>,
    root_ca: Option<CertInfo>,
    /// Octal mode of key.pem, null when absent
    key_mode: Option<String>,
    /// One line per file that is missing or unreadable
    file_errors: Vec<String>,
    dbus: Option<DbusStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dbus_error: Option<String>,
    /// Running `podmesh proxy` processes (normally one) and their effective capabilities.
    proxies: Vec<ProxyCaps>,
}

#[derive(Serialize)]
struct ProxyCaps {
    pid: u32,
    /// The capabilities it should keep and why (the same for every proxy).
    expected: &'static [Cap],
    /// Decoded `CapEff` of every thread (one entry when all threads agree).
    effective: Vec<String>,
    /// Effective capabilities beyond `expected`: a proxy that did not drop them.
    unexpected: Vec<String>,
}

#[derive(Serialize)]
struct DbusStatus {
    state: String,
    certificate_expiry: u64,
    mesh_ca_fingerprint: String,
    mesh_generation: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (deny_table_installed, deny_error) = match firewall::deny::is_installed(args.netns.name.as_deref()) {
        Ok(b) => (Some(b), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut file_errors = Vec::new();
    let tls_dir = args.tls_dir.path;
    let mut first = |name: &str| first_certificate(&tls_dir.join(name)).map_err(|e| file_errors.push(e)).ok();
    let certificate = first(CERT_CHAIN_FILE);
    let mesh_ca = first(MESH_CA_FILE);
    let root_ca = first(ROOT_CA_FILE);
    let key_mode = key_mode(&tls_dir.join(KEY_FILE), &mut file_errors);
    let (dbus, dbus_error) = if args.no_dbus {
        (None, None)
    } else {
        match query_dbus() {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        }
    };
    let status = Status {
        deny_table_installed,
        deny_error,
        tls_dir,
        certificate,
        mesh_ca,
        root_ca,
        key_mode,
        file_errors,
        dbus,
        dbus_error,
        proxies: proxies(Path::new("/proc")),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_text(&status);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every `podmesh proxy` under `proc` (argv[0] named podmesh, argv[1] `proxy`) with the
/// effective capabilities of all its threads.
fn proxies(proc: &Path) -> Vec<ProxyCaps> {
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let mut argv = cmdline.split(|b| *b == 0);
        let is_podmesh = argv.next().is_some_and(|a0| a0.rsplit(|b| *b == b'/').next() == Some(b"podmesh"));
        if !is_podmesh || argv.next() != Some(b"proxy") {
            continue;
        }
        let mut mask = 0u64;
        for task in std::fs::read_dir(entry.path().join("task")).into_iter().flatten().flatten() {
            mask |= std::fs::read_to_string(task.path().join("status")).ok().and_then(|s| cap_eff(&s)).unwrap_or(0);
        }
        let expected = PROXY_CAPS.iter().fold(0u64, |m, c| m | (1 << c.bit));
        found.push(ProxyCaps {
            pid,
            expected: PROXY_CAPS,
            effective: cap_names(mask),
            unexpected: cap_names(mask & !expected),
        });
    }
    found.sort_by_key(|p| p.pid);
    found
}

/// The `CapEff:` mask of a /proc status file.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The first certificate of a PEM file; the error names the file and what is wrong.
fn first_certificate(path: &Path) -> Result<CertInfo, String> {
    let what = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
    let certs = parse_pem_chain(&what, &pem).map_err(|e| e.to_string())?;
    CertInfo::from_der(&what, &certs[0]).map_err(|e| e.to_string())
}

fn key_mode(path: &Path, errors: &mut Vec<String>) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) => Some(format!("{:04o}", m.permissions().mode() & 0o7777)),
        Err(e) => {
            errors.push(format!("{}: {e}", path.display()));
            None
        }
    }
}

fn query_dbus() -> Result<DbusStatus, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let fut = async {
            let conn = zbus::Connection::system().await?;
            let p = Attestation1Proxy::new(&conn).await?;
            Ok::<_, zbus::Error>(DbusStatus {
                state: p.state().await?,
                certificate_expiry: p.certificate_expiry().await?,
                mesh_ca_fingerprint: p.mesh_ca_fingerprint().await?,
                mesh_generation: p.mesh_generation().await?,
            })
        };
        match tokio::time::timeout(Duration::from_secs(3), fut).await {
            Ok(r) => r.map_err(|e| format!("attestation daemon on the system bus: {e}")),
            Err(_) => Err("attestation daemon on the system bus: no answer within 3 s".to_owned()),
        }
    })
}

fn print_text(s: &Status) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    match (s.deny_table_installed, &s.deny_error) {
        (Some(true), _) => println!("deny table:   installed (pod ports closed)"),
        (Some(false), _) => println!("deny table:   absent (pod ports open to the mesh proxy or the world)"),
        (None, e) => println!("deny table:   unknown ({})", e.as_deref().unwrap_or("?")),
    }
    println!("tls dir:      {}", s.tls_dir.display());
    match &s.certificate {
        Some(c) => {
            let left = c.not_after - now;
            let validity =
                if left > 0 { format!("expires in {}", human(left)) } else { format!("EXPIRED {} ago", human(-left)) };
            println!("certificate:  {} [{}], {validity} (notAfter {})", c.subject, c.sans.join(", "), c.not_after);
        }
        None => println!("certificate:  none"),
    }
    if let Some(m) = &s.mesh_ca {
        println!("mesh CA:      {} sha256 {}", m.subject, m.sha256);
    }
    if let Some(r) = &s.root_ca {
        println!("root CA:      {} sha256 {}", r.subject, r.sha256);
    }
    if let Some(mode) = &s.key_mode {
        println!("key.pem:      mode {mode}{}", if mode == "0400" { "" } else { " (expected 0400!)" });
    }
    for e in &s.file_errors {
        println!("  ! {e}");
    }
    match (&s.dbus, &s.dbus_error) {
        (Some(d), _) => println!(
            "daemon:       {} (expiry {}, mesh CA {}, manifest generation {})",
            d.state,
            d.certificate_expiry,
            if d.mesh_ca_fingerprint.is_empty() { "-" } else { &d.mesh_ca_fingerprint },
            d.mesh_generation
        ),
        (None, Some(e)) => println!("daemon:       unknown ({e})"),
        (None, None) => {}
    }
    if s.proxies.is_empty() {
        println!("proxy:        not running");
    }
    for p in &s.proxies {
        println!(
            "proxy:        pid {}, effective capabilities: {}",
            p.pid,
            if p.effective.is_empty() { "none".into() } else { p.effective.join(", ") }
        );
        for c in p.expected {
            println!("  {}: {}", c.name, c.reason);
        }
        if !p.unexpected.is_empty() {
            println!("  ! not dropped: {}", p.unexpected.join(", "));
        }
    }
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_garbage_files_are_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = first_certificate(&dir.path().join(CERT_CHAIN_FILE)).unwrap_err();
        assert!(missing.contains("certChain.pem") && missing.contains("No such file"), "{missing}");
        for (bytes, want) in [
            (&b""[..], "no certificate"),
            (b"\xff\xfe garbage", "no certificate"),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid X.509"),
        ] {
            std::fs::write(dir.path().join(MESH_CA_FILE), bytes).unwrap();
            let e = first_certificate(&dir.path().join(MESH_CA_FILE)).unwrap_err();
            assert!(e.contains("mesh-ca.pem") && e.contains(want), "{e}");
        }
        let mut errors = Vec::new();
        assert_eq!(key_mode(&dir.path().join(KEY_FILE), &mut errors), None);
        assert!(errors[0].contains("key.pem"));
    }

    #[test]
    fn proxies_are_found_by_argv_and_their_capabilities_decoded() {
        let proc = tempfile::tempdir().unwrap();
        let fake = |pid: &str, argv: &[u8], tasks: &[&str]| {
            let dir = proc.path().join(pid);
            std::fs::create_dir_all(dir.join("task")).unwrap();
            std::fs::write(dir.join("cmdline"), argv).unwrap();
            for (i, eff) in tasks.iter().enumerate() {
                let t = dir.join("task").join(i.to_string());
                std::fs::create_dir(&t).unwrap();
                std::fs::write(t.join("status"), format!("Name:\tpodmesh\nCapPrm:\tffffffff\nCapEff:\t{eff}\n"))
                    .unwrap();
            }
        };
        fake("10", b"/usr/bin/podmesh\0proxy\0--netns\0podns\0", &["0000000000001000", "0000000000001000"]);
        fake("11", b"podmesh\0proxy\0", &["0000000000001000", "0000000000003000"]);
        fake("12", b"/usr/bin/podmesh\0attest\0", &["000001ffffffffff"]);
        fake("13", b"/usr/bin/notpodmesh\0proxy\0", &["000001ffffffffff"]);
        std::fs::create_dir(proc.path().join("self")).unwrap();
        let found = proxies(proc.path());
        assert_eq!(found.iter().map(|p| p.pid).collect::<Vec<_>>(), [10, 11]);
        assert_eq!(
            (found[0].effective.clone(), found[0].unexpected.is_empty()),
            (vec!["CAP_NET_ADMIN".to_string()], true)
        );
        assert_eq!(found[1].unexpected, ["CAP_NET_RAW"], "a thread that kept more shows up");
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
    }
}
