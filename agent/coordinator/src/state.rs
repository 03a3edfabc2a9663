//! The coordinator's state directory, written atomically (temp file, fsync, rename, fsync dir).
//!
//! Crash safety (power loss as well as `kill -9`): every file and every directory entry of a
//! generation is on disk (file fsync, then fsync of the directory that names it, including
//! `generations/` for a new generation's directory) before `current` flips; `current` itself
//! (file and directory) is on disk before the superseded key is deleted. So after any crash
//! `current` names a complete generation: the last one acknowledged, or the next one when the
//! crash came after the flip but before the answer. What a crash leaves (the superseded key
//! of a crash between flip and delete, a half-written next generation) is removed at the next
//! start.
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
    #[error("state dir: {path}: {source} (start once with --manifest FILE --apply-manifest to make a valid manifest the next generation)")]
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
    sync_dir(dir)
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))
}

fn read_text(path: &Path) -> Result<String, StateError> {
    fs::read_to_string(path).map_err(io("read", path))
}

impl StateDir {
    /// Opens (creating with 0700 if needed) and locks the state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        use nix::fcntl::{Flock, FlockArg};
        let generations = dir.join("generations");
        if !generations.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&generations).map_err(io("create", dir))?;
            sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
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

    /// Loads the root (creating it on first start) and the current generation. `first` becomes
    /// generation 1 of an empty directory and is otherwise ignored: whether a different manifest
    /// may replace the persisted one is the caller's decision ([`StateDir::commit`]), except that a
    /// persisted manifest which no longer validates (an older, permissive schema) is replaced by
    /// `first` when `replace_invalid` (the owner's explicit `--apply-manifest`), and refused otherwise.
    pub fn load_or_init(&self, first: Option<&Manifest>, replace_invalid: bool) -> Result<State, StateError> {
        let root = self.load_or_create_root()?;
        let current = self.dir.join("current");
        if !current.exists() {
            let manifest = first.ok_or_else(|| StateError::NoManifest(self.dir.clone()))?.clone();
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
        let persisted = match Manifest::from_json(read_text(&manifest_path)?.as_bytes()) {
            Ok(persisted) => persisted,
            Err(source) => match first.filter(|_| replace_invalid) {
                Some(new) => {
                    tracing::warn!(PODMESH_EVENT = "coordinator_persisted_manifest_invalid", path = %manifest_path.display(), error = %source, "the persisted manifest of generation {generation} no longer validates; --apply-manifest makes the given one the next generation");
                    self.remove_leftovers(generation)?;
                    let (generation, mesh) = self.commit(&root, new, generation)?;
                    return Ok(State { root, generation, mesh, manifest: new.clone() });
                }
                None => return Err(StateError::Manifest { path: manifest_path, source }),
            },
        };
        let mesh = MeshCa::from_pem(
            &read_text(&gdir.join("mesh-ca.key"))?,
            &read_text(&gdir.join("intermediate-ca.pem"))?,
            &read_text(&gdir.join("mesh-ca.pem"))?,
            &root,
        )
        .map_err(|source| StateError::Ca { path: gdir.clone(), source })?;
        self.remove_leftovers(generation)?;
        Ok(State { root, generation, mesh, manifest: persisted })
    }

    /// Deletes what an interrupted update left: the mesh CA key of every generation before
    /// `current` (crash between the flip and the delete), and every generation after it (crash
    /// before the flip: never live, but it holds a private key).
    fn remove_leftovers(&self, current: u64) -> Result<(), StateError> {
        let generations = self.dir.join("generations");
        let mut removed_dirs = false;
        for entry in fs::read_dir(&generations).map_err(io("list", &generations))? {
            let entry = entry.map_err(io("list", &generations))?;
            let Some(n) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else { continue };
            let path = entry.path();
            let key = path.join("mesh-ca.key");
            if n > current {
                fs::remove_dir_all(&path).map_err(io("remove abandoned generation", &path))?;
                removed_dirs = true;
                tracing::warn!(PODMESH_EVENT = "coordinator_abandoned_generation_removed", path = %path.display(), generation = n, current, "removed generation {n}, written by an update that was interrupted before it went live");
            } else if n < current && key.exists() {
                fs::remove_file(&key).map_err(io("remove superseded key", &key))?;
                sync_dir(&path)?;
                tracing::warn!(PODMESH_EVENT = "coordinator_superseded_key_removed", path = %key.display(), generation = n, current, "removed the mesh CA key of superseded generation {n}, left by an interrupted update");
            }
        }
        if removed_dirs {
            sync_dir(&generations)?;
        }
        Ok(())
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
        let generations = self.dir.join("generations");
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
        // The new directory's own entry, before anything points at it.
        sync_dir(&generations)?;
        write_atomic(&self.dir.join("current"), format!("{generation}\n").as_bytes(), 0o644)?;
        if previous > 0 {
            let old_dir = self.generation_dir(previous);
            let old_key = old_dir.join("mesh-ca.key");
            match fs::remove_file(&old_key)
                .map_err(io("remove superseded key", &old_key))
                .and_then(|()| sync_dir(&old_dir))
            {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(PODMESH_EVENT = "coordinator_old_key_kept", error = %e, "could not remove the superseded mesh CA key (retried at the next start): {e}");
                }
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
