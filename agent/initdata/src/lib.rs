//! Confidential Containers *initdata*: the configuration document a podVM may use only because its
//! digest is in the TEE report (SEV-SNP HOSTDATA, TDX MRCONFIGID).
//!
//! # Format
//!
//! TOML (trustee `kbs/docs/initdata.md`): `version = "0.1.0"`, `algorithm` (`sha256`, `sha384`
//! or `sha512`) and a `[data]` table of named documents, each a string. podmesh reads two of them
//! ([`PODMESH_ENV`], [`ROOT_CA_PEM`]); the others (CoCo's `aa.toml`, `cdh.toml`, `policy.rego`)
//! are kept but not interpreted.
//!
//! # Digest
//!
//! As Kata's runtime computes it when it launches the VM (kata-containers
//! `src/libs/kata-types/src/initdata.rs`, `calculate_initdata_digest` / `adjust_digest`):
//! `algorithm` over the document's bytes exactly as delivered, then truncated, or zero-padded,
//! to the report field: 32 bytes for SNP HOSTDATA, 48 for TDX MRCONFIGID ([`Field`]). So with
//! `sha384` HOSTDATA is the first half of the digest, and with `sha256` MRCONFIGID ends in 16
//! zero bytes.
//!
//! # Where the guest finds it ([`DEFAULT_PATHS`])
//!
//! - kata-agent (`src/agent/src/initdata.rs`) unpacks the initdata block device and writes the
//!   document unchanged to `/run/confidential-containers/initdata/initdata.toml`;
//! - the cloud-api-adaptor's `process-user-data` (`src/cloud-api-adaptor/pkg/userdata/provision.go`)
//!   writes the user-data's initdata as standard base64 to `/run/peerpod/initdata` and digests the
//!   decoded bytes. [`Initdata::parse`] accepts both forms: a valid document always contains
//!   `[` or `{` (the data table), which base64 never does, so the two cannot be confused.
//!
//! The delivery channel is untrusted: only the comparison with the report makes a document count.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::collections::BTreeMap;

/// Where Kata's agent and the cloud-api-adaptor leave initdata in the guest, in lookup order.
pub const DEFAULT_PATHS: [&str; 2] = ["/run/confidential-containers/initdata/initdata.toml", "/run/peerpod/initdata"];
/// The document with podmesh's settings, in env-file syntax.
pub const PODMESH_ENV: &str = "podmesh.env";
/// The optional document with the coordinator's root CA (PEM).
pub const ROOT_CA_PEM: &str = "coordinator-root-ca.pem";
/// The only initdata version there is (Kata's runtime and agent refuse every other).
pub const VERSION: &str = "0.1.0";
/// Largest initdata accepted (as delivered, base64 included). CoCo's generated `policy.rego`
/// is the bulk of a real document and stays well below this.
pub const MAX_INITDATA_BYTES: usize = 1024 * 1024;
/// Largest podmesh document ([`PODMESH_ENV`], [`ROOT_CA_PEM`]).
pub const MAX_PODMESH_DOCUMENT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitdataError {
    #[error("initdata is {size} bytes, more than the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("initdata looks base64-encoded but does not decode: {0}")]
    Base64(String),
    #[error("initdata is not UTF-8")]
    NotUtf8,
    #[error("initdata is not valid TOML: {0}")]
    Toml(String),
    #[error("initdata has no `{0}`")]
    Missing(&'static str),
    #[error("initdata algorithm {0:?} is not supported (sha256, sha384 or sha512)")]
    Algorithm(String),
    #[error("initdata version {0:?} is not supported (only {VERSION})")]
    Version(String),
    #[error("initdata document {name:?} is {size} bytes, more than the {max}-byte limit")]
    DocumentTooLarge { name: String, size: usize, max: usize },
}

/// The digest algorithm named in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    pub fn digest(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Sha256 => Sha256::digest(bytes).to_vec(),
            Algorithm::Sha384 => Sha384::digest(bytes).to_vec(),
            Algorithm::Sha512 => Sha512::digest(bytes).to_vec(),
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = InitdataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha384" => Ok(Algorithm::Sha384),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(InitdataError::Algorithm(other.chars().take(40).collect())),
        }
    }
}

/// The report field that carries the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// SEV-SNP HOST_DATA, 32 bytes.
    SnpHostData,
    /// TDX MRCONFIGID, 48 bytes.
    TdxMrConfigId,
}

impl Field {
    pub fn size(self) -> usize {
        match self {
            Field::SnpHostData => 32,
            Field::TdxMrConfigId => 48,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Field::SnpHostData => "HOSTDATA",
            Field::TdxMrConfigId => "MRCONFIGID",
        }
    }
}

