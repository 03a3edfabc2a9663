//! The benchmark's one certificate set, issued by the coordinator's own PKI code
//! (`pki`): root CA -> intermediate CA -> mesh certificates, and the mesh CA that is
//! self-signed with the intermediate's key and name. Every proxy under test uses it.

use anyhow::Context;
use pki::{LeafRequest, MeshCa, PublicKeyInput, RootCa, SubjectAltNames};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn write_file(path: &Path, data: &str, mode: u32) -> anyhow::Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

pub fn write(out: &Path, server_san: &[String], client_san: &[String]) -> anyhow::Result<()> {
    let root = RootCa::generate().context("cannot generate the root CA")?;
    let mesh = MeshCa::generate(&root).context("cannot generate the intermediate/mesh CA")?;
    for (name, sans) in [("server", server_san), ("client", client_san)] {
        let dir = out.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let key = pki::leaf::new_workload_key().context("cannot generate a workload key")?;
        let sans = SubjectAltNames::parse(sans).with_context(|| format!("invalid {name} SANs"))?;
        let issued = mesh
            .issue(&LeafRequest {
                public_key: &PublicKeyInput::SpkiDer(pki::leaf::spki_of(&key)),
                common_name: name,
                sans: &sans,
                lifetime: Duration::from_secs(24 * 3600),
                claims: None,
            })
            .with_context(|| format!("cannot issue the {name} mesh certificate"))?;
        let key_pem = key.serialize_pem();
        write_file(&dir.join("mesh-ca.pem"), mesh.mesh_ca_pem(), 0o644)?;
        write_file(&dir.join("coordinator-root-ca.pem"), root.cert_pem(), 0o644)?;
        write_file(&dir.join("certChain.pem"), &issued.chain_pem, 0o644)?;
        write_file(&dir.join("key.pem"), &key_pem, 0o400)?;
        // haproxy wants chain and key in one file: the same material, concatenated.
        write_file(&dir.join("haproxy.pem"), &format!("{}{key_pem}", issued.chain_pem), 0o400)?;
    }
    Ok(())
}
