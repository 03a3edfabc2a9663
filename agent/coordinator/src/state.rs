//! The coordinator's state directory, written atomically (temp file, fsync, rename, fsync dir).
//!
//! ```text
//! STATE/root-ca.key            0400  root CA private key (PKCS#8 PEM), never changes
//! STATE/root-ca.pem                  root CA certificate
//! STATE/generations/N/manifest.json  manifest of generation N (kept as history)
//! STATE/generations/N/intermediate-ca.pem, mesh-ca.pem
//! STATE/generations/N/mesh-ca.key  0400  intermediate/mesh key; removed when N is superseded
//! STATE/current                      the live generation number (flipped last, atomically)
//! STATE/lock                         flock held by the coordinator that owns the directory
//! ```

use crate::manifest::{Manifest, ManifestError};
use pki::{CaError, MeshCa, RootCa};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state dir: {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("state dir: {path}: {source}")]
    Ca { path: PathBuf, source: CaError },
    #[error("state dir: {path}: {source} (pass --manifest FILE with a valid manifest to replace it)")]
    Manifest { path: PathBuf, source: ManifestError },
    #[error("state dir: {path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("state dir {0} has no manifest yet: pass --manifest FILE")]
    NoManifest(PathBuf),
    #[error(
        "state dir {0} is in use by another coordinator (its lock file is held); one state dir serves one coordinator"
    )]
    InUse(PathBuf),
}

/// What is live: the root, the current generation's mesh CA and manifest.
pub struct State {
    pub root: RootCa,
    pub generation: u64,
    pub mesh: MeshCa,
    pub manifest: Manifest,
}

pub struct StateDir {
    dir: PathBuf,
    /// Held for our lifetime: two coordinators writing one directory would fork the CA.
    _lock: nix::fcntl::Flock<fs::File>,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { action, path, source }
}

/// Writes `data` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io("create", &tmp))?;
    file.write_all(data).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))?;
    Ok(())
}

fn read_text(path: &Path) -> Result<String, StateError> {
    fs::read_to_string(path).map_err(io("read", path))
}