/// A parsed initdata document with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initdata {
    algorithm: Algorithm,
    documents: BTreeMap<String, String>,
    digest: Vec<u8>,
}

/// The document's shape; every field optional so each absence gets its own error.
#[derive(serde::Deserialize)]
struct Raw {
    version: Option<String>,
    algorithm: Option<String>,
    data: Option<BTreeMap<String, String>>,
}

impl Initdata {
    /// Parses initdata as delivered (TOML, or the cloud-api-adaptor's base64 of it) and digests it.
    pub fn parse(delivered: &[u8]) -> Result<Self, InitdataError> {
        // Base64 (wrapped or not) is at most 3/2 of the document.
        if delivered.len() > MAX_INITDATA_BYTES * 3 / 2 {
            return Err(InitdataError::TooLarge { size: delivered.len(), max: MAX_INITDATA_BYTES });
        }
        let looks_base64 = !delivered.is_empty()
            && delivered.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r'));
        if looks_base64 {
            use base64::Engine;
            let compact: Vec<u8> = delivered.iter().copied().filter(|b| !matches!(b, b'\n' | b'\r')).collect();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| InitdataError::Base64(e.to_string()))?;
            return Self::parse_toml(&decoded);
        }
        Self::parse_toml(delivered)
    }

    /// Parses the TOML document itself (no transport encoding); the digest is over `bytes`.
    pub fn parse_toml(bytes: &[u8]) -> Result<Self, InitdataError> {
        if bytes.len() > MAX_INITDATA_BYTES {
            return Err(InitdataError::TooLarge { size: bytes.len(), max: MAX_INITDATA_BYTES });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| InitdataError::NotUtf8)?;
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| format!(" (at byte {})", s.start)).unwrap_or_default();
            InitdataError::Toml(format!("{}{at}", e.message().trim().replace('\n', " ")))
        })?;
        let version = raw.version.ok_or(InitdataError::Missing("version"))?;
        if version != VERSION {
            return Err(InitdataError::Version(version.chars().take(40).collect()));
        }
        let algorithm: Algorithm = raw.algorithm.ok_or(InitdataError::Missing("algorithm"))?.parse()?;
        let documents = raw.data.ok_or(InitdataError::Missing("[data]"))?;
        for name in [PODMESH_ENV, ROOT_CA_PEM] {
            if let Some(doc) = documents.get(name) {
                if doc.len() > MAX_PODMESH_DOCUMENT_BYTES {
                    return Err(InitdataError::DocumentTooLarge {
                        name: name.to_owned(),
                        size: doc.len(),
                        max: MAX_PODMESH_DOCUMENT_BYTES,
                    });
                }
            }
        }
        Ok(Self { algorithm, documents, digest: algorithm.digest(bytes) })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The full digest (32, 48 or 64 bytes).
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// The value the report field must hold: the digest truncated or zero-padded to `field`.
    pub fn launch_value(&self, field: Field) -> Vec<u8> {
        let mut value = self.digest.clone();
        value.resize(field.size(), 0);
        value
    }

    /// Whether `reported` (the report's HOSTDATA / MRCONFIGID) is this document's launch value.
    pub fn matches(&self, field: Field, reported: &[u8]) -> bool {
        reported == self.launch_value(field).as_slice()
    }

    pub fn documents(&self) -> &BTreeMap<String, String> {
        &self.documents
    }

    /// [`PODMESH_ENV`], if present.
    pub fn podmesh_env(&self) -> Option<&str> {
        self.documents.get(PODMESH_ENV).map(String::as_str)
    }

    /// [`ROOT_CA_PEM`], if present.
    pub fn root_ca_pem(&self) -> Option<&str> {
        self.documents.get(ROOT_CA_PEM).map(String::as_str)
    }
}

/// Writes an initdata document (host side). The output is deterministic (documents in name
/// order, each a multi-line basic string), and [`Initdata::parse_toml`] returns the same
/// documents from it.
pub fn build(algorithm: Algorithm, documents: &BTreeMap<String, String>) -> String {
    let mut out = format!("version = \"{VERSION}\"\nalgorithm = \"{}\"\n\n[data]\n", algorithm.as_str());
    for (name, content) in documents {
        out.push('"');
        escape_into(&mut out, name, true);
        out.push_str("\" = \"\"\"\n");
        escape_into(&mut out, content, false);
        out.push_str("\"\"\"\n");
    }
    out
}

/// TOML basic-string escaping. Every `"` is escaped, so `"""` never ends a string early; in a
/// multi-line string (`single_line` false) newlines and tabs stay literal for readability.
fn escape_into(out: &mut String, s: &str, single_line: bool) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' if !single_line => out.push('\n'),
            '\t' => out.push('\t'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
