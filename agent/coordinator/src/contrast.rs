//! Contrast's service-mesh annotations, made real: a host-side rewrite of Kubernetes manifests.
//!
//! Contrast configures its mesh with annotations on the workload
//! (`contrast.edgeless.systems/servicemesh-ingress`, `-egress`, `-admin-interface-port`), but
//! annotations live on the Kubernetes object and a podVM never sees them. [`rewrite`] turns them
//! into what the guest does see, bound to its attestation: a CoCo initdata document whose
//! `podmesh.env` carries the three settings and the coordinator's address and trust anchor, set
//! on the pod as `io.katacontainers.config.runtime.cc_init_data`. Kata's runtime decodes that
//! annotation (standard base64, then gzip; kata-containers `src/libs/kata-types/src/initdata.rs`,
//! `decode_raw_initdata`) and launches the VM with the document's digest as HOSTDATA / MRCONFIGID,
//! which the coordinator's manifest then keys on ([`Workload::host_data`]).
//!
//! Initdata the object already carries (CoCo's `aa.toml`, `cdh.toml`, `policy.rego`) is kept:
//! only `podmesh.env` and `coordinator-root-ca.pem` are (re)written, so the rewrite is idempotent.

use base64::Engine;
use initdata::{Algorithm, Field, Initdata};
use serde::Serialize;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};

pub const INGRESS: &str = "contrast.edgeless.systems/servicemesh-ingress";
pub const EGRESS: &str = "contrast.edgeless.systems/servicemesh-egress";
pub const ADMIN_PORT: &str = "contrast.edgeless.systems/servicemesh-admin-interface-port";
/// The pod annotation Kata reads initdata from.
pub const KATA_INITDATA: &str = "io.katacontainers.config.runtime.cc_init_data";

#[derive(Debug, thiserror::Error)]
pub enum ContrastError {
    #[error("manifest is not valid YAML: {0}")]
    Yaml(String),
    #[error("{object}: annotation {annotation} must be a string")]
    NotString { object: String, annotation: String },
    #[error("{object}: {annotation} and the pod template's {annotation} differ")]
    Conflict { object: String, annotation: &'static str },
    #[error("{object}: {reason}")]
    Config { object: String, reason: String },
    #[error("{object}: existing {KATA_INITDATA} annotation: {reason}")]
    ExistingInitdata { object: String, reason: String },
    #[error("{object}: {what} is not a mapping")]
    Shape { object: String, what: &'static str },
    #[error("coordinator trust: {0}")]
    Trust(String),
}

/// What every rewritten workload gets besides its own annotations.
#[derive(Debug, Clone)]
pub struct Options {
    /// `PODMESH_COORDINATOR` (HOST:PORT).
    pub coordinator: String,
    /// The coordinator's root CA (PEM), written as `coordinator-root-ca.pem`.
    pub root_ca_pem: Option<String>,
    /// `PODMESH_COORDINATOR_FINGERPRINT` (64 hex digits).
    pub root_fingerprint: Option<String>,
    /// The digest algorithm; `None` keeps an existing document's, else sha384.
    pub algorithm: Option<Algorithm>,
}

/// One rewritten workload.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The initdata document, exactly the bytes Kata digests.
    #[serde(skip)]
    pub initdata: String,
    pub algorithm: &'static str,
    /// SEV-SNP HOSTDATA (hex): the manifest policy key on SNP.
    pub host_data: String,
    /// TDX MRCONFIGID (hex): the manifest policy key on TDX.
    pub mrconfigid: String,
    /// Initdata documents kept from the object's existing annotation.
    pub kept_documents: Vec<String>,
}

impl Workload {
    /// A file-name-safe identifier: `[namespace.]kind-name`.
    pub fn id(&self) -> String {
        let raw = match &self.namespace {
            Some(ns) => format!("{ns}.{}-{}", self.kind.to_lowercase(), self.name),
            None => format!("{}-{}", self.kind.to_lowercase(), self.name),
        };
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '_' }).collect()
    }
}

