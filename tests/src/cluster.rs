//! The attestation cluster of the attest_*.rs end-to-end tests: a coordinator pod, workload pods
//! wired to it, tsm-sim mounts with chosen launch values, `podmesh attest` daemons inside the pods,
//! mTLS clients and servers, and a private D-Bus. Everything runs the real binaries from the
//! target dir ([`bin`]).
//!
//! - [`Cluster::new`]`(&t)`: pods `a`, `b` ([`PodPair`]) and the coordinator pod `c`, plus the
//!   simulated AMD chain; [`Cluster::start_coordinator`], [`Cluster::start_attest`].
//! - [`TsmSim::mount`]: a configfs-tsm (FUSE) with given host data and measurement.
//! - [`Manifest::standard`]: pod-a / pod-b policies for [`HOSTDATA_A`] / [`HOSTDATA_B`].
//! - [`mtls_server`], [`mtls_request`], [`chain_verifies`], [`wait_for_certificate`].
//! - [`Bus`]: a dbus-daemon with podmesh's policy, for [`Cluster::attest_command`] and [`Cluster::spawn_attest`].

use crate::harness::{bin, clean_podmesh_env, wait_for, Proc, Test};
use crate::netns::{Pod, PodPair};
use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const COORD_PORT: u16 = 8443;
pub const POLICY: &str = "0x30000";

/// Launch values (hex) of the simulated SNP guests.
pub const MEASUREMENT: &str =
    "6d6561737572656d656e742d6f6b00000000000000000000000000000000000000000000000000000000000000000001";
pub const OTHER_MEASUREMENT: &str =
    "6d6561737572656d656e742d626164000000000000000000000000000000000000000000000000000000000000000002";
pub const HOSTDATA_A: &str = "aa00000000000000000000000000000000000000000000000000000000000001";
pub const HOSTDATA_B: &str = "bb00000000000000000000000000000000000000000000000000000000000002";
pub const HOSTDATA_UNKNOWN: &str = "cc00000000000000000000000000000000000000000000000000000000000003";

/// A simulated configfs-tsm (FUSE) with fixed launch values; unmounted on drop.
pub struct TsmSim {
    pub root: PathBuf,
    proc: Option<Proc>,
}

impl TsmSim {
    pub fn mount(
        work: &Path,
        name: &str,
        state: &Path,
        host_data: &str,
        measurement: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let root = work.join(format!("tsm-{name}"));
        std::fs::create_dir_all(&root)?;
        let mut cmd = Command::new(bin("tsm-sim"));
        cmd.arg("mount").arg("--root").arg(&root).args(["--tee", "snp", "--state"]).arg(state);
        cmd.args(["--host-data", host_data, "--measurement", measurement, "--policy", POLICY]).args(extra);
        let mut proc = Proc::logged(&format!("tsm-sim {name}"), &mut cmd, &work.join(format!("tsm-sim-{name}.log")))?;
        let report = root.join("report");
        proc.wait_ready("the tsm-sim mount", Duration::from_secs(10), || report.is_dir())?;
        Ok(Self { root, proc: Some(proc) })
    }
}

impl Drop for TsmSim {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(3));
        }
        // A killed FUSE server leaves a dead mount behind.
        let _ = Command::new("fusermount3").arg("-u").arg(&self.root).stderr(Stdio::null()).status();
        let _ = Command::new("umount").arg("-l").arg(&self.root).stderr(Stdio::null()).status();
    }
}

/// The TCB tsm-sim's guests report and were launched under (its default, bl 10 tee 0 snp 25
/// ucode 84), as a manifest `minimum_tcb`: the strictest floor they meet. `minimum_launch_tcb`
/// defaults to it, so a mount with a lower `--launch-tcb` is refused.
pub fn sim_min_tcb() -> serde_json::Value {
    serde_json::json!({ "bootloader": 10, "tee": 0, "snp": 25, "microcode": 84 })
}

/// A strict SNP manifest for the cluster's simulated guests (`json()`); build test manifests
/// from it rather than from JSON literals.
pub struct Manifest {
    pub measurement: &'static str,
    /// (host data, name, SANs)
    pub policies: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    pub allow_simulated: bool,
}

