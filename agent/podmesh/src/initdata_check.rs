//! Binds initdata to this VM's attestation: a document counts only if its launch value (the
//! digest, truncated or zero-padded; see the `initdata` crate) is what a fresh TEE report says,
//! HOSTDATA on SEV-SNP, MRCONFIGID on TDX. Whatever channel delivered the file, the host cannot
//! make the guest use a document it did not launch the VM with.

use initdata::{Field, Initdata, InitdataError, DEFAULT_PATHS};
use std::io::Read;
use std::path::{Path, PathBuf};
use tsm::{Provider, TsmClient, INBLOB_LEN};

/// The kernel command line key naming the initdata file.
pub const CMDLINE_KEY: &str = "podmesh.initdata";

#[derive(Debug, thiserror::Error)]
pub enum InitdataCheckError {
    #[error("cannot read initdata {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("initdata {path}: {source}")]
    Invalid { path: PathBuf, source: InitdataError },
    #[error("initdata {path} is present but no TEE report could be read: {reason}")]
    NoReport { path: PathBuf, reason: String },
    #[error("initdata {path}: the report's {field} is {reported}, the document's digest gives {expected}")]
    Mismatch { path: PathBuf, field: &'static str, reported: String, expected: String },
}

/// Initdata whose digest the report confirmed.
#[derive(Debug, Clone)]
pub struct Verified {
    pub path: PathBuf,
    pub initdata: Initdata,
    pub field: Field,
    /// The confirmed launch value (hex): what the coordinator's manifest is keyed by.
    pub digest_hex: String,
}

/// The initdata file to use: `explicit` (`--initdata` / `PODMESH_INITDATA`), else
/// `podmesh.initdata=` on the kernel command line, else the first of Kata's and the
/// cloud-api-adaptor's delivery paths that exists. `None`: no initdata.
pub fn locate(explicit: Option<&Path>, cmdline: &[(String, String)]) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some((_, v)) = cmdline.iter().rev().find(|(k, v)| k == CMDLINE_KEY && !v.is_empty()) {
        return Some(PathBuf::from(v));
    }
    DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Reads and parses `path` (bounded: a huge file is refused without reading it all).
pub fn read(path: &Path) -> Result<Initdata, InitdataCheckError> {
    let read_err = |reason: String| InitdataCheckError::Read { path: path.to_path_buf(), reason };
    let file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(initdata::MAX_INITDATA_BYTES as u64 * 3 / 2 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_err(e.to_string()))?;
    Initdata::parse(&bytes).map_err(|source| InitdataCheckError::Invalid { path: path.to_path_buf(), source })
}

/// Reads `path`, requests a fresh report (random report data) and compares.
pub fn verify(path: &Path, tsm: &TsmClient, privlevel: Option<u8>) -> Result<Verified, InitdataCheckError> {
    let initdata = read(path)?;
    let mut nonce = [0u8; INBLOB_LEN];
    rand::fill(&mut nonce);
    let no_report = |reason: String| InitdataCheckError::NoReport { path: path.to_path_buf(), reason };
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| no_report(format!("/proc/self/mountinfo: {e}")))?;
    let root = tsm.root().canonicalize().map_err(|e| no_report(format!("TSM root {}: {e}", tsm.root().display())))?;
    tsm_filesystem_ok(&mountinfo, &root).map_err(no_report)?;
    let report = tsm.report(&nonce, privlevel).map_err(|e| no_report(e.to_string()))?;
    let (field, reported) = report_field(report.provider, &report.outblob, &nonce).map_err(no_report)?;
    let expected = initdata.launch_value(field);
    if reported != expected {
        return Err(InitdataCheckError::Mismatch {
            path: path.to_path_buf(),
            field: field.name(),
            reported: hex::encode(reported),
            expected: hex::encode(expected),
        });
    }
    Ok(Verified { path: path.to_path_buf(), initdata, field, digest_hex: hex::encode(expected) })
}

/// The guest does not check the report's signature (the coordinator does), so the report must
/// come from the kernel: the TSM root must be on configfs (or, in the test image, tsm-sim's
/// FUSE mount, source `tsm-sim`; the host cannot mount FUSE inside the guest). A directory on a host-shared file system (virtiofs, 9p)
/// could answer with any HOSTDATA.
fn tsm_filesystem_ok(mountinfo: &str, root: &Path) -> Result<(), String> {
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    let fstype = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?.replace("\\040", " ");
            let mut fields = right.split(' ');
            let (fstype, source) = (fields.next()?, fields.next().unwrap_or_default());
            root.starts_with(&mountpoint).then(|| (mountpoint.len(), fstype.to_owned(), source.to_owned()))
        })
        .max_by_key(|(len, ..)| *len)
        .map(|(_, t, s)| (t, s))
        .unwrap_or_default();
    match fstype {
        (t, _) if t == "configfs" => Ok(()),
        (t, s) if (t == "fuse" || t == "fuse.tsm") && s == "tsm-sim" => Ok(()),
        (other, _) => Err(format!(
            "TSM root {} is on a {other:?} file system, not configfs: its reports cannot be trusted",
            root.display()
        )),
    }
}