/// The rewritten manifest (all documents, in order) and the workloads that got initdata.
#[derive(Debug)]
pub struct Rewritten {
    pub manifest: String,
    pub workloads: Vec<Workload>,
}

impl Options {
    fn validate(&self) -> Result<(), ContrastError> {
        if self.root_ca_pem.is_none() && self.root_fingerprint.is_none() {
            return Err(ContrastError::Trust(
                "pass the coordinator's root CA or its fingerprint: an attested pod does not trust on first use".into(),
            ));
        }
        if let Some(fp) = &self.root_fingerprint {
            if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ContrastError::Trust(format!("fingerprint {fp:?} is not 64 hex digits (SHA-256)")));
            }
        }
        if let Some(pem) = &self.root_ca_pem {
            if !pem.trim_start().starts_with("-----BEGIN CERTIFICATE-----") {
                return Err(ContrastError::Trust("root CA is not a PEM certificate".into()));
            }
        }
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == '"' || c == '\'';
        if self.coordinator.is_empty() || self.coordinator.contains(bad) {
            return Err(ContrastError::Trust(format!(
                "coordinator address {:?} is empty or has spaces/quotes",
                self.coordinator
            )));
        }
        Ok(())
    }
}

/// Rewrites every workload of a (multi-document) manifest that carries Contrast's annotations.
pub fn rewrite(manifest: &str, options: &Options) -> Result<Rewritten, ContrastError> {
    options.validate()?;
    let mut documents = Vec::new();
    let mut workloads = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let mut value =
            <Value as serde::Deserialize>::deserialize(doc).map_err(|e| ContrastError::Yaml(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        if let Some(w) = rewrite_object(&mut value, options)? {
            workloads.push(w);
        }
        documents.push(serde_yaml::to_string(&value).map_err(|e| ContrastError::Yaml(e.to_string()))?);
    }
    Ok(Rewritten { manifest: documents.join("---\n"), workloads })
}

/// The path from an object to its pod template's metadata, per kind (`None`: not a workload).
fn pod_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn annotation(obj: &Value, path: &[&str], key: &str, object: &str) -> Result<Option<String>, ContrastError> {
    let mut full = path.to_vec();
    full.extend(["metadata", "annotations", key]);
    match get(obj, &full) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ContrastError::NotString { object: object.to_owned(), annotation: key.to_owned() }),
    }
}

