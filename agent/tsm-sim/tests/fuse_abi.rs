//! The raw configfs-tsm file ABI as served by the mounted simulator (needs root + /dev/fuse).

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use std::fs;
use std::io::{Read, Write};

use common::SimMount;
use tee::certtable::{CertKind, CertTable};

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn write_attr(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(data)
}

fn read_text(path: &std::path::Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn snp_entry_lifecycle_and_kernel_errnos() {
    podmesh_tests::skip_unless_fuse!();
    let host_data = "ab".repeat(32);
    let mut m = SimMount::start("snp", &["--host-data", &host_data, "--vmpl-floor", "1"]);
    let e = m.report_dir().join("entry0");
    fs::create_dir(&e).expect("mkdir entry");
    let mut names: Vec<String> =
        fs::read_dir(&e).unwrap().map(|d| d.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["auxblob", "generation", "inblob", "outblob", "privlevel", "privlevel_floor", "provider"]);
    assert_eq!(read_text(&e.join("provider")), "sev_guest\n");
    assert_eq!(read_text(&e.join("generation")), "0\n");
    assert_eq!(read_text(&e.join("privlevel_floor")), "1\n");
    assert_eq!(read_text(&e.join("privlevel")), "1\n", "privlevel starts at the floor");

    // Reading a blob before inblob was written: EINVAL, as tsm_report_read.
    assert_eq!(errno_of(fs::read(e.join("outblob"))), Some(libc::EINVAL));
    // inblob is write-only, generation read-only (configfs refuses even root).
    assert_eq!(errno_of(fs::read(e.join("inblob"))), Some(libc::EACCES));
    assert_eq!(errno_of(write_attr(&e.join("generation"), b"5")), Some(libc::EACCES));
    // More than 64 bytes: EFBIG from configfs's binary attribute buffer.
    assert_eq!(errno_of(write_attr(&e.join("inblob"), &[1u8; 65])), Some(libc::EFBIG));
    assert_eq!(read_text(&e.join("generation")), "0\n", "a rejected write does not count");
    // privlevel below the floor / above 3 / not a number: EINVAL.
    for bad in [&b"0"[..], b"4", b"two"] {
        assert_eq!(errno_of(write_attr(&e.join("privlevel"), bad)), Some(libc::EINVAL), "privlevel {bad:?}");
    }
    write_attr(&e.join("privlevel"), b"2\n").expect("privlevel 2");
    assert_eq!(read_text(&e.join("generation")), "1\n");

    let data: Vec<u8> = (0u8..64).collect();
    write_attr(&e.join("inblob"), &data).expect("write inblob");
    assert_eq!(read_text(&e.join("generation")), "2\n");
    let out = fs::read(e.join("outblob")).expect("read outblob");
    assert_eq!(out.len(), 0x4A0);
    assert_eq!(&out[0..4], &3u32.to_le_bytes(), "report version 3");
    assert_eq!(&out[0x30..0x34], &2u32.to_le_bytes(), "VMPL = privlevel");
    assert_eq!(&out[0x50..0x90], &data[..], "REPORT_DATA = inblob");
    assert_eq!(hex::encode(&out[0xC0..0xE0]), host_data);
    // Cached until the next write: same bytes (same ECDSA nonce would be a bug, same blob is not).
    assert_eq!(fs::read(e.join("outblob")).unwrap(), out);
    let aux = fs::read(e.join("auxblob")).expect("read auxblob");
    let table = CertTable::parse(&aux).expect("auxblob is a GHCB cert table");
    for kind in [CertKind::Vcek, CertKind::Ask, CertKind::Ark] {
        assert!(table.get(kind).is_some(), "{kind} in auxblob");
    }

    // A short inblob is stored (configfs zero-pads nothing) but rejected at generation.
    write_attr(&e.join("inblob"), &[9u8; 10]).expect("short inblob");
    assert_eq!(errno_of(fs::read(e.join("outblob"))), Some(libc::EINVAL));

    // Reads within one open file see one snapshot, even across a concurrent write.
    write_attr(&e.join("inblob"), &[7u8; 64]).unwrap();
    let mut f = fs::File::open(e.join("outblob")).unwrap();
    let mut first = [0u8; 64];
    f.read_exact(&mut first).unwrap();
    write_attr(&e.join("inblob"), &[8u8; 64]).unwrap();
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    assert_eq!(&rest[0x50 - 64..0x90 - 64], &[7u8; 64], "snapshot survives a later write");

    // Entries live only under report/, and rmdir removes them.
    assert_eq!(errno_of(fs::create_dir(m.root.join("elsewhere"))), Some(libc::EPERM));
    assert_eq!(errno_of(fs::create_dir(&e)), Some(libc::EEXIST));
    fs::remove_dir(&e).expect("rmdir entry");
    assert!(!e.exists());
    assert!(m.stop(), "SIGTERM unmounts cleanly and exits 0");
}

#[test]
fn second_writer_bumps_generation_and_wins() {
    podmesh_tests::skip_unless_fuse!();
    let m = SimMount::start("snp", &[]);
    let e = m.report_dir().join("shared");
    fs::create_dir(&e).unwrap();
    write_attr(&e.join("inblob"), &[1u8; 64]).unwrap();
    let mine = read_text(&e.join("generation"));
    // Another process writes between our write and our read.
    write_attr(&e.join("inblob"), &[2u8; 64]).unwrap();
    let out = fs::read(e.join("outblob")).unwrap();
    let after = read_text(&e.join("generation"));
    assert_eq!(mine, "1\n");
    assert_eq!(after, "2\n", "the generation exposes the other writer");
    assert_eq!(&out[0x50..0x90], &[2u8; 64], "and the report is the other writer's");
}

#[test]
fn tdx_entry_has_no_snp_attributes_and_carries_the_td_fields() {
    podmesh_tests::skip_unless_fuse!();
    let mrtd = "11".repeat(48);
    let cfg = "22".repeat(48);
    let rtmr2 = "33".repeat(48);
    let m = SimMount::start("tdx", &["--mrtd", &mrtd, "--mrconfigid", &cfg, "--rtmr2", &rtmr2]);
    let e = m.report_dir().join("td");
    fs::create_dir(&e).unwrap();
    let mut names: Vec<String> =
        fs::read_dir(&e).unwrap().map(|d| d.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["generation", "inblob", "outblob", "provider"]);
    assert_eq!(read_text(&e.join("provider")), "tdx_guest\n");
    let data = [0x5au8; 64];
    write_attr(&e.join("inblob"), &data).unwrap();
    let quote = fs::read(e.join("outblob")).unwrap();
    let q = tee::tdx::TdxQuote::parse(&quote).expect("E2's TDX parser accepts the simulated quote");
    assert_eq!(q.version, 4);
    assert_eq!(hex::encode(q.td.mr_td), mrtd);
    assert_eq!(hex::encode(q.td.mr_config_id), cfg);
    assert_eq!(hex::encode(q.td.rtmr[2]), rtmr2);
    assert_eq!(q.td.report_data, data);
}
