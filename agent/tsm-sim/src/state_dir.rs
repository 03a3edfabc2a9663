//! Creating a simulated PKI's state directory (AMD chain, Intel TDX PKI): built in a
//! private temp directory beside it and renamed into place, so a crash never leaves half a
//! PKI and concurrent starters never mix keys of two PKIs. Private keys are 0400 files.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file operation on the state directory failed; the owning module's error wraps it.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct StateIoError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Maps an I/O error of `action` on `path` (for `map_err`).
pub fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateIoError {
    let path = path.to_path_buf();
    move |source| StateIoError { action, path, source }
}

/// Writes a private key: a new file, mode 0400.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), StateIoError> {
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(path).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))
}

/// Creates `dir` by letting `build` fill a fresh temp directory beside it, then renaming
/// that into place. `complete` is the file whose presence marks a finished directory: a
/// `dir` without it is a leftover of an interrupted (pre-atomic) creation, never used, and
/// is replaced; when another process published `dir` first, theirs is kept and ours removed.
pub fn create_atomically<E: From<StateIoError>>(
    dir: &Path,
    complete: &str,
    build: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err("create state directory", parent))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{}",
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err("create directory", &tmp))?;
    build(&tmp)?;
    if dir.exists() && !dir.join(complete).exists() {
        let _ = fs::remove_dir_all(dir);
    }
    match fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.join(complete).exists() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(source) => Err(StateIoError { action: "move into place", path: dir.to_path_buf(), source }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leftover_without_the_marker_is_replaced_and_keys_are_0400() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("half-written.key"), b"junk").unwrap();
        create_atomically(&dir, "done", |t: &Path| -> Result<(), StateIoError> {
            write_secret(&t.join("k.key"), b"key")?;
            fs::write(t.join("done"), b"").map_err(io_err("write", t))
        })
        .unwrap();
        assert!(dir.join("done").exists() && !dir.join("half-written.key").exists());
        assert_eq!(fs::metadata(dir.join("k.key")).unwrap().permissions().mode() & 0o777, 0o400);
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["pki"], "no temp directory left beside it");
    }
}
