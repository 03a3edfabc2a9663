//! The few system calls without a safe wrapper in our dependencies: entering a named network
//! namespace and reducing our capabilities. The only `unsafe` of the crate lives here.

use std::os::fd::AsFd;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error(transparent)]
    NetnsName(#[from] firewall::nft::NftError),
    #[error("network namespace {name} does not exist ({path}): create it with `ip netns add {name}` or unset --netns/PODMESH_NETNS")]
    NoNetns { name: String, path: PathBuf },
    #[error("opening network namespace {path}: {source}")]
    OpenNetns { path: PathBuf, source: std::io::Error },
    #[error("entering network namespace {name}: {source} (needs CAP_SYS_ADMIN)")]
    Setns { name: String, source: nix::Error },
    #[error("{call}: {source}")]
    Caps { call: &'static str, source: std::io::Error },
}

/// Moves the calling thread into `/run/netns/NAME`. Call it while the process has one thread:
/// threads and children started later inherit the namespace.
pub fn enter_netns(name: &str) -> Result<(), SysError> {
    firewall::nft::check_netns_name(name)?;
    let path = PathBuf::from(firewall::nft::NETNS_DIR).join(name);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SysError::NoNetns { name: name.into(), path })
        }
        Err(source) => return Err(SysError::OpenNetns { path, source }),
    };
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|source| SysError::Setns { name: name.into(), source })
}

/// A capability and why a podmesh daemon keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cap {
    #[serde(skip)]
    pub bit: u32,
    pub name: &'static str,
    pub reason: &'static str,
}

/// What `podmesh proxy` keeps once it has entered its network namespace (before it starts any
/// thread, so every thread has exactly this set). Reload only swaps TLS material and binds
/// nothing, so nothing else is needed later.
pub const PROXY_CAPS: &[Cap] = &[Cap {
    bit: 12,
    name: "CAP_NET_ADMIN",
    reason: "SO_MARK on every upstream socket (new connections after readiness), IP_TRANSPARENT on \
             the listeners at startup, and the nft/ip children that install interception and \
             remove the policy routes at shutdown",
}];

/// Names of the capability bits (linux/capability.h), for `podmesh status`.
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The names of the bits set in a `CapEff:`-style mask.
pub fn cap_names(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| NAMES.get(b as usize).map_or_else(|| format!("cap_{b}"), |n| n.to_string()))
        .collect()
}

const CAP_SETPCAP: u32 = 8;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn os_err(call: &'static str) -> SysError {
    SysError::Caps { call, source: std::io::Error::last_os_error() }
}

/// (effective, permitted) of the calling thread.
fn capget() -> Result<(u64, u64), SysError> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data structs of the v3 ABI, both valid for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(os_err("capget"));
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted)))
}

/// Keeps only `keep` (of what we hold) in the effective and permitted sets, empties the
/// inheritable (and so the ambient) set, and, when we may (CAP_SETPCAP), drops everything else
/// from the bounding set too, so the nft/ip children cannot get it back either. Acts on the
/// calling thread: call it before starting threads. Returns the names kept.
pub fn keep_only(keep: &[Cap]) -> Result<Vec<&'static str>, SysError> {
    let (effective, permitted) = capget()?;
    let wanted = keep.iter().fold(0u64, |m, c| m | (1u64 << c.bit));
    if effective & (1u64 << CAP_SETPCAP) != 0 {
        for bit in 0..64u32 {
            if wanted & (1u64 << bit) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            #[allow(unsafe_code)]
            let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(bit), 0, 0, 0) };
            if present < 0 {
                break; // EINVAL: past the kernel's last capability
            }
            if present == 1 {
                // SAFETY: as above.
                #[allow(unsafe_code)]
                let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(bit), 0, 0, 0) };
                if rc != 0 {
                    return Err(os_err("prctl(PR_CAPBSET_DROP)"));
                }
            }
        }
    }
    let kept = wanted & permitted;
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let low = |m: u64| (m & 0xffff_ffff) as u32;
    let high = |m: u64| (m >> 32) as u32;
    let data = [
        CapData { effective: low(kept), permitted: low(kept), inheritable: 0 },
        CapData { effective: high(kept), permitted: high(kept), inheritable: 0 },
    ];
    // SAFETY: header and two data structs of the v3 ABI, both valid for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(os_err("capset"));
    }
    Ok(keep.iter().filter(|c| kept & (1u64 << c.bit) != 0).map(|c| c.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_masks() {
        assert_eq!(cap_names(0x1000), ["CAP_NET_ADMIN"]);
        assert_eq!(cap_names(0x3000), ["CAP_NET_ADMIN", "CAP_NET_RAW"]);
        assert_eq!(cap_names(1 << 45), ["cap_45"]);
        assert!(cap_names(0).is_empty());
        assert_eq!(NAMES[PROXY_CAPS[0].bit as usize], PROXY_CAPS[0].name);
    }

    #[test]
    fn bad_netns_names_are_refused_before_any_syscall() {
        for bad in ["", "..", "a/b"] {
            assert!(matches!(enter_netns(bad), Err(SysError::NetnsName(_))), "{bad:?}");
        }
        let e = enter_netns("pm-no-such-netns").unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("/run/netns/pm-no-such-netns"), "{e}");
    }

    #[test]
    fn keep_only_in_a_thread_leaves_exactly_the_kept_set() {
        // Capabilities are per thread: a scratch thread keeps the test process intact.
        let (eff, perm) = std::thread::spawn(|| {
            keep_only(PROXY_CAPS).unwrap();
            capget().unwrap()
        })
        .join()
        .unwrap();
        let (_, before) = capget().unwrap();
        let want = before & (1 << 12);
        assert_eq!((eff, perm), (want, want));
    }
}
