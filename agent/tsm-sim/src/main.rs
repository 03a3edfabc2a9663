//! `tsm-sim`: mount a simulated configfs-tsm, export the simulated trust anchor, or write
//! one piece of evidence to files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use tsm_sim::inject::{Injection, Injector};
use tsm_sim::signer::{Provider, SnpProvider, TdxProvider};
use tsm_sim::snp_chain::{Product, SimAmdChain, TcbVersion};
use tsm_sim::snp_report::SnpLaunch;
use tsm_sim::tdx_quote::TdxLaunch;
use tsm_sim::tsm_state::TsmState;

#[derive(Parser, Debug)]
#[command(name = "tsm-sim", version, about = "configfs-tsm emulator (FUSE) with a simulated SEV-SNP / TDX signer.\n\
Evidence has the real binary layout but is signed under a SIMULATED trust anchor: a verifier accepts it only when explicitly told to trust that anchor.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount a simulated /sys/kernel/config/tsm at --root and serve it in the foreground
    /// until SIGTERM/SIGINT (then unmount cleanly).
    Mount(MountArgs),
    /// Export the simulated trust anchor to --out: SNP ark.pem, ask.pem, cert_chain.pem;
    /// TDX intel_root.der/.pem and collateral.json (signed TCB info + QE identity + CRLs,
    /// valid 30 days: re-export to refresh).
    Anchor(AnchorArgs),
    /// Generate one report for --report-data without FUSE and write it to files in --out
    /// (SNP: report.bin, auxblob.bin, vcek.der; TDX: quote.bin).
    Evidence(EvidenceArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Tee {
    Snp,
    Tdx,
}

#[derive(Args, Debug)]
struct MountArgs {
    /// Directory to mount on (acts as the tsm root: it gets a `report/` directory).
    #[arg(long)]
    root: PathBuf,
    #[command(flatten)]
    signer: SignerArgs,
    /// Simulated report generation time; other accesses to the entry meanwhile get EBUSY.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    report_delay_ms: u64,
    /// Inject a fault: NAME or NAME:COUNT, NAME one of enxio (mkdir), enotty, eio,
    /// etimedout, efbig, ebusy (report generation), race (another writer bumps
    /// generation after an outblob read). Repeatable.
    #[arg(long = "inject", value_name = "FAULT", env = "TSM_SIM_INJECT", value_delimiter = ',')]
    inject: Vec<Injection>,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

#[derive(Args, Debug)]
struct AnchorArgs {
    /// Which simulated PKI to export.
    #[arg(long, value_enum, default_value = "snp")]
    tee: Tee,
    /// State directory holding the simulated chain (created on first use).
    #[arg(long)]
    state: PathBuf,
    /// Output directory for ark.pem, ask.pem and cert_chain.pem.
    #[arg(long)]
    out: PathBuf,
    /// AMD product the chain simulates.
    #[arg(long, default_value = "genoa")]
    product: Product,
}

#[derive(Args, Debug)]
struct EvidenceArgs {
    #[command(flatten)]
    signer: SignerArgs,
    /// The 64 bytes of report data (hex).
    #[arg(long, value_parser = hex_array::<64>)]
    report_data: [u8; 64],
    /// SNP privilege level (VMPL) to report.
    #[arg(long, default_value_t = 0)]
    privlevel: u32,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct SignerArgs {
    /// Which TEE to simulate: snp (provider sev_guest) or tdx (provider tdx_guest).
    #[arg(long, value_enum)]
    tee: Tee,
    /// State directory for the simulated keys (kept across restarts: the trust anchor).
    #[arg(long)]
    state: PathBuf,
    /// SNP: AMD product (milan, genoa or turin).
    #[arg(long, default_value = "genoa")]
    product: Product,
    /// SNP: launch MEASUREMENT (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    measurement: Option<[u8; 48]>,
    /// SNP: HOST_DATA (32 bytes hex).
    #[arg(long, value_parser = hex_array::<32>)]
    host_data: Option<[u8; 32]>,
    /// SNP: guest POLICY (hex u64, e.g. 0x30000; bit 19 = debug).
    #[arg(long, value_parser = hex_u64)]
    policy: Option<u64>,
    /// SNP: reported (and current) TCB: bl=N,tee=N,snp=N,ucode=N[,fmc=N] or a hex TCB_VERSION (Milan/Genoa layout).
    #[arg(long)]
    tcb: Option<TcbVersion>,
    /// SNP: committed TCB (defaults to --tcb).
    #[arg(long)]
    committed_tcb: Option<TcbVersion>,
    /// SNP: launch TCB (defaults to --tcb).
    #[arg(long)]
    launch_tcb: Option<TcbVersion>,
    /// SNP: GUEST_SVN.
    #[arg(long)]
    guest_svn: Option<u32>,
    /// SNP: FAMILY_ID (16 bytes hex).
    #[arg(long, value_parser = hex_array::<16>)]
    family_id: Option<[u8; 16]>,
    /// SNP: IMAGE_ID (16 bytes hex).
    #[arg(long, value_parser = hex_array::<16>)]
    image_id: Option<[u8; 16]>,
    /// SNP: privlevel_floor, the VMPL the guest runs at (0..3).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=3))]
    vmpl_floor: u32,
    /// SNP: the host supplies no certificates (empty auxblob).
    #[arg(long)]
    no_certs: bool,
    /// TDX: MRTD (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    mrtd: Option<[u8; 48]>,
    /// TDX: RTMR0 (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    rtmr0: Option<[u8; 48]>,
    /// TDX: RTMR1 (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    rtmr1: Option<[u8; 48]>,
    /// TDX: RTMR2 (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    rtmr2: Option<[u8; 48]>,
    /// TDX: RTMR3 (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    rtmr3: Option<[u8; 48]>,
    /// TDX: MRCONFIGID (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    mrconfigid: Option<[u8; 48]>,
    /// TDX: MROWNER (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    mrowner: Option<[u8; 48]>,
    /// CoCo initdata file: HOSTDATA (snp) / MRCONFIGID (tdx) become its launch value, the digest
    /// truncated or zero-padded as Kata's runtime sets it (see the `initdata` crate).
    #[arg(long, conflicts_with_all = ["host_data", "mrconfigid"])]
    initdata: Option<PathBuf>,
    /// TDX: TD ATTRIBUTES (hex u64; bit 0 = debug).
    #[arg(long, value_parser = hex_u64)]
    td_attributes: Option<u64>,
}

/// Fixed-length hex (optional 0x prefix); the error names the expected length.
fn hex_array<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| format!("expected {N} bytes ({} hex digits), got {len} bytes", N * 2))
}

fn hex_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u64::from_str_radix(t, 16).map_err(|e| format!("{s:?} is not a hex u64: {e}"))
}

