//! TDX reference values computed before boot: MRTD and RTMR1/RTMR2 of a podVM that QEMU
//! launches with TDVF (OvmfPkg/IntelTdx, edk2 2025.02) and a direct-boot Linux kernel.
//!
//! - MRTD (TDX module): for every page of every TDVF metadata section, in order,
//!   TDH.MEM.PAGE.ADD (128-byte record "MEM.PAGE.ADD", GPA) and, for sections with the
//!   MR.EXTEND attribute (the boot firmware volume), TDH.MR.EXTEND per 256-byte chunk
//!   (record "MR.EXTEND", GPA, then the chunk): one SHA-384 over all records. Firmware only.
//! - RTMR1 (TDVF, PCR 4/5): the kernel's PE image (Authenticode SHA-384 of the image QEMU
//!   hands over: its setup header is patched by QEMU, so it depends on the guest memory size
//!   and the initrd size), "Calling EFI Application from Boot Option", the separator, and
//!   the two ExitBootServices actions.
//! - RTMR2 (the kernel's EFI stub, PCR 9): the LoadOptions (UTF-16 command line with OVMF's
//!   " initrd=initrd" and the NUL), then the initrd.
//! - RTMR0 (TDVF configuration: TD HOB with the host's memory map, QEMU's ACPI tables, the
//!   variable store, boot variables) depends on the host: not computed here (README).
//!
//! Every RTMR starts at zero and is extended as SHA-384(old || digest).

