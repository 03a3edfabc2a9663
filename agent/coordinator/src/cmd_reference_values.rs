//! `podmesh-coordinator reference-values snp|tdx`: the launch measurements of a podVM computed
//! from its firmware, kernel, initrd and command line before it boots (JSON on stdout), so a
//! manifest's reference values come from the build, never from copying a real boot's report.

use anyhow::Result;
use coordinator::reference::{self, DirectBoot, SnpLaunch};
use coordinator::reference_tdx::{self, TdxLaunch};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// SEV-SNP launch digest (QEMU, kernel-hashes=on): {"measurement": "<96 hex>", ...}.
    Snp(SnpArgs),
    /// TDX: MRTD (TDVF) and RTMR1/RTMR2 as TDVF and the kernel's EFI stub extend them; RTMR0
    /// depends on the host (TD HOB, QEMU's ACPI tables) and is reported as null.
    Tdx(TdxArgs),
}

#[derive(Debug, clap::Args)]
pub struct Boot {
    /// The OVMF image (build/firmware/snp.fd or tdx.fd).
    #[arg(long)]
    firmware: PathBuf,
    /// The kernel QEMU boots directly (-kernel).
    #[arg(long)]
    kernel: PathBuf,
    /// The initrd (-initrd).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The whole kernel command line (-append), exactly as QEMU gets it.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    append: String,
}

impl Boot {
    fn direct(&self) -> DirectBoot<'_> {
        DirectBoot {
            firmware: &self.firmware,
            kernel: &self.kernel,
            initrd: self.initrd.as_deref(),
            append: &self.append,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SnpArgs {
    #[command(flatten)]
    boot: Boot,
    /// vCPU count (-smp): one VMSA page each.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// vCPU model (-cpu), e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa.
    #[arg(long, default_value = reference::DEFAULT_VCPU_TYPE)]
    vcpu_type: String,
    /// SEV_FEATURES of the VMSA (hex); QEMU's default is 0x1 (SNPActive).
    #[arg(long, default_value = "0x1")]
    guest_features: String,
}

#[derive(Debug, clap::Args)]
pub struct TdxArgs {
    #[command(flatten)]
    boot: Boot,
    /// Guest memory in MiB (-m): QEMU writes the initrd's address below it into the kernel.
    #[arg(long, default_value_t = 2048)]
    memory: u64,
}

/// Why RTMR0 is not computed (also in the README's reference-values section).
const RTMR0_HOST_DEPENDENT: &str = "RTMR0 measures TDVF's configuration: the TD HOB (the host's memory map), \
QEMU's ACPI tables, the variable store and the boot variables; it depends on the host's QEMU, memory \
and vCPU configuration: take it from a first boot on that host type, or write \"any\" in the manifest";

fn parse_hex_u64(s: &str) -> Result<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    u64::from_str_radix(digits, 16).map_err(|e| anyhow::anyhow!("--guest-features {s}: not a hex number ({e})"))
}

pub fn run(command: Command) -> Result<()> {
    let out = match command {
        Command::Snp(a) => {
            let guest_features = parse_hex_u64(&a.guest_features)?;
            let launch = SnpLaunch { boot: a.boot.direct(), vcpus: a.vcpus, vcpu_type: &a.vcpu_type, guest_features };
            let m = reference::snp_measurement(&launch)?;
            json!({
                "tee": "snp",
                "measurement": hex::encode(m),
                "vcpus": a.vcpus,
                "vcpu_type": a.vcpu_type,
                "guest_features": format!("{guest_features:#x}"),
                "append": a.boot.append,
            })
        }
        Command::Tdx(a) => {
            let launch = TdxLaunch { boot: a.boot.direct(), memory_mib: a.memory };
            let v = reference_tdx::tdx_measurements(&launch)?;
            json!({
                "tee": "tdx",
                "mrtd": hex::encode(v.mrtd),
                "rtmr0": null,
                "rtmr0_host_dependent": RTMR0_HOST_DEPENDENT,
                "rtmr1": hex::encode(v.rtmr1),
                "rtmr2": hex::encode(v.rtmr2),
                "memory_mib": a.memory,
                "append": a.boot.append,
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
