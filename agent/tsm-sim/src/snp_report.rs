//! SEV-SNP ATTESTATION_REPORT (SEV-SNP ABI spec, table "ATTESTATION_REPORT Structure"),
//! version 3 as the sev-guest driver returns it on Milan/Genoa/Turin firmware 1.55+: 0x4A0 bytes,
//! signed with ECDSA P-384/SHA-384 over bytes 0..0x2A0, r and s little-endian in 72-byte fields.

use crate::snp_chain::{ChainError, SimAmdChain, TcbVersion};

pub const REPORT_LEN: usize = 0x4A0;
const SIGNED_LEN: usize = 0x2A0;

/// Field offsets (bytes) of the v3 layout.
pub mod off {
    pub const VERSION: usize = 0x00;
    pub const GUEST_SVN: usize = 0x04;
    pub const POLICY: usize = 0x08;
    pub const FAMILY_ID: usize = 0x10;
    pub const IMAGE_ID: usize = 0x20;
    pub const VMPL: usize = 0x30;
    pub const SIGNATURE_ALGO: usize = 0x34;
    pub const CURRENT_TCB: usize = 0x38;
    pub const PLATFORM_INFO: usize = 0x40;
    pub const SIGNER_INFO: usize = 0x48;
    pub const REPORT_DATA: usize = 0x50;
    pub const MEASUREMENT: usize = 0x90;
    pub const HOST_DATA: usize = 0xC0;
    pub const ID_KEY_DIGEST: usize = 0xE0;
    pub const AUTHOR_KEY_DIGEST: usize = 0x110;
    pub const REPORT_ID: usize = 0x140;
    pub const REPORT_ID_MA: usize = 0x160;
    pub const REPORTED_TCB: usize = 0x180;
    pub const CPUID_FAM_ID: usize = 0x188;
    pub const CPUID_MOD_ID: usize = 0x189;
    pub const CPUID_STEP: usize = 0x18A;
    pub const CHIP_ID: usize = 0x1A0;
    pub const COMMITTED_TCB: usize = 0x1E0;
    pub const CURRENT_BUILD: usize = 0x1E8;
    pub const COMMITTED_BUILD: usize = 0x1EC;
    pub const LAUNCH_TCB: usize = 0x1F0;
    pub const SIGNATURE: usize = 0x2A0;
}

/// What the simulated guest's launch and platform look like; set by CLI flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpLaunch {
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub policy: u64,
    pub guest_svn: u32,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub platform_info: u64,
    /// TCB the firmware reports (and the VCEK is issued for); also used as CURRENT_TCB.
    pub reported_tcb: TcbVersion,
    pub committed_tcb: TcbVersion,
    pub launch_tcb: TcbVersion,
    /// Firmware version (major, minor, build) for CURRENT_/COMMITTED_ fields.
    pub firmware: (u8, u8, u8),
    /// Stable per-VM identifier (REPORT_ID); REPORT_ID_MA is all ones (no migration agent).
    pub report_id: [u8; 32],
    /// Sets SIGNER_INFO.MASK_CHIP_ID: CHIP_ID is reported as zeros.
    pub mask_chip_id: bool,
}

impl Default for SnpLaunch {
    fn default() -> Self {
        let tcb = TcbVersion::default();
        SnpLaunch {
            measurement: [0; 48],
            host_data: [0; 32],
            // SMT allowed (bit 16) + the must-be-one bit 17; debug (bit 19) off.
            policy: 0x3_0000,
            guest_svn: 0,
            family_id: [0; 16],
            image_id: [0; 16],
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            // SMT_EN | TSME_EN, the usual value on cloud hosts.
            platform_info: 0x3,
            reported_tcb: tcb,
            committed_tcb: tcb,
            launch_tcb: tcb,
            firmware: (1, 55, 21),
            report_id: [0x5a; 32],
            mask_chip_id: false,
        }
    }
}

/// Builds and signs one report for `report_data` at privilege level `vmpl`.
pub fn build_report(
    chain: &SimAmdChain,
    launch: &SnpLaunch,
    report_data: &[u8; 64],
    vmpl: u32,
) -> Result<Vec<u8>, ChainError> {
    let mut r = vec![0u8; REPORT_LEN];
    let mut put = |at: usize, bytes: &[u8]| r[at..at + bytes.len()].copy_from_slice(bytes);
    put(off::VERSION, &3u32.to_le_bytes());
    put(off::GUEST_SVN, &launch.guest_svn.to_le_bytes());
    put(off::POLICY, &launch.policy.to_le_bytes());
    put(off::FAMILY_ID, &launch.family_id);
    put(off::IMAGE_ID, &launch.image_id);
    put(off::VMPL, &vmpl.to_le_bytes());
    put(off::SIGNATURE_ALGO, &1u32.to_le_bytes()); // ECDSA P-384 with SHA-384
    put(off::CURRENT_TCB, &launch.reported_tcb.to_u64(chain.product()).to_le_bytes());
    put(off::PLATFORM_INFO, &launch.platform_info.to_le_bytes());
    // SIGNER_INFO: AUTHOR_KEY_EN bit 0, MASK_CHIP_ID bit 1, SIGNING_KEY bits 4:2 = 0 (VCEK).
    let author_key_en = launch.author_key_digest != [0; 48];
    let signer_info = u32::from(author_key_en) | u32::from(launch.mask_chip_id) << 1;
    put(off::SIGNER_INFO, &signer_info.to_le_bytes());
    put(off::REPORT_DATA, report_data);
    put(off::MEASUREMENT, &launch.measurement);
    put(off::HOST_DATA, &launch.host_data);
    put(off::ID_KEY_DIGEST, &launch.id_key_digest);
    put(off::AUTHOR_KEY_DIGEST, &launch.author_key_digest);
    put(off::REPORT_ID, &launch.report_id);
    put(off::REPORT_ID_MA, &[0xff; 32]);
    put(off::REPORTED_TCB, &launch.reported_tcb.to_u64(chain.product()).to_le_bytes());
    let (fam, model, step) = chain.product().cpuid();
    put(off::CPUID_FAM_ID, &[fam, model, step]);
    if !launch.mask_chip_id {
        put(off::CHIP_ID, chain.chip_id());
    }
    put(off::COMMITTED_TCB, &launch.committed_tcb.to_u64(chain.product()).to_le_bytes());
    let (major, minor, build) = launch.firmware;
    put(off::CURRENT_BUILD, &[build, minor, major, 0]);
    put(off::COMMITTED_BUILD, &[build, minor, major, 0]);
    put(off::LAUNCH_TCB, &launch.launch_tcb.to_u64(chain.product()).to_le_bytes());

    let (r_be, s_be) = chain.vcek_sign(&r[..SIGNED_LEN])?;
    // The report stores each scalar little-endian, zero-padded to 72 bytes.
    for (i, scalar) in [r_be, s_be].iter().enumerate() {
        let at = off::SIGNATURE + i * 72;
        for (j, b) in scalar.iter().rev().enumerate() {
            r[at + j] = *b;
        }
    }
    Ok(r)
}