/// The launch-value field of a report or quote, after checking that it binds `nonce` (so it
/// is this request's answer, not a stale blob).
pub fn report_field(provider: Provider, outblob: &[u8], nonce: &[u8; INBLOB_LEN]) -> Result<(Field, Vec<u8>), String> {
    let fields = tsm::launch_fields(provider, outblob).map_err(|e| e.to_string())?;
    let field = match provider {
        Provider::SevGuest => Field::SnpHostData,
        Provider::TdxGuest => Field::TdxMrConfigId,
    };
    let (value, report_data) = (fields.launch_value, fields.report_data);
    if &report_data != nonce {
        return Err(format!("the {provider} report does not carry this request's report data"));
    }
    Ok((field, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsm_sim::signer::{Provider as _, SnpProvider, TdxProvider};
    use tsm_sim::snp_chain::{Product, SimAmdChain};
    use tsm_sim::snp_report::SnpLaunch;
    use tsm_sim::tdx_quote::TdxLaunch;

    const DOC: &[u8] = b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"podmesh.env\" = \"CONTRAST_INGRESS_PROXY_CONFIG=web#8080#false\\n\"\n";

    fn snp_report(host_data: [u8; 32], nonce: &[u8; 64]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let chain = SimAmdChain::load_or_create(dir.path(), Product::Milan).unwrap();
        let p = SnpProvider::new(chain, SnpLaunch { host_data, ..SnpLaunch::default() }, false, 0).unwrap();
        p.generate(nonce, 0).unwrap().outblob
    }

    #[test]
    fn snp_and_tdx_fields_are_read_and_compared() {
        let init = Initdata::parse(DOC).unwrap();
        let nonce = [7u8; 64];
        let mut hostdata = [0u8; 32];
        hostdata.copy_from_slice(&init.launch_value(Field::SnpHostData));
        let (field, value) = report_field(Provider::SevGuest, &snp_report(hostdata, &nonce), &nonce).unwrap();
        assert_eq!(field, Field::SnpHostData);
        assert!(init.matches(field, &value));
        // The host launched with other HOSTDATA (or delivered another document): no match.
        let (_, other) = report_field(Provider::SevGuest, &snp_report([0x11; 32], &nonce), &nonce).unwrap();
        assert!(!init.matches(Field::SnpHostData, &other));
        // A stale report (other report data) is not accepted as the answer.
        let err = report_field(Provider::SevGuest, &snp_report(hostdata, &[8u8; 64]), &nonce).unwrap_err();
        assert!(err.contains("report data"), "{err}");

        let state = tempfile::tempdir().unwrap();
        let mut mrconfigid = [0u8; 48];
        mrconfigid.copy_from_slice(&init.launch_value(Field::TdxMrConfigId));
        let tdx =
            TdxProvider::new(state.path(), TdxLaunch { mr_config_id: mrconfigid, ..TdxLaunch::default() }).unwrap();
        let (field, value) =
            report_field(Provider::TdxGuest, &tdx.generate(&nonce, 0).unwrap().outblob, &nonce).unwrap();
        assert_eq!(field, Field::TdxMrConfigId);
        assert!(init.matches(field, &value));
        assert!(report_field(Provider::TdxGuest, b"garbage", &nonce).is_err());
    }

    #[test]
    fn only_configfs_or_tsm_sim_may_answer() {
        let info = "22 1 0:20 / /sys/kernel/config rw - configfs configfs rw\n\
                    30 1 0:30 / /run/tsm-sim rw - fuse tsm-sim rw\n\
                    32 1 0:32 / /run/other rw - fuse sshfs rw\n\
                    31 1 0:31 / /run/kata-containers/shared rw - virtiofs kataShared rw\n\
                    1 0 8:1 / / rw - ext4 /dev/vda rw\n";
        assert!(tsm_filesystem_ok(info, Path::new("/sys/kernel/config/tsm")).is_ok());
        assert!(tsm_filesystem_ok(info, Path::new("/run/tsm-sim")).is_ok());
        // The host points PODMESH_TSM_ROOT at a directory it serves: refused.
        let e = tsm_filesystem_ok(info, Path::new("/run/kata-containers/shared/fake-tsm")).unwrap_err();
        assert!(e.contains("virtiofs"), "{e}");
        assert!(tsm_filesystem_ok(info, Path::new("/tmp/fake")).unwrap_err().contains("ext4"));
        assert!(tsm_filesystem_ok(info, Path::new("/run/other/tsm")).is_err(), "another FUSE file system");
    }

    #[test]
    fn locate_prefers_explicit_then_cmdline() {
        let cmdline = vec![(CMDLINE_KEY.to_owned(), "/from/cmdline".to_owned())];
        assert_eq!(locate(Some(Path::new("/explicit")), &cmdline), Some(PathBuf::from("/explicit")));
        assert_eq!(locate(None, &cmdline), Some(PathBuf::from("/from/cmdline")));
    }

    #[test]
    fn unreadable_and_invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        assert!(matches!(read(&missing), Err(InitdataCheckError::Read { .. })));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, b"version = \"0.1.0\"\nalgorithm = \"sha1\"\n[data]\n").unwrap();
        let e = read(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("sha1"), "{e}");
        let huge = dir.path().join("huge.toml");
        std::fs::write(&huge, vec![b'#'; initdata::MAX_INITDATA_BYTES * 2]).unwrap();
        assert!(matches!(read(&huge), Err(InitdataCheckError::Invalid { source: InitdataError::TooLarge { .. }, .. })));
        // No configfs-tsm: initdata present but no report → refused, never "unverified but used".
        std::fs::write(&bad, DOC).unwrap();
        let e = verify(&bad, &TsmClient::new(dir.path().join("no-tsm")), None).unwrap_err();
        assert!(matches!(e, InitdataCheckError::NoReport { .. }), "{e}");
    }
}