fn rewrite_object(obj: &mut Value, options: &Options) -> Result<Option<Workload>, ContrastError> {
    let Some(kind) = obj.get("kind").and_then(Value::as_str).map(str::to_owned) else { return Ok(None) };
    let Some(pod) = pod_path(&kind) else { return Ok(None) };
    let name = get(obj, &["metadata", "name"]).and_then(Value::as_str).unwrap_or("").to_owned();
    let namespace = get(obj, &["metadata", "namespace"]).and_then(Value::as_str).map(str::to_owned);
    let object = format!("{kind}/{name}");

    // Contrast's docs show the annotations on the object and on its pod template; either works,
    // and when both are set they must agree.
    let mut settings = Vec::new();
    for (key, var) in [
        (INGRESS, "CONTRAST_INGRESS_PROXY_CONFIG"),
        (EGRESS, "CONTRAST_EGRESS_PROXY_CONFIG"),
        (ADMIN_PORT, "CONTRAST_ADMIN_PORT"),
    ] {
        let on_object = annotation(obj, &[], key, &object)?;
        let on_pod = if pod.is_empty() { None } else { annotation(obj, pod, key, &object)? };
        let value = match (on_object, on_pod) {
            (Some(a), Some(b)) if a != b => return Err(ContrastError::Conflict { object, annotation: key }),
            (a, b) => b.or(a),
        };
        if let Some(v) = value {
            if v.contains(['\n', '\r']) {
                return Err(ContrastError::Config { object, reason: format!("{key} spans several lines") });
            }
            settings.push((var, v));
        }
    }
    if settings.is_empty() {
        return Ok(None);
    }
    settings.push(("PODMESH_COORDINATOR", options.coordinator.clone()));
    if let Some(fp) = &options.root_fingerprint {
        settings.push(("PODMESH_COORDINATOR_FINGERPRINT", fp.clone()));
    }
    let env: String = settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    check_env(&env).map_err(|reason| ContrastError::Config { object: object.clone(), reason })?;

    let existing = annotation(obj, pod, KATA_INITDATA, &object)?
        .map(|a| decode_annotation(&a))
        .transpose()
        .map_err(|reason| ContrastError::ExistingInitdata { object: object.clone(), reason })?;
    let algorithm = options.algorithm.or(existing.as_ref().map(Initdata::algorithm)).unwrap_or(Algorithm::Sha384);
    let mut docs: BTreeMap<String, String> = existing.map(|e| e.documents().clone()).unwrap_or_default();
    docs.remove(initdata::ROOT_CA_PEM);
    let kept_documents = docs.keys().filter(|k| k.as_str() != initdata::PODMESH_ENV).cloned().collect();
    docs.insert(initdata::PODMESH_ENV.to_owned(), env);
    if let Some(pem) = &options.root_ca_pem {
        docs.insert(initdata::ROOT_CA_PEM.to_owned(), pem.clone());
    }
    let text = initdata::build(algorithm, &docs);
    let parsed = Initdata::parse_toml(text.as_bytes())
        .map_err(|e| ContrastError::Config { object: object.clone(), reason: e.to_string() })?;

    let annotations = annotations_mut(obj, pod, &object)?;
    annotations.insert(Value::String(KATA_INITDATA.to_owned()), Value::String(encode_annotation(&text)));
    Ok(Some(Workload {
        kind,
        namespace,
        name,
        algorithm: algorithm.as_str(),
        host_data: hex::encode(parsed.launch_value(Field::SnpHostData)),
        mrconfigid: hex::encode(parsed.launch_value(Field::TdxMrConfigId)),
        initdata: text,
        kept_documents,
    }))
}

/// The guest's own parser on the generated env-file: what it would refuse at boot fails here.
fn check_env(env: &str) -> Result<(), String> {
    let sources = mesh::config::Sources {
        env_file: Some(mesh::config::Input { path: "podmesh.env".into(), text: env.to_owned() }),
        ..Default::default()
    };
    let resolved = sources.resolve().map_err(|e| e.to_string())?;
    mesh::config::parse(&resolved).map_err(|e| e.to_string())?;
    Ok(())
}

fn annotations_mut<'a>(obj: &'a mut Value, pod: &[&str], object: &str) -> Result<&'a mut Mapping, ContrastError> {
    let mut v = obj;
    for key in pod.iter().copied().chain(["metadata", "annotations"]) {
        let map = v
            .as_mapping_mut()
            .ok_or_else(|| ContrastError::Shape { object: object.to_owned(), what: "pod template" })?;
        let entry = map.entry(Value::String(key.to_owned())).or_insert(Value::Mapping(Mapping::new()));
        if entry.is_null() {
            *entry = Value::Mapping(Mapping::new());
        }
        v = entry;
    }
    v.as_mapping_mut().ok_or_else(|| ContrastError::Shape { object: object.to_owned(), what: "metadata.annotations" })
}

/// Kata's encoding of the annotation: gzip, then standard base64.
pub fn encode_annotation(document: &str) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(document.as_bytes());
    let compressed = gz.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(compressed)
}

/// Decodes the annotation as Kata does (whitespace ignored), bounded by the initdata size limit.
pub fn decode_annotation(value: &str) -> Result<Initdata, String> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let gz = base64::engine::general_purpose::STANDARD.decode(compact).map_err(|e| format!("not base64: {e}"))?;
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .take(initdata::MAX_INITDATA_BYTES as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("not gzip: {e}"))?;
    Initdata::parse_toml(&text).map_err(|e| e.to_string())
}
