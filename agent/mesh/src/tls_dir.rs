//! The tls dir contract between its writer (`podmesh attest`) and its readers (`podmesh proxy`,
//! `podmesh status`): the default location, the four Contrast-compatible file names, and
//! atomic replacement.
//!
//! Every file is written to a temporary name, fsynced, then renamed over the old one, and the
//! directory is fsynced last. `certChain.pem` is renamed last, so a reader that reloads when it
//! changes finds the matching key already in place.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where `podmesh attest` writes and `podmesh proxy` reads (a systemd RuntimeDirectory).
pub const DEFAULT_DIR: &str = "/run/podmesh/tls";

/// Trust anchor of the mesh.
pub const MESH_CA_FILE: &str = "mesh-ca.pem";
/// Our mesh certificate followed by the intermediate.
pub const CERT_CHAIN_FILE: &str = "certChain.pem";
/// The private key of the leaf (mode 0400).
pub const KEY_FILE: &str = "key.pem";
/// The coordinator's root CA (what a data owner verifies).
pub const ROOT_CA_FILE: &str = "coordinator-root-ca.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsDirError {
    #[error("creating tls dir {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("replacing {path}: {source}")]
    Rename { path: PathBuf, source: std::io::Error },
    #[error("syncing tls dir {path}: {source}")]
    SyncDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// Reads one file of the tls dir; the error names its path.
pub fn read(dir: &Path, name: &str) -> Result<Vec<u8>, TlsDirError> {
    let path = dir.join(name);
    fs::read(&path).map_err(|source| TlsDirError::Read { path, source })
}

/// The contents of one complete set of tls files.
pub struct TlsFiles<'a> {
    pub mesh_ca_pem: &'a [u8],
    pub cert_chain_pem: &'a [u8],
    pub key_pem: &'a [u8],
    pub root_ca_pem: &'a [u8],
}

/// Replace all four files. On error the old files are untouched (or, if the error hit
/// between two renames, the directory holds a mix that readers reject because the key does
/// not match the chain) and no temporary file is left behind.
pub fn write_atomically(dir: &Path, files: &TlsFiles<'_>) -> Result<(), TlsDirError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsDirError::CreateDir { path: dir.to_owned(), source })?;
    // Order matters: the chain goes last (see module docs).
    let plan: [(&str, &[u8], u32); 4] = [
        (MESH_CA_FILE, files.mesh_ca_pem, 0o444),
        (ROOT_CA_FILE, files.root_ca_pem, 0o444),
        (KEY_FILE, files.key_pem, 0o400),
        (CERT_CHAIN_FILE, files.cert_chain_pem, 0o444),
    ];
    let mut temps: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(plan.len());
    let result = (|| {
        for (name, bytes, mode) in plan {
            let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
            temps.push((tmp.clone(), dir.join(name)));
            write_synced(&tmp, bytes, mode)?;
        }
        for (tmp, path) in &temps {
            fs::rename(tmp, path).map_err(|source| TlsDirError::Rename { path: path.clone(), source })?;
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| TlsDirError::SyncDir { path: dir.to_owned(), source })
    })();
    if result.is_err() {
        for (tmp, _) in &temps {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsDirError> {
    let err = |source| TlsDirError::Write { path: path.to_owned(), source };
    // A stale temp from a crashed run would make create_new fail; it is ours to remove.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn files<'a>(tag: &'a [u8]) -> TlsFiles<'a> {
        TlsFiles { mesh_ca_pem: tag, cert_chain_pem: tag, key_pem: tag, root_ca_pem: tag }
    }

    #[test]
    fn writes_all_files_with_modes_and_replaces_them() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run/podmesh/tls");
        write_atomically(&dir, &files(b"one")).unwrap();
        write_atomically(&dir, &files(b"two")).unwrap();
        for name in [MESH_CA_FILE, CERT_CHAIN_FILE, KEY_FILE, ROOT_CA_FILE] {
            assert_eq!(fs::read(dir.join(name)).unwrap(), b"two");
        }
        let mode = |n| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o400);
        assert_eq!(mode(CERT_CHAIN_FILE), 0o444);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 4, "temporary files left behind: {names:?}");
    }

    #[test]
    fn stale_temporaries_are_replaced() {
        let d = tempfile::tempdir().unwrap();
        let stale = d.path().join(format!(".{KEY_FILE}.tmp{}", std::process::id()));
        fs::write(&stale, b"stale").unwrap();
        write_atomically(d.path(), &files(b"new")).unwrap();
        assert!(!stale.exists());
        assert_eq!(fs::read(d.path().join(KEY_FILE)).unwrap(), b"new");
    }

    #[test]
    fn failure_keeps_the_old_files_and_leaves_no_temporaries() {
        let d = tempfile::tempdir().unwrap();
        write_atomically(d.path(), &files(b"old")).unwrap();
        // A directory where the chain should go: the final rename fails.
        fs::remove_file(d.path().join(CERT_CHAIN_FILE)).unwrap();
        fs::create_dir(d.path().join(CERT_CHAIN_FILE)).unwrap();
        fs::write(d.path().join(CERT_CHAIN_FILE).join("x"), b"x").unwrap();
        let err = write_atomically(d.path(), &files(b"new")).unwrap_err();
        assert!(err.to_string().contains(CERT_CHAIN_FILE), "{err}");
        let leftovers: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn unwritable_location_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("plainfile");
        fs::write(&file, b"").unwrap();
        let err = write_atomically(&file.join("tls"), &files(b"x")).unwrap_err();
        assert!(err.to_string().starts_with("creating tls dir"), "{err}");
    }
}
