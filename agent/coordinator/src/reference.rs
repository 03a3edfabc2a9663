//! Reference values computed before boot: the SEV-SNP launch digest that QEMU and the podVM's
//! firmware produce for a given kernel, initrd, command line and vCPU count.
//!
//! The digest is the PSP's: the firmware pages (OVMF's SNP metadata sections: zero pages,
//! secrets, CPUID, and the SNP_KERNEL_HASHES page that QEMU's `kernel-hashes=on` fills with the
//! SHA-256 of kernel, initrd and command line), then one VMSA page per vCPU (its reset state
//! depends on the vCPU type's CPUID signature and the guest features). The page arithmetic is
//! the `sev` crate's `measurement` module (the code VirTEE's tools use); this module checks the
//! inputs, refuses a firmware that cannot measure a direct-boot kernel, and names each failure.
//! Cross-checked against `sev-snp-measure` (tests/tests/reference_values.rs).

use sev::measurement::{
    snp::{snp_calc_launch_digest, SnpMeasurementArgs},
    vcpu_types::CpuType,
    vmsa::{GuestFeatures, VMMType},
};
use sev::parser::ByteParser;
use std::path::{Path, PathBuf};

/// The vCPU model `image/run-qemu --tee snp` launches with (`-cpu EPYC-v4`).
pub const DEFAULT_VCPU_TYPE: &str = "EPYC-v4";
/// SEV_FEATURES in the VMSA: SNPActive only, what QEMU sets unless told otherwise.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;
/// vCPU counts the SNP guest may launch with (the VMSA pages are per vCPU); image/run-qemu
/// offers these and `make image` writes a measurement for each.
pub const MAX_VCPUS: u32 = 512;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {path} is empty")]
    Empty { what: &'static str, path: PathBuf },
    #[error("--vcpus {0}: must be between 1 and {MAX_VCPUS}")]
    Vcpus(u32),
    #[error("--vcpu-type {0}: unknown vCPU model (e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa)")]
    VcpuType(String),
    #[error("--append: the kernel command line contains a NUL byte")]
    AppendNul,
    #[error("firmware {path}: {reason}")]
    Firmware { path: PathBuf, reason: String },
}

/// What QEMU boots directly: the firmware (-bios), kernel, initrd and the whole command line.
#[derive(Debug, Clone, Copy)]
pub struct DirectBoot<'a> {
    pub firmware: &'a Path,
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    /// The whole kernel command line, as QEMU gets it (-append).
    pub append: &'a str,
}

/// The inputs of one SNP launch, as image/run-qemu passes them to QEMU.
#[derive(Debug, Clone)]
pub struct SnpLaunch<'a> {
    pub boot: DirectBoot<'a>,
    pub vcpus: u32,
    pub vcpu_type: &'a str,
    pub guest_features: u64,
}

fn check_file(what: &'static str, path: &Path) -> Result<(), ReferenceError> {
    let meta = std::fs::metadata(path).map_err(|source| ReferenceError::Read { what, path: path.into(), source })?;
    if !meta.is_file() {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
        return Err(ReferenceError::Read { what, path: path.into(), source });
    }
    if meta.len() == 0 {
        return Err(ReferenceError::Empty { what, path: path.into() });
    }
    Ok(())
}

