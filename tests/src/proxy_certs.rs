//! Test certificates for the proxy tests, from the real `pki` CA hierarchy
//! (root → intermediate, mesh CA self-signed with the intermediate's key and name).
//!
//! - [`TestMesh::new`]: a fresh root + mesh CA.
//! - [`TestMesh::issue`]: a mesh certificate (chain = leaf + intermediate) and its key.
//! - [`Identity::write_tls_dir`]: `mesh-ca.pem`, `certChain.pem`, `key.pem` (0400), each
//!   replaced by atomic rename like the attestation daemon does.

use anyhow::{Context, Result};
use pki::{LeafRequest, MeshCa, PublicKeyInput, RootCa, SubjectAltNames};
use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

/// A root CA and the mesh CA under it.
pub struct TestMesh {
    pub root: RootCa,
    pub mesh: MeshCa,
}

/// One workload's TLS material, as PEM.
#[derive(Clone)]
pub struct Identity {
    pub mesh_ca_pem: String,
    /// Leaf followed by the intermediate.
    pub chain_pem: String,
    pub key_pem: String,
}

impl TestMesh {
    pub fn new() -> Result<Self> {
        let root = RootCa::generate().context("generating the test root CA")?;
        let mesh = MeshCa::generate(&root).context("generating the test mesh CA")?;
        Ok(Self { root, mesh })
    }

    /// A mesh certificate named `cn` with the given SANs (DNS names or IP addresses).
    pub fn issue(&self, cn: &str, sans: &[&str], lifetime: Duration) -> Result<Identity> {
        let key = pki::leaf::new_workload_key().context("generating a workload key")?;
        let public_key = PublicKeyInput::SpkiDer(pki::leaf::spki_of(&key));
        let sans = SubjectAltNames::parse(sans).context("parsing SANs")?;
        let issued = self
            .mesh
            .issue(&LeafRequest { public_key: &public_key, common_name: cn, sans: &sans, lifetime, claims: None })
            .context("issuing a mesh certificate")?;
        Ok(Identity {
            mesh_ca_pem: self.mesh.mesh_ca_pem().to_string(),
            chain_pem: issued.chain_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

impl Identity {
    /// Writes the three files into `dir` (created if needed), each by atomic rename.
    pub fn write_tls_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join("mesh-ca.pem"), &self.mesh_ca_pem, 0o444)?;
        write_atomic(&dir.join("certChain.pem"), &self.chain_pem, 0o444)?;
        write_atomic(&dir.join("key.pem"), &self.key_pem, 0o400)?;
        Ok(())
    }
}

/// Writes `contents` to a temporary file beside `path` and renames it into place.
pub fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}
