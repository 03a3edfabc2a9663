//! `podmesh status`: deny table, certificate files and the attestation daemon's D-Bus state.

use crate::attest::bus::Attestation1Proxy;
use crate::attest::cert_info::{parse_pem_chain, CertInfo};
use crate::attest::tls_dir::{CERT_CHAIN_FILE, KEY_FILE, MESH_CA_FILE, ROOT_CA_FILE};
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
    /// The tls dir the attestation daemon writes
    #[arg(long, env = "PODMESH_TLS_DIR", default_value = "/run/podmesh/tls")]
    tls_dir: PathBuf,
    /// Network namespace holding the deny table (default: our own)
    #[arg(long, env = "PODMESH_NETNS")]
    netns: Option<String>,
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
}

#[derive(Serialize)]
struct DbusStatus {
    state: String,
    certificate_expiry: u64,
    mesh_ca_fingerprint: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (deny_table_installed, deny_error) = match firewall::deny::is_installed(args.netns.as_deref()) {
        Ok(b) => (Some(b), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut file_errors = Vec::new();
    let mut first = |name: &str| first_certificate(&args.tls_dir.join(name)).map_err(|e| file_errors.push(e)).ok();
    let certificate = first(CERT_CHAIN_FILE);
    let mesh_ca = first(MESH_CA_FILE);
    let root_ca = first(ROOT_CA_FILE);
    let key_mode = key_mode(&args.tls_dir.join(KEY_FILE), &mut file_errors);
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
        tls_dir: args.tls_dir,
        certificate,
        mesh_ca,
        root_ca,
        key_mode,
        file_errors,
        dbus,
        dbus_error,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_text(&status);
    }
    Ok(ExitCode::SUCCESS)
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
            let validity = if left > 0 { format!("expires in {}", human(left)) } else { format!("EXPIRED {} ago", human(-left)) };
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
            "daemon:       {} (expiry {}, mesh CA {})",
            d.state,
            d.certificate_expiry,
            if d.mesh_ca_fingerprint.is_empty() { "-" } else { &d.mesh_ca_fingerprint }
        ),
        (None, Some(e)) => println!("daemon:       unknown ({e})"),
        (None, None) => {}
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
        for (bytes, want) in [(&b""[..], "no certificate"), (b"\xff\xfe garbage", "no certificate"), (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid X.509")] {
            std::fs::write(dir.path().join(MESH_CA_FILE), bytes).unwrap();
            let e = first_certificate(&dir.path().join(MESH_CA_FILE)).unwrap_err();
            assert!(e.contains("mesh-ca.pem") && e.contains(want), "{e}");
        }
        let mut errors = Vec::new();
        assert_eq!(key_mode(&dir.path().join(KEY_FILE), &mut errors), None);
        assert!(errors[0].contains("key.pem"));
    }
}