/// The 48-byte SNP launch digest (MEASUREMENT in the attestation report) of this launch.
pub fn snp_measurement(launch: &SnpLaunch<'_>) -> Result<[u8; 48], ReferenceError> {
    let boot = &launch.boot;
    if launch.vcpus == 0 || launch.vcpus > MAX_VCPUS {
        return Err(ReferenceError::Vcpus(launch.vcpus));
    }
    let vcpu_type = CpuType::try_from(launch.vcpu_type.to_ascii_lowercase().as_str())
        .map_err(|_| ReferenceError::VcpuType(launch.vcpu_type.to_owned()))?;
    if boot.append.contains('\0') {
        return Err(ReferenceError::AppendNul);
    }
    check_file("firmware", boot.firmware)?;
    check_file("kernel", boot.kernel)?;
    if let Some(initrd) = boot.initrd {
        check_file("initrd", initrd)?;
    }
    let guest_features = GuestFeatures::from_bytes_with(&launch.guest_features.to_le_bytes(), ())
        .map_err(|e| ReferenceError::Firmware { path: boot.firmware.into(), reason: e.to_string() })?;
    let args = SnpMeasurementArgs {
        vcpus: launch.vcpus,
        vcpu_type,
        ovmf_file: boot.firmware.into(),
        guest_features,
        kernel_file: Some(boot.kernel.into()),
        initrd_file: boot.initrd.map(Into::into),
        append: Some(boot.append),
        ovmf_hash_str: None,
        vmm_type: Some(VMMType::QEMU),
    };
    // The crate asserts on some malformed firmware layouts: a panic there is a bad input here.
    let digest = std::panic::catch_unwind(|| snp_calc_launch_digest(args))
        .map_err(|_| ReferenceError::Firmware {
            path: boot.firmware.into(),
            reason: "malformed OVMF (SEV metadata does not fit the image)".into(),
        })?
        .map_err(|e| ReferenceError::Firmware {
            path: boot.firmware.into(),
            reason: firmware_reason(&e.to_string()),
        })?;
    let bytes: Vec<u8> = digest.try_into().map_err(|e: sev::error::MeasurementError| ReferenceError::Firmware {
        path: boot.firmware.into(),
        reason: e.to_string(),
    })?;
    bytes.try_into().map_err(|_| ReferenceError::Firmware {
        path: boot.firmware.into(),
        reason: "launch digest is not 48 bytes".into(),
    })
}

/// The crate's error text, with what it means for the operator.
fn firmware_reason(err: &str) -> String {
    if err.contains("SNP_KERNEL_HASHES") {
        format!(
            "{err}: this OVMF cannot measure a direct-boot kernel (build OvmfPkg/AmdSev/AmdSevX64.dsc: image/build-firmware.sh)"
        )
    } else {
        format!("{err} (not an SEV-SNP capable OVMF image?)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch<'a>(fw: &'a Path, kernel: &'a Path) -> SnpLaunch<'a> {
        SnpLaunch {
            boot: DirectBoot { firmware: fw, kernel, initrd: None, append: "console=ttyS0" },
            vcpus: 1,
            vcpu_type: DEFAULT_VCPU_TYPE,
            guest_features: DEFAULT_GUEST_FEATURES,
        }
    }

    #[test]
    fn bad_inputs_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.fd");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let missing = dir.path().join("missing");

        let e = snp_measurement(&launch(&missing, &junk)).unwrap_err();
        assert!(matches!(e, ReferenceError::Read { what: "firmware", .. }), "{e}");
        let e = snp_measurement(&launch(&junk, &empty)).unwrap_err();
        assert!(matches!(e, ReferenceError::Empty { what: "kernel", .. }), "{e}");
        let e = snp_measurement(&launch(&junk, dir.path())).unwrap_err();
        assert!(matches!(e, ReferenceError::Read { what: "kernel", .. }), "{e}");
        let e = snp_measurement(&SnpLaunch { vcpus: 0, ..launch(&junk, &junk) }).unwrap_err();
        assert!(matches!(e, ReferenceError::Vcpus(0)), "{e}");
        let e = snp_measurement(&SnpLaunch { vcpu_type: "pentium", ..launch(&junk, &junk) }).unwrap_err();
        assert!(e.to_string().contains("pentium"), "{e}");
        let mut nul = launch(&junk, &junk);
        nul.boot.append = "a\0b";
        let e = snp_measurement(&nul).unwrap_err();
        assert!(matches!(e, ReferenceError::AppendNul), "{e}");
        // Not an OVMF image: no footer GUID table.
        let e = snp_measurement(&launch(&junk, &junk)).unwrap_err();
        assert!(matches!(e, ReferenceError::Firmware { .. }), "{e}");
    }
}