impl Manifest {
    pub fn json(&self) -> String {
        let policies: serde_json::Map<String, serde_json::Value> = self
            .policies
            .iter()
            .map(|(hd, name, sans)| (hd.to_string(), serde_json::json!({ "name": name, "sans": sans })))
            .collect();
        serde_json::json!({
            "reference_values": { "snp": {
                "products": ["Genoa"], "measurements": [self.measurement], "guest_policy": POLICY,
                "minimum_tcb": sim_min_tcb()
            } },
            "policies": policies,
            "allow_simulated_tee": self.allow_simulated,
        })
        .to_string()
    }

    pub fn standard() -> Self {
        Self {
            measurement: MEASUREMENT,
            policies: vec![
                (HOSTDATA_A, "pod-a", vec!["pod-a", "10.99.0.1"]),
                (HOSTDATA_B, "pod-b", vec!["pod-b", "10.99.0.2"]),
            ],
            allow_simulated: true,
        }
    }
}

/// The coordinator pod `c` wired to workload pods `a` and `b` (10.98.1.0/24 and 10.98.2.0/24),
/// plus the simulated AMD chain every tsm-sim of the cluster signs with.
pub struct Cluster {
    pub work: tempfile::TempDir,
    pub pods: PodPair,
    pub c: Pod,
    pub sim_state: PathBuf,
    pub sim_anchor: PathBuf,
    pub coord_state: PathBuf,
}

impl Cluster {
    pub fn new(t: &Test) -> Result<Self> {
        let work = t.tempdir()?;
        let pods = PodPair::new(t)?;
        let c = Pod::new(t)?;
        for (pod, net, dev) in [(&pods.a, 1, "to-a"), (&pods.b, 2, "to-b")] {
            let ok = Command::new("ip")
                .args(["-n", c.name(), "link", "add", dev, "type", "veth", "peer", "name", "eth1", "netns", pod.name()])
                .status()?;
            anyhow::ensure!(ok.success(), "creating veth {dev}");
            c.exec(&["ip", "addr", "add", &format!("10.98.{net}.1/24"), "dev", dev])?;
            c.exec(&["ip", "link", "set", dev, "up"])?;
            pod.exec(&["ip", "addr", "add", &format!("10.98.{net}.2/24"), "dev", "eth1"])?;
            pod.exec(&["ip", "link", "set", "eth1", "up"])?;
        }
        let sim_state = work.path().join("sim-state");
        let sim_anchor = work.path().join("sim-anchor");
        let out = Command::new(bin("tsm-sim"))
            .arg("anchor")
            .arg("--state")
            .arg(&sim_state)
            .arg("--out")
            .arg(&sim_anchor)
            .output()?;
        anyhow::ensure!(out.status.success(), "tsm-sim anchor: {}", String::from_utf8_lossy(&out.stderr));
        let coord_state = work.path().join("coordinator");
        Ok(Self { work, pods, c, sim_state, sim_anchor, coord_state })
    }

    /// [`Cluster::new`] with the coordinator already serving [`Manifest::standard`] (and `extra`
    /// flags; log tag `1`): the start of most attest tests.
    pub fn with_coordinator(t: &Test, extra: &[&str]) -> Result<(Self, Proc)> {
        let cl = Self::new(t)?;
        let coord = cl.start_coordinator(&Manifest::standard(), extra, "1")?;
        Ok((cl, coord))
    }

    /// A tsm-sim mount `name` for a guest launched with `host_data` and `measurement`, signed by
    /// the cluster's simulated AMD chain.
    pub fn mount_tsm(&self, name: &str, host_data: &str, measurement: &str, extra: &[&str]) -> Result<TsmSim> {
        TsmSim::mount(self.work.path(), name, &self.sim_state, host_data, measurement, extra)
    }