impl SignerArgs {
    fn snp_launch(&self) -> SnpLaunch {
        let mut l = SnpLaunch::default();
        if let Some(v) = self.measurement {
            l.measurement = v;
        }
        if let Some(v) = self.host_data {
            l.host_data = v;
        }
        if let Some(v) = self.policy {
            l.policy = v;
        }
        if let Some(v) = self.tcb {
            l.reported_tcb = v;
            l.committed_tcb = v;
            l.launch_tcb = v;
        }
        if let Some(v) = self.committed_tcb {
            l.committed_tcb = v;
        }
        if let Some(v) = self.launch_tcb {
            l.launch_tcb = v;
        }
        if let Some(v) = self.guest_svn {
            l.guest_svn = v;
        }
        if let Some(v) = self.family_id {
            l.family_id = v;
        }
        if let Some(v) = self.image_id {
            l.image_id = v;
        }
        l
    }

    fn tdx_launch(&self) -> TdxLaunch {
        let mut l = TdxLaunch::default();
        let set = |dst: &mut [u8; 48], v: Option<[u8; 48]>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut l.mr_td, self.mrtd);
        set(&mut l.rtmr[0], self.rtmr0);
        set(&mut l.rtmr[1], self.rtmr1);
        set(&mut l.rtmr[2], self.rtmr2);
        set(&mut l.rtmr[3], self.rtmr3);
        set(&mut l.mr_config_id, self.mrconfigid);
        set(&mut l.mr_owner, self.mrowner);
        if let Some(v) = self.td_attributes {
            l.td_attributes = v;
        }
        l
    }

    /// The `--initdata` launch value for `field`, if given.
    fn initdata_value(&self, field: initdata::Field) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = &self.initdata else { return Ok(None) };
        let bytes = std::fs::read(path).with_context(|| format!("reading --initdata {}", path.display()))?;
        let init = initdata::Initdata::parse(&bytes).with_context(|| format!("--initdata {}", path.display()))?;
        Ok(Some(init.launch_value(field)))
    }

    fn provider(&self) -> anyhow::Result<Arc<dyn Provider>> {
        Ok(match self.tee {
            Tee::Snp => {
                let chain = SimAmdChain::load_or_create(&self.state, self.product)
                    .with_context(|| format!("loading the simulated AMD chain from {}", self.state.display()))?;
                let mut launch = self.snp_launch();
                if let Some(v) = self.initdata_value(initdata::Field::SnpHostData)? {
                    launch.host_data.copy_from_slice(&v);
                }
                Arc::new(SnpProvider::new(chain, launch, !self.no_certs, self.vmpl_floor)?)
            }
            Tee::Tdx => {
                let mut launch = self.tdx_launch();
                if let Some(v) = self.initdata_value(initdata::Field::TdxMrConfigId)? {
                    launch.mr_config_id.copy_from_slice(&v);
                }
                Arc::new(
                    TdxProvider::new(&self.state, launch)
                        .with_context(|| format!("loading the simulated TDX keys from {}", self.state.display()))?,
                )
            }
        })
    }
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
        Cmd::Mount(a) => mount(a),
        Cmd::Anchor(a) => anchor(a),
        Cmd::Evidence(a) => evidence(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsm-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn anchor(a: AnchorArgs) -> anyhow::Result<()> {
    if a.tee == Tee::Tdx {
        let launch = TdxLaunch::default();
        let tdx = TdxProvider::new(&a.state, launch.clone())
            .with_context(|| format!("loading the simulated TDX keys from {}", a.state.display()))?;
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        let files = [
            ("intel_root.der", tdx.keys().root_der().to_vec()),
            ("intel_root.pem", tsm_sim::x509_build::pem_cert(tdx.keys().root_der()).into_bytes()),
            ("collateral.json", tdx.keys().collateral_json(&launch)?.into_bytes()),
        ];
        for (name, data) in files {
            let path = a.out.join(name);
            std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
            println!("{}", path.display());
        }
        return Ok(());
    }
    let chain = SimAmdChain::load_or_create(&a.state, a.product)
        .with_context(|| format!("loading the simulated AMD chain from {}", a.state.display()))?;
    for path in chain.export_anchor(&a.out)? {
        println!("{}", path.display());
    }
    Ok(())
}

fn evidence(a: EvidenceArgs) -> anyhow::Result<()> {
    let provider = a.signer.provider()?;
    if let Some(floor) = provider.privlevel_floor() {
        if a.privlevel < floor || a.privlevel > 3 {
            bail!("--privlevel {} is outside privlevel_floor {floor}..=3", a.privlevel);
        }
    }
    let ev = provider.generate(&a.report_data, a.privlevel)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let write = |name: &str, data: &[u8]| -> anyhow::Result<()> {
        let path = a.out.join(name);
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
        Ok(())
    };
    match a.signer.tee {
        Tee::Snp => {
            write("report.bin", &ev.outblob)?;
            if !ev.auxblob.is_empty() {
                write("auxblob.bin", &ev.auxblob)?;
                let table = tee::certtable::CertTable::parse(&ev.auxblob)?;
                if let Some(vcek) = table.get(tee::certtable::CertKind::Vcek) {
                    write("vcek.der", vcek)?;
                }
            }
        }
        Tee::Tdx => write("quote.bin", &ev.outblob)?,
    }
    Ok(())
}

/// Refuses early, with one clear line, what would otherwise fail deep inside the mount.
fn preflight(root: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("mounting a FUSE file system at {} needs root (run as root, e.g. with sudo)", root.display());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or pass --device /dev/fuse to the container");
    }
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("mount point {} is not a directory", root.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "mount point {} is a dead FUSE mount (an earlier tsm-sim was killed): run `umount {}` first",
            root.display(),
            root.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mount point {} does not exist (create it with mkdir -p)", root.display())
        }
        Err(e) => bail!("mount point {}: {e}", root.display()),
    }
}

