//! `podmesh-coordinator initdata`: the host side of attested configuration. `digest` prints the
//! HOSTDATA / MRCONFIGID an initdata file launches with (the manifest's policy key); `contrast`
//! turns Contrast's mesh annotations into initdata on the pods (see [`coordinator::contrast`]).

use anyhow::{Context, Result};
use coordinator::contrast::{self, Options};
use initdata::{Algorithm, Field, Initdata};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the digest of an initdata file and the HOSTDATA (SNP) / MRCONFIGID (TDX) it launches with (JSON).
    Digest {
        /// Initdata TOML (or its base64, as the cloud-api-adaptor delivers it).
        file: PathBuf,
    },
    /// Read a Kubernetes manifest with Contrast's servicemesh annotations; write for each annotated
    /// workload its initdata document and the manifest with Kata's initdata annotation; print the
    /// HOSTDATA / MRCONFIGID values and manifest policy entries (JSON).
    Contrast(ContrastArgs),
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("trust").required(true).args(["root_ca", "root_fingerprint"]))]
pub struct ContrastArgs {
    /// The manifest (YAML, one or more documents).
    manifest: PathBuf,
    /// Output directory: manifest.yaml plus one <id>.initdata.toml per workload.
    #[arg(long)]
    out: PathBuf,
    /// Coordinator address the pods attest to (HOST:PORT), written as PODMESH_COORDINATOR.
    #[arg(long)]
    coordinator: String,
    /// The coordinator's root CA (PEM), written as the coordinator-root-ca.pem document.
    #[arg(long)]
    root_ca: Option<PathBuf>,
    /// SHA-256 (hex) of the coordinator's root CA DER, written as PODMESH_COORDINATOR_FINGERPRINT.
    #[arg(long)]
    root_fingerprint: Option<String>,
    /// Digest algorithm: sha256, sha384 or sha512 (default: the existing initdata's, else sha384).
    #[arg(long)]
    algorithm: Option<String>,
}

fn launch_values(init: &Initdata) -> serde_json::Value {
    json!({
        "algorithm": init.algorithm().as_str(),
        "digest": hex::encode(init.digest()),
        "host_data": hex::encode(init.launch_value(Field::SnpHostData)),
        "mrconfigid": hex::encode(init.launch_value(Field::TdxMrConfigId)),
    })
}

pub fn run(command: Command) -> Result<()> {
    let out = match command {
        Command::Digest { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let init = Initdata::parse(&bytes).with_context(|| format!("initdata {}", file.display()))?;
            launch_values(&init)
        }
        Command::Contrast(a) => contrast_cmd(a)?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn contrast_cmd(a: ContrastArgs) -> Result<serde_json::Value> {
    let manifest = std::fs::read_to_string(&a.manifest).with_context(|| format!("reading {}", a.manifest.display()))?;
    let root_ca_pem = a
        .root_ca
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading root CA {}", p.display())))
        .transpose()?;
    let algorithm = a.algorithm.as_deref().map(str::parse::<Algorithm>).transpose()?;
    let options = Options { coordinator: a.coordinator, root_ca_pem, root_fingerprint: a.root_fingerprint, algorithm };
    let rewritten =
        contrast::rewrite(&manifest, &options).with_context(|| format!("manifest {}", a.manifest.display()))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let manifest_out = a.out.join("manifest.yaml");
    std::fs::write(&manifest_out, &rewritten.manifest)
        .with_context(|| format!("writing {}", manifest_out.display()))?;
    let mut workloads = Vec::new();
    let mut policies = serde_json::Map::new();
    for w in &rewritten.workloads {
        let path = a.out.join(format!("{}.initdata.toml", w.id()));
        std::fs::write(&path, &w.initdata).with_context(|| format!("writing {}", path.display()))?;
        let mut entry = serde_json::to_value(w)?;
        entry["initdata_file"] = json!(path.display().to_string());
        workloads.push(entry);
        for key in [&w.host_data, &w.mrconfigid] {
            policies.insert(key.clone(), json!({ "name": w.name, "sans": [w.name] }));
        }
    }
    Ok(json!({
        "manifest": manifest_out.display().to_string(),
        "workloads": workloads,
        "manifest_policies": policies,
    }))
}