    /// `pod` as at boot: the deny table installed, and its tsm-sim (`name`, [`MEASUREMENT`],
    /// `host_data`, `extra` flags) mounted.
    pub fn boot(&self, pod: &Pod, name: &str, host_data: &str, extra: &[&str]) -> Result<TsmSim> {
        firewall::deny::install(Some(pod.name())).context("installing the deny table")?;
        self.mount_tsm(name, host_data, MEASUREMENT, extra)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// The coordinator address as seen from pod a (1) or b (2).
    pub fn coord_addr(net: u8) -> String {
        format!("10.98.{net}.1:{COORD_PORT}")
    }

    pub fn root_ca_path(&self) -> PathBuf {
        self.coord_state.join("root-ca.pem")
    }

    /// Starts `podmesh-coordinator serve` in pod c with `manifest`; waits until it listens.
    pub fn start_coordinator(&self, manifest: &Manifest, extra: &[&str], tag: &str) -> Result<Proc> {
        let mpath = self.path(&format!("manifest-{tag}.json"));
        std::fs::write(&mpath, manifest.json())?;
        let mut cmd = self.c.command(bin("podmesh-coordinator").to_str().context("utf-8 path")?);
        cmd.args(["serve", "--listen", &format!("0.0.0.0:{COORD_PORT}"), "--state"]).arg(&self.coord_state);
        cmd.arg("--manifest").arg(&mpath).arg("--sim-anchor").arg(&self.sim_anchor);
        cmd.args(["--san", "10.98.1.1", "--san", "10.98.2.1"]).args(extra);
        let mut p = Proc::logged("podmesh-coordinator", &mut cmd, &self.path(&format!("coordinator-{tag}.log")))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.c.wait_for_port(COORD_PORT, Duration::from_millis(200)).is_err() {
            if let Some(st) = p.exited() {
                bail!("podmesh-coordinator exited ({st}): {}", p.log_text());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "podmesh-coordinator not listening after 20 s: {}",
                p.log_text()
            );
        }
        Ok(p)
    }

    /// Starts `podmesh attest` in `pod` (reaching the coordinator over net 1 or 2), without D-Bus.
    pub fn start_attest(
        &self,
        pod: &Pod,
        net: u8,
        tsm: &Path,
        tls_dir: &Path,
        tag: &str,
        extra: &[&str],
    ) -> Result<Proc> {
        self.spawn_attest(self.attest_command(pod, net, tsm, tls_dir, extra)?.arg("--no-dbus"), tag)
    }

    /// Runs `cmd` (an adjusted [`Cluster::attest_command`]) as `podmesh attest {tag}`.
    pub fn spawn_attest(&self, cmd: &mut Command, tag: &str) -> Result<Proc> {
        Proc::logged(&format!("podmesh attest {tag}"), cmd, &self.path(&format!("attest-{tag}.log")))
    }

    /// The `podmesh attest` command line in `pod`, for callers that adjust it. It says nothing
    /// about D-Bus: add `--no-dbus`, or set `DBUS_SYSTEM_BUS_ADDRESS` to publish on a [`Bus`].
    pub fn attest_command(&self, pod: &Pod, net: u8, tsm: &Path, tls_dir: &Path, extra: &[&str]) -> Result<Command> {
        let mut cmd = pod.command(bin("podmesh").to_str().context("utf-8 path")?);
        cmd.args(["attest", "--coordinator", &Self::coord_addr(net)]);
        // Trust: the root CA file unless the caller chose a fingerprint or trust on first use.
        if !extra.iter().any(|a| *a == "--coordinator-fingerprint" || *a == "--tofu") {
            cmd.arg("--coordinator-root-ca").arg(self.root_ca_path());
        }
        let extra: Vec<&str> =
            extra.iter().map(|a| if *a == "--tofu" { "--insecure-trust-on-first-use" } else { *a }).collect();
        let extra = extra.as_slice();
        cmd.arg("--tsm-root").arg(tsm).arg("--tls-dir").arg(tls_dir);
        cmd.args(["--kernel-cmdline", "/dev/null", "--backoff-initial", "200ms", "--backoff-max", "1s"]).args(extra);
        clean_podmesh_env(&mut cmd);
        Ok(cmd)
    }
}

/// Waits for `certChain.pem` in `dir` (or fails with the daemon's log when it exits first).
pub fn wait_for_certificate(p: &mut Proc, dir: &Path, timeout: Duration) -> Result<()> {
    let chain = dir.join("certChain.pem");
    wait_for(&format!("{} in {}", chain.display(), p.what), timeout, || {
        if chain.exists() {
            return Some(Ok(()));
        }
        p.exited().map(|st| Err(anyhow::anyhow!("{} exited ({st}) without a certificate: {}", p.what, p.log_text())))
    })?
}

pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
}

pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().expect("PEM certificates")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(pem: &str) -> Arc<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    for c in certs(pem) {
        r.add(c).expect("trust anchor");
    }
    Arc::new(r)
}