fn mount(a: MountArgs) -> anyhow::Result<()> {
    preflight(&a.root)?;
    let provider = a.signer.provider()?;
    let provider_name = provider.name();
    let state = Arc::new(TsmState::new(
        provider,
        Injector::new(a.inject.clone()),
        Duration::from_millis(a.report_delay_ms),
    ));

    // Block the signals before any thread exists so every thread inherits the mask and
    // only the signalfd below sees them.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().context("blocking SIGTERM/SIGINT")?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("creating a signalfd for SIGTERM/SIGINT")?;

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("tsm-sim".into()),
        fuser::MountOption::Subtype("tsm".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoExec,
    ];
    // Every local user may use the tree, as with configfs (root-only in practice: 0200/0644).
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(a.threads.max(1));
    let session = fuser::spawn_mount(tsm_sim::fs::TsmFs::new(state), &a.root, &config)
        .with_context(|| format!("mounting FUSE at {}", a.root.display()))?;

    tracing::info!(
        PODMESH_EVENT = "tsm_sim_mounted",
        root = %a.root.display(),
        provider = provider_name,
        "SIMULATED configfs-tsm mounted: evidence is signed by a simulated {} anchor, not by real hardware",
        if provider_name == "sev_guest" { "AMD" } else { "Intel" },
    );

    let reason = loop {
        match sfd.read_signal() {
            Ok(Some(info)) => break format!("signal {}", info.ssi_signo),
            Ok(None) => {}
            Err(e) => break format!("signalfd read failed: {e}"),
        }
        if session.guard.is_finished() {
            break "the mount went away (unmounted externally)".to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    tracing::info!(PODMESH_EVENT = "tsm_sim_unmounting", root = %a.root.display(), reason = %reason, "unmounting");
    if let Err(e) = session.umount_and_join() {
        // Typically EBUSY: a process still holds a file open. Detach lazily so the mount
        // point is free now; the kernel finishes when the last file is closed.
        tracing::warn!(root = %a.root.display(), error = %e, "unmount failed, detaching lazily");
        nix::mount::umount2(&a.root, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {} (after: {e})", a.root.display()))?;
    }
    tracing::info!(PODMESH_EVENT = "tsm_sim_unmounted", root = %a.root.display(), "unmounted");
    Ok(())
}