impl StateDir {
    /// Opens (creating with 0700 if needed) and locks the state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        use nix::fcntl::{Flock, FlockArg};
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join("generations")).map_err(io("create", dir))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => StateError::InUse(dir.to_path_buf()),
            e => StateError::Io { action: "lock", path: path.clone(), source: e.into() },
        })?;
        Ok(Self { dir: dir.to_path_buf(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn generation_dir(&self, generation: u64) -> PathBuf {
        self.dir.join("generations").join(generation.to_string())
    }

    /// Loads the root (creating it on first start) and the current generation. When `manifest`
    /// differs from the persisted one it becomes a new generation (rotating the mesh CA); when it
    /// is equal, or absent, the persisted mesh CA stays.
    pub fn load_or_init(&self, manifest: Option<Manifest>) -> Result<State, StateError> {
        let root = self.load_or_create_root()?;
        let current = self.dir.join("current");
        if !current.exists() {
            let manifest = manifest.ok_or_else(|| StateError::NoManifest(self.dir.clone()))?;
            let (generation, mesh) = self.commit(&root, &manifest, 0)?;
            return Ok(State { root, generation, mesh, manifest });
        }
        let text = read_text(&current)?;
        let generation: u64 = text.trim().parse().map_err(|_| StateError::Corrupt {
            path: current.clone(),
            why: format!("{:?} is not a generation number", text.trim()),
        })?;
        let gdir = self.generation_dir(generation);
        let manifest_path = gdir.join("manifest.json");
        let persisted = Manifest::from_json(read_text(&manifest_path)?.as_bytes())
            .map_err(|source| StateError::Manifest { path: manifest_path.clone(), source });
        let mesh = MeshCa::from_pem(
            &read_text(&gdir.join("mesh-ca.key"))?,
            &read_text(&gdir.join("intermediate-ca.pem"))?,
            &read_text(&gdir.join("mesh-ca.pem"))?,
            &root,
        )
        .map_err(|source| StateError::Ca { path: gdir.clone(), source })?;
        match (manifest, persisted) {
            (Some(new), Ok(persisted)) if new.sha256 == persisted.sha256 => {
                Ok(State { root, generation, mesh, manifest: persisted })
            }
            (Some(new), persisted) => {
                // A persisted manifest of an older (non-strict) schema is replaced, not served.
                if let Err(e) = persisted {
                    tracing::warn!(PODMESH_EVENT = "coordinator_persisted_manifest_invalid", error = %e, "the persisted manifest no longer validates; --manifest replaces it");
                }
                let (generation, mesh) = self.commit(&root, &new, generation)?;
                Ok(State { root, generation, mesh, manifest: new })
            }
            (None, persisted) => Ok(State { root, generation, mesh, manifest: persisted? }),
        }
    }

    fn load_or_create_root(&self) -> Result<RootCa, StateError> {
        let key_path = self.dir.join("root-ca.key");
        let cert_path = self.dir.join("root-ca.pem");
        if key_path.exists() {
            return RootCa::from_pem(&read_text(&key_path)?, &read_text(&cert_path)?)
                .map_err(|source| StateError::Ca { path: key_path, source });
        }
        let root = RootCa::generate().map_err(|source| StateError::Ca { path: key_path.clone(), source })?;
        // Certificate first: a key without certificate would be useless, the reverse is detected.
        write_atomic(&cert_path, root.cert_pem().as_bytes(), 0o644)?;
        write_atomic(&key_path, root.key_pem().as_bytes(), 0o400)?;
        tracing::info!(PODMESH_EVENT = "coordinator_root_created", path = %cert_path.display(), "created a new root CA");
        Ok(root)
    }

    /// Persists `manifest` as generation `previous + 1` with a fresh mesh CA, then flips `current`.
    pub fn commit(&self, root: &RootCa, manifest: &Manifest, previous: u64) -> Result<(u64, MeshCa), StateError> {
        let generation = previous + 1;
        let gdir = self.generation_dir(generation);
        // A leftover from a crash between mkdir and the flip of `current` is simply replaced.
        if gdir.exists() {
            fs::remove_dir_all(&gdir).map_err(io("remove stale", &gdir))?;
        }
        fs::DirBuilder::new().mode(0o700).create(&gdir).map_err(io("create", &gdir))?;
        let mesh = MeshCa::generate(root).map_err(|source| StateError::Ca { path: gdir.clone(), source })?;
        write_atomic(&gdir.join("manifest.json"), manifest.canonical_json.as_bytes(), 0o644)?;
        write_atomic(&gdir.join("intermediate-ca.pem"), mesh.intermediate_pem().as_bytes(), 0o644)?;
        write_atomic(&gdir.join("mesh-ca.pem"), mesh.mesh_ca_pem().as_bytes(), 0o644)?;
        write_atomic(&gdir.join("mesh-ca.key"), mesh.key_pem().as_bytes(), 0o400)?;
        write_atomic(&self.dir.join("current"), format!("{generation}\n").as_bytes(), 0o644)?;
        if previous > 0 {
            let old_key = self.generation_dir(previous).join("mesh-ca.key");
            if let Err(e) = fs::remove_file(&old_key) {
                tracing::warn!(PODMESH_EVENT = "coordinator_old_key_kept", path = %old_key.display(), error = %e, "could not remove the superseded mesh CA key");
            }
        }
        tracing::info!(PODMESH_EVENT = "coordinator_mesh_ca_rotated", generation, manifest_sha256 = %manifest.sha256, "new manifest generation with a fresh mesh CA");
        Ok((generation, mesh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_state_dir_serves_one_coordinator() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateDir::open(tmp.path()).unwrap();
        let second = StateDir::open(tmp.path()).err().expect("a second coordinator must not open a held state dir");
        assert!(matches!(second, StateError::InUse(_)), "{second}");
        assert!(second.to_string().contains("in use by another coordinator"), "{second}");
        drop(first);
        StateDir::open(tmp.path()).expect("the lock goes with its owner");
    }
}