/// An mTLS echo server in `pod` on `port`, with the tls dir's chain and key, requiring client
/// certificates that chain to the tls dir's mesh CA (what the mesh proxy does for mTLS ports).
/// Answers each connection with `hello from <name>\n`, then closes. Returns the thread handle.
pub fn mtls_server(
    pod: &Pod,
    port: u16,
    tls_dir: &Path,
    name: &'static str,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let chain = certs(&read(tls_dir, "certChain.pem"));
    let key = PrivateKeyDer::from_pem_slice(read(tls_dir, "key.pem").as_bytes())?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&read(tls_dir, "mesh-ca.pem")), provider())
            .build()?;
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?,
    );
    let listener = pod.in_netns(|| TcpListener::bind(("0.0.0.0", port)))??;
    Ok(std::thread::spawn(move || -> Result<()> {
        for stream in listener.incoming() {
            let mut tcp = stream?;
            tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut conn = rustls::ServerConnection::new(config.clone())?;
            let hs = conn.complete_io(&mut tcp);
            if hs.is_ok() && !conn.is_handshaking() {
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let _ = tls.write_all(format!("hello from {name}\n").as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.conn.complete_io(&mut tls.sock);
            }
        }
        Ok(())
    }))
}

/// From `pod`, an mTLS request to `addr` (server name `server_name`) trusting `ca_pem`,
/// presenting the chain and key of `client_dir` when given. Ok(first line) or Err(reason).
pub fn mtls_request(
    pod: &Pod,
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client_dir: Option<&Path>,
) -> Result<String, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_pem));
    let config = match client_dir {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let key = PrivateKeyDer::from_pem_slice(read(dir, "key.pem").as_bytes()).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(certs(&read(dir, "certChain.pem")), key).map_err(|e| e.to_string())?
        }
    };
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    pod.in_netns(move || -> Result<String, String> {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut line = String::new();
        match BufReader::new(&mut tls).read_line(&mut line) {
            Ok(0) => Err("closed without data".into()),
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .map_err(|e| e.to_string())?
}

/// Whether `chain_pem` (leaf + intermediate) verifies as a client certificate against `anchor_pem`.
pub fn chain_verifies(chain_pem: &str, anchor_pem: &str) -> Result<(), String> {
    let chain = certs(chain_pem);
    let v = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(anchor_pem), provider())
        .build()
        .map_err(|e| e.to_string())?;
    v.verify_client_cert(&chain[0], &chain[1..], rustls_pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub fn deny_installed(pod: &Pod) -> bool {
    firewall::deny::is_installed(Some(pod.name())).expect("inspect deny table")
}

pub fn sha256_hex(der: &[u8]) -> String {
    let out = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(|mut c| {
        c.stdin.take().expect("stdin").write_all(der)?;
        c.wait_with_output()
    });
    String::from_utf8_lossy(&out.expect("sha256sum").stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// A private system-like bus (dbus-daemon) with podmesh's policy file; stopped on drop.
pub struct Bus {
    pub address: String,
    _proc: Proc,
}

impl Bus {
    pub fn start(work: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        // Unprivileged callers (the policy test) must reach the socket.
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755))?;
        let sock = work.join("system_bus_socket");
        let policy =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../units/org.podmesh.Attestation1.conf").canonicalize()?;
        // The shape of Debian's system.conf: default deny for owning names and method calls.
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{}</include>
</busconfig>
"#,
            sock.display(),
            policy.display()
        );
        let conf = work.join("bus.conf");
        std::fs::write(&conf, config)?;
        let mut cmd = Command::new("dbus-daemon");
        cmd.arg(format!("--config-file={}", conf.display())).arg("--nofork").arg("--nopidfile");
        let mut proc = Proc::logged("dbus-daemon", &mut cmd, &work.join("dbus-daemon.log"))?;
        proc.wait_ready("the dbus-daemon socket", Duration::from_secs(10), || sock.exists())?;
        Ok(Self { address: format!("unix:path={}", sock.display()), _proc: proc })
    }

    /// `busctl --address=.. ARGS` (optionally as uid 65534): (success, stdout + stderr).
    pub fn busctl(&self, as_nobody: bool, args: &[&str]) -> (bool, String) {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"]);
            c
        } else {
            Command::new("busctl")
        };
        let out = cmd.arg(format!("--address={}", self.address)).args(args).output().expect("busctl");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }
}