use crate::reference::DirectBoot;
use sha2::{Digest, Sha384};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TdxReferenceError {
    #[error("{what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("firmware {path}: {reason}")]
    Firmware { path: PathBuf, reason: String },
    #[error("kernel {path}: {reason}")]
    Kernel { path: PathBuf, reason: String },
    #[error("--append: {0}")]
    Append(&'static str),
    #[error("--memory {0} MiB: the initrd ({1} bytes) does not fit below the ACPI data")]
    Memory(u64, u64),
}

/// The inputs of one TDX launch, as image/run-qemu passes them to QEMU.
#[derive(Debug, Clone)]
pub struct TdxLaunch<'a> {
    pub boot: DirectBoot<'a>,
    /// Guest memory (-m), MiB: QEMU places the initrd below it and writes that into the kernel.
    pub memory_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxValues {
    pub mrtd: [u8; 48],
    pub rtmr1: [u8; 48],
    pub rtmr2: [u8; 48],
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TdxReferenceError> {
    std::fs::read(path).map_err(|source| TdxReferenceError::Read { what, path: path.into(), source })
}

pub fn tdx_measurements(launch: &TdxLaunch<'_>) -> Result<TdxValues, TdxReferenceError> {
    let boot = &launch.boot;
    if boot.append.contains('\0') {
        return Err(TdxReferenceError::Append("contains a NUL byte"));
    }
    // QEMU rewrites the header's video mode for vga=; we do not model that.
    if boot.append.split(' ').any(|w| w.starts_with("vga=")) {
        return Err(TdxReferenceError::Append("vga= is not supported (QEMU patches the kernel header for it)"));
    }
    let fw = read("firmware", boot.firmware)?;
    let mrtd = mrtd(&fw).map_err(|reason| TdxReferenceError::Firmware { path: boot.firmware.into(), reason })?;
    let kernel = read("kernel", boot.kernel)?;
    let initrd = boot.initrd.map(|p| read("initrd", p)).transpose()?;
    let initrd_len = initrd.as_ref().map_or(0, |i| i.len() as u64);
    let kernel_err = |reason: String| TdxReferenceError::Kernel { path: boot.kernel.into(), reason };
    let patched =
        qemu_patch_kernel(&kernel, launch.memory_mib, initrd.as_ref().map(Vec::len)).map_err(|e| match e {
            PatchError::Kernel(r) => kernel_err(r),
            PatchError::Memory => TdxReferenceError::Memory(launch.memory_mib, initrd_len),
        })?;
    let kernel_digest = authenticode_sha384(&patched).map_err(kernel_err)?;

    let mut rtmr1 = [0u8; 48];
    for digest in [
        kernel_digest,
        sha384(b"Calling EFI Application from Boot Option"),
        sha384(&[0u8; 4]),
        sha384(b"Exit Boot Services Invocation"),
        sha384(b"Exit Boot Services Returned with Success"),
    ] {
        extend(&mut rtmr1, &digest);
    }

    let mut options = String::from(boot.append);
    if initrd.is_some() {
        options.push_str(" initrd=initrd");
    }
    let load_options: Vec<u8> = options.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
    let mut rtmr2 = [0u8; 48];
    extend(&mut rtmr2, &sha384(&load_options));
    if let Some(initrd) = initrd.as_deref().filter(|i| !i.is_empty()) {
        extend(&mut rtmr2, &sha384(initrd));
    }
    Ok(TdxValues { mrtd, rtmr1, rtmr2 })
}

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

fn extend(mr: &mut [u8; 48], digest: &[u8; 48]) {
    let mut h = Sha384::new();
    h.update(&mr[..]);
    h.update(digest);
    *mr = h.finalize().into();
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A GUID in its on-disk (mixed-endian) byte order.
fn guid_bytes(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

const OVMF_TABLE_FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
const TDX_METADATA_OFFSET_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";
const ATTR_MR_EXTEND: u32 = 1;
const PAGE: u64 = 4096;

/// The data of `guid` in OVMF's GUIDed table (it ends 32 bytes before the end of the image:
/// entries of [data][u16 length][GUID], walked backwards from the footer entry).
fn ovmf_table_entry<'a>(fw: &'a [u8], guid: &str) -> Result<&'a [u8], String> {
    let footer = fw.len().checked_sub(0x30).ok_or("image too small for an OVMF GUID table")?;
    if fw[footer..footer + 16] != guid_bytes(OVMF_TABLE_FOOTER_GUID) {
        return Err("no OVMF GUID table (not an OVMF image)".into());
    }
    let total = le_u16(fw, footer - 2).ok_or("truncated GUID table")? as usize;
    let start = (footer + 16).checked_sub(total).ok_or("GUID table longer than the image")?;
    let want = guid_bytes(guid);
    // Skip the footer entry itself (u16 + GUID).
    let mut end = footer - 2;
    while end >= start + 18 {
        let g = &fw[end - 16..end];
        let len = le_u16(fw, end - 18).ok_or("truncated GUID table entry")? as usize;
        if len < 18 || end < start + len {
            return Err("malformed GUID table entry".into());
        }
        if g == want {
            return Ok(&fw[end - len..end - 18]);
        }
        end -= len;
    }
    Err(format!("no GUID table entry {guid}"))
}

/// MRTD as the TDX module computes it while QEMU adds TDVF's sections.
fn mrtd(fw: &[u8]) -> Result<[u8; 48], String> {
    let entry = ovmf_table_entry(fw, TDX_METADATA_OFFSET_GUID).map_err(|e| format!("{e}: not a TDVF image"))?;
    let from_end = le_u32(entry, 0).ok_or("short TDX metadata offset entry")? as usize;
    let at = fw.len().checked_sub(from_end).ok_or("TDX metadata offset outside the image")?;
    if fw.get(at..at + 4) != Some(b"TDVF") {
        return Err("no TDVF metadata signature at the advertised offset".into());
    }
    let version = le_u32(fw, at + 8).ok_or("truncated TDVF metadata")?;
    let count = le_u32(fw, at + 12).ok_or("truncated TDVF metadata")? as usize;
    if version != 1 || count == 0 || count > 64 {
        return Err(format!("TDVF metadata version {version} with {count} sections is not supported"));
    }
    let mut h = Sha384::new();
    for i in 0..count {
        let e = at + 16 + 32 * i;
        let bad = || format!("truncated TDVF section {i}");
        let data_offset = le_u32(fw, e).ok_or_else(bad)? as usize;
        let raw_size = le_u32(fw, e + 4).ok_or_else(bad)? as usize;
        let gpa = le_u64(fw, e + 8).ok_or_else(bad)?;
        let size = le_u64(fw, e + 16).ok_or_else(bad)?;
        let attributes = le_u32(fw, e + 28).ok_or_else(bad)?;
        if gpa % PAGE != 0 || size % PAGE != 0 || size == 0 || raw_size as u64 > size {
            return Err(format!("TDVF section {i}: unaligned or inconsistent (gpa {gpa:#x}, size {size:#x})"));
        }
        let raw = fw
            .get(data_offset..data_offset + raw_size)
            .ok_or_else(|| format!("TDVF section {i}: data outside the image"))?;
        for page in 0..size / PAGE {
            let page_gpa = gpa + page * PAGE;
            h.update(record(b"MEM.PAGE.ADD", page_gpa));
            if attributes & ATTR_MR_EXTEND != 0 {
                for chunk in 0..PAGE / 256 {
                    let off = (page * PAGE + chunk * 256) as usize;
                    h.update(record(b"MR.EXTEND", page_gpa + chunk * 256));
                    let mut data = [0u8; 256];
                    if off < raw.len() {
                        let n = (raw.len() - off).min(256);
                        data[..n].copy_from_slice(&raw[off..off + n]);
                    }
                    h.update(data);
                }
            }
        }
    }
    Ok(h.finalize().into())
}

/// The 128-byte record the TDX module hashes for PAGE.ADD / MR.EXTEND.
fn record(op: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[..op.len()].copy_from_slice(op);
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

enum PatchError {
    Kernel(String),
    Memory,
}

/// QEMU's x86_load_linux for a non-SEV guest (TDX included) writes the loader fields into the
/// bzImage setup header before handing setup + kernel to the firmware over fw_cfg.
fn qemu_patch_kernel(kernel: &[u8], memory_mib: u64, initrd_len: Option<usize>) -> Result<Vec<u8>, PatchError> {
    let bad = |r: &str| PatchError::Kernel(r.into());
    if le_u32(kernel, 0x202) != Some(0x5372_6448) {
        return Err(bad("no bzImage setup header (HdrS)"));
    }
    let protocol = le_u16(kernel, 0x206).ok_or_else(|| bad("truncated setup header"))?;
    if protocol < 0x20c || kernel[0x211] & 1 == 0 {
        return Err(bad("boot protocol older than 2.12 or not a bzImage"));
    }
    let mut k = kernel.to_vec();
    // High kernel, protocol >= 2.02: real-mode code at 0x10000, command line at 0x20000.
    let (real_addr, cmdline_addr) = (0x10000u32, 0x20000u32);
    k[0x228..0x22c].copy_from_slice(&cmdline_addr.to_le_bytes());
    k[0x210] = 0xb0; // type_of_loader: QEMU
    k[0x211] |= 0x80; // CAN_USE_HEAP
    k[0x224..0x226].copy_from_slice(&((cmdline_addr - real_addr - 0x200) as u16).to_le_bytes());
    if let Some(len) = initrd_len {
        // q35: RAM below 4 GiB is all of it up to 2.75 GiB, else 2 GiB; minus the ACPI data.
        let ram = memory_mib * 1024 * 1024;
        let below_4g = if ram >= 0xb000_0000 { 0x8000_0000 } else { ram };
        let acpi_data_size = 0x20000 + 0x8000;
        let xloadflags = le_u16(kernel, 0x236).unwrap_or(0);
        let mut initrd_max: u64 =
            if xloadflags & 0x2 != 0 { u64::from(u32::MAX) } else { u64::from(le_u32(kernel, 0x22c).unwrap_or(0)) };
        let limit = below_4g.checked_sub(acpi_data_size + 1).ok_or(PatchError::Memory)?;
        initrd_max = initrd_max.min(limit);
        let len = len as u64;
        if len >= initrd_max {
            return Err(PatchError::Memory);
        }
        let initrd_addr = (initrd_max - len) & !(PAGE - 1);
        k[0x218..0x21c].copy_from_slice(&(initrd_addr as u32).to_le_bytes());
        k[0x21c..0x220].copy_from_slice(&(len as u32).to_le_bytes());
    }
    Ok(k)
}

/// The PE/COFF Authenticode SHA-384 that TDVF's image verification measures (checksum and
/// certificate table entry skipped, sections in file order, trailing data up to the certificates).
fn authenticode_sha384(img: &[u8]) -> Result<[u8; 48], String> {
    let pe = le_u32(img, 0x3c).ok_or("no DOS header")? as usize;
    if img.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err("no PE signature (not an EFI-stub kernel)".into());
    }
    let coff = pe + 4;
    let nsections = le_u16(img, coff + 2).ok_or("truncated COFF header")? as usize;
    let opt_size = le_u16(img, coff + 16).ok_or("truncated COFF header")? as usize;
    let opt = coff + 20;
    let magic = le_u16(img, opt).ok_or("truncated optional header")?;
    let (nrva_at, dirs_at) = match magic {
        0x20b => (opt + 108, opt + 112),
        0x10b => (opt + 92, opt + 96),
        m => return Err(format!("unknown optional header magic {m:#x}")),
    };
    let checksum_at = opt + 64;
    let size_of_headers = le_u32(img, opt + 60).ok_or("truncated optional header")? as usize;
    let nrva = le_u32(img, nrva_at).ok_or("truncated optional header")?;
    if size_of_headers > img.len() || checksum_at + 4 > size_of_headers {
        return Err("SizeOfHeaders outside the image".into());
    }
    let mut h = Sha384::new();
    let cert_size = if nrva > 4 {
        let cert_dir = dirs_at + 4 * 8;
        h.update(&img[..checksum_at]);
        h.update(img.get(checksum_at + 4..cert_dir).ok_or("headers too short")?);
        h.update(img.get(cert_dir + 8..size_of_headers).ok_or("headers too short")?);
        le_u32(img, cert_dir + 4).unwrap_or(0) as usize
    } else {
        h.update(&img[..checksum_at]);
        h.update(&img[checksum_at + 4..size_of_headers]);
        0
    };
    let table = opt + opt_size;
    let mut sections = Vec::with_capacity(nsections);
    for i in 0..nsections {
        let s = table + 40 * i;
        let raw_size = le_u32(img, s + 16).ok_or("truncated section table")? as usize;
        let raw_ptr = le_u32(img, s + 20).ok_or("truncated section table")? as usize;
        if raw_size > 0 {
            sections.push((raw_ptr, raw_size));
        }
    }
    sections.sort_unstable();
    let mut hashed = size_of_headers;
    for (ptr, size) in sections {
        h.update(img.get(ptr..ptr + size).ok_or("section outside the image")?);
        hashed += size;
    }
    if img.len() > hashed {
        let extra = img.len() - hashed;
        if cert_size > extra {
            return Err("certificate table larger than the trailing data".into());
        }
        h.update(&img[hashed..img.len() - cert_size]);
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_extend_follow_the_tdx_module() {
        let r = record(b"MEM.PAGE.ADD", 0xffc0_0000);
        assert_eq!(&r[..12], b"MEM.PAGE.ADD");
        assert_eq!(&r[12..16], &[0; 4]);
        assert_eq!(&r[16..24], &0xffc0_0000u64.to_le_bytes());
        assert!(r[24..].iter().all(|b| *b == 0));
        let mut mr = [0u8; 48];
        extend(&mut mr, &[1u8; 48]);
        let mut cat = vec![0u8; 48];
        cat.extend([1u8; 48]);
        assert_eq!(mr, sha384(&cat));
    }

    #[test]
    fn guid_bytes_are_mixed_endian() {
        assert_eq!(
            guid_bytes(OVMF_TABLE_FOOTER_GUID),
            [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]
        );
    }

    fn launch(fw: &Path) -> TdxLaunch<'_> {
        TdxLaunch { boot: DirectBoot { firmware: fw, kernel: fw, initrd: None, append: "" }, memory_mib: 2048 }
    }

    #[test]
    fn bad_inputs_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        let e = tdx_measurements(&launch(&dir.path().join("missing"))).unwrap_err();
        assert!(matches!(e, TdxReferenceError::Read { what: "firmware", .. }), "{e}");
        let e = tdx_measurements(&launch(&junk)).unwrap_err();
        assert!(e.to_string().contains("not an OVMF image"), "{e}");
        let mut vga = launch(&junk);
        vga.boot.append = "vga=791";
        let e = tdx_measurements(&vga).unwrap_err();
        assert!(matches!(e, TdxReferenceError::Append(_)), "{e}");
        // Truncated or garbage kernels are errors, not panics.
        assert!(qemu_patch_kernel(&[0u8; 16], 2048, None).is_err());
        assert!(authenticode_sha384(&[0u8; 64]).is_err());
        let mut pe = vec![0u8; 512];
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert!(authenticode_sha384(&pe).is_err());
    }
}
