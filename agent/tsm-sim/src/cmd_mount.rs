//! `tsm-sim mount`: serve a simulated configfs-tsm over FUSE until SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::signer_args::SignerArgs;
use tsm_sim::inject::{Injection, Injector};
use tsm_sim::tsm_state::TsmState;

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Directory to mount on (acts as the tsm root: it gets a `report/` directory).
    #[arg(long)]
    pub root: PathBuf,
    #[command(flatten)]
    pub signer: SignerArgs,
    /// Simulated report generation time; other accesses to the entry meanwhile get EBUSY.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub report_delay_ms: u64,
    /// Inject a fault: NAME or NAME:COUNT, NAME one of enxio (mkdir), enotty, eio,
    /// etimedout, efbig, ebusy (report generation), race (another writer bumps
    /// generation after an outblob read). Repeatable.
    #[arg(long = "inject", value_name = "FAULT", env = "TSM_SIM_INJECT", value_delimiter = ',')]
    pub inject: Vec<Injection>,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
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

pub fn mount(a: MountArgs) -> anyhow::Result<()> {
    preflight(&a.root)?;
    let provider = a.signer.provider()?;
    let provider_name = provider.name();
    let state =
        Arc::new(TsmState::new(provider, Injector::new(a.inject.clone()), Duration::from_millis(a.report_delay_ms)));

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
