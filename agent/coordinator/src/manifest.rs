//! The manifest: reference values per platform, policy entries keyed by host data, and the
//! simulated-TEE opt-in. Parsed from JSON and validated into a [`Manifest`] that the issue
//! path uses directly (so nothing is re-parsed per request).
//!
//! ```json
//! {
//!   "reference_values": {
//!     "snp": { "products": ["Milan", "Genoa"], "measurements": ["<96 hex>"],
//!              "guest_policy": "0x30000", "minimum_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
//!              "max_vmpl": 0, "allow_debug": false },
//!     "tdx": { "mrtds": ["<96 hex>"], "rtmrs": [null, null, "<96 hex>", null],
//!              "attributes": "0000001000000000", "xfam": "e702060000000000",
//!              "minimum_tcb_status": "UpToDate", "allow_debug": false }
//!   },
//!   "policies": { "<HOSTDATA 64 hex | MRCONFIGID 96 hex>": { "name": "web", "sans": ["web", "10.0.0.7"] } },
//!   "allow_simulated_tee": false,
//!   "mesh_name": "prod.example"
//! }
//! ```
//!
//! Workload identity: every certificate carries its policy's `sans` and the URI SAN
//! `spiffe://<mesh_name>/<policy name>` (the SPIFFE ID), so proxy rules can name workloads
//! independently of their addresses. `mesh_name` is optional (default [`DEFAULT_MESH_NAME`]),
//! a SPIFFE trust domain (lowercase letters, digits, `.`, `-`, `_`); policy names must be
//! SPIFFE path segments (letters, digits, `.`, `-`, `_`).

use pki::SubjectAltNames;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The trust domain of the SPIFFE IDs when the manifest names no `mesh_name`.
pub const DEFAULT_MESH_NAME: &str = "podmesh";

/// Intel TCB statuses from best to worst; a minimum accepts itself and everything before it.
pub const TDX_TCB_STATUS_ORDER: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
];

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON for the schema: {0}")]
    Json(String),
    #[error("manifest field {field}: {why}")]
    Field { field: String, why: String },
}

fn field(field: impl Into<String>, why: impl Into<String>) -> ManifestError {
    ManifestError::Field { field: field.into(), why: why.into() }
}

/// The manifest exactly as written (the JSON schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDoc {
    #[serde(default)]
    pub reference_values: ReferenceValuesDoc,
    pub policies: BTreeMap<String, PolicyEntryDoc>,
    #[serde(default)]
    pub allow_simulated_tee: bool,
    /// Trust domain of the workloads' SPIFFE IDs; absent = [`DEFAULT_MESH_NAME`] (and absent
    /// from the canonical JSON, so manifests without it keep their hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceValuesDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpReferenceDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxReferenceDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpReferenceDoc {
    /// Empty: any product.
    #[serde(default)]
    pub products: Vec<tee::snp::Product>,
    /// Allowed launch measurements, 48 bytes hex; at least one.
    pub measurements: Vec<String>,
    /// Exact guest POLICY, hex (`0x30000`); absent: any (debug is still refused unless allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_tcb: Option<tee::snp::MinTcb>,
    /// Highest accepted VMPL (0 unless set).
    #[serde(default)]
    pub max_vmpl: u32,
    #[serde(default)]
    pub allow_debug: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxReferenceDoc {
    /// Allowed MRTDs, 48 bytes hex; at least one.
    pub mrtds: Vec<String>,
    /// RTMR0..3, 48 bytes hex each, `null` = any; absent = all any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmrs: Option<Vec<Option<String>>>,
    /// Exact TDATTRIBUTES, 8 bytes hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<String>,
    /// Exact XFAM, 8 bytes hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xfam: Option<String>,
    /// Worst accepted TCB status (see [`TDX_TCB_STATUS_ORDER`]); default `UpToDate`.
    #[serde(default = "default_tcb_status")]
    pub minimum_tcb_status: String,
    #[serde(default)]
    pub allow_debug: bool,
}

fn default_tcb_status() -> String {
    TDX_TCB_STATUS_ORDER[0].to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntryDoc {
    pub name: String,
    #[serde(default)]
    pub sans: Vec<String>,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub doc: ManifestDoc,
    pub snp: Option<SnpReference>,
    pub tdx: Option<TdxReference>,
    /// Keyed by raw HOSTDATA (32 B) / MRCONFIGID (48 B).
    pub policies: HashMap<Vec<u8>, Policy>,
    /// Canonical JSON (what is persisted and hashed).
    pub canonical_json: String,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct SnpReference {
    pub products: Vec<tee::snp::Product>,
    pub measurements: Vec<[u8; 48]>,
    pub guest_policy: Option<u64>,
    pub minimum_tcb: Option<tee::snp::MinTcb>,
    pub max_vmpl: u32,
    pub allow_debug: bool,
}

#[derive(Debug, Clone)]
pub struct TdxReference {
    pub mrtds: Vec<[u8; 48]>,
    pub rtmrs: [Option<[u8; 48]>; 4],
    pub attributes: Option<[u8; 8]>,
    pub xfam: Option<[u8; 8]>,
    pub accepted_tcb_statuses: Vec<String>,
    pub allow_debug: bool,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    /// The manifest's SANs plus the workload's SPIFFE ID.
    pub sans: SubjectAltNames,
}

/// SPIFFE ID characters: a trust domain takes lowercase letters, a path segment any case.
fn spiffe_chars(s: &str, uppercase: bool) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b) || (uppercase && b.is_ascii_uppercase())
    })
}

fn hex_array<const N: usize>(name: &str, text: &str) -> Result<[u8; N], ManifestError> {
    let bytes = hex::decode(text).map_err(|e| field(name, format!("not hex: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| field(name, format!("{} bytes, expected {N}", b.len())))
}

impl Manifest {
    /// Parses and validates manifest JSON.
    pub fn from_json(text: &[u8]) -> Result<Self, ManifestError> {
        let doc: ManifestDoc = serde_json::from_slice(text).map_err(|e| ManifestError::Json(e.to_string()))?;
        Self::validate(doc)
    }

    pub fn validate(doc: ManifestDoc) -> Result<Self, ManifestError> {
        let snp = doc.reference_values.snp.as_ref().map(validate_snp).transpose()?;
        let tdx = doc.reference_values.tdx.as_ref().map(validate_tdx).transpose()?;
        if snp.is_none() && tdx.is_none() {
            return Err(field("reference_values", "neither snp nor tdx is set, so no workload could ever attest"));
        }
        if doc.policies.is_empty() {
            return Err(field("policies", "empty, so no workload could get a certificate"));
        }
        let mesh_name = doc.mesh_name.as_deref().unwrap_or(DEFAULT_MESH_NAME);
        if mesh_name.is_empty() || mesh_name.len() > 255 || !spiffe_chars(mesh_name, false) {
            let why = format!("{mesh_name:?} is not a SPIFFE trust domain (1-255 of a-z 0-9 . - _)");
            return Err(field("mesh_name", why));
        }
        let mut policies = HashMap::new();
        let mut names = HashSet::new();
        for (key, entry) in &doc.policies {
            let at = format!("policies.{key}");
            let raw = hex::decode(key).map_err(|e| field(&at, format!("key is not hex: {e}")))?;
            match raw.len() {
                32 if snp.is_some() => {}
                48 if tdx.is_some() => {}
                32 | 48 => {
                    return Err(field(&at, format!("{}-byte key but no reference values for its platform", raw.len())))
                }
                n => return Err(field(&at, format!("key is {n} bytes; SNP HOSTDATA is 32, TDX MRCONFIGID is 48"))),
            }
            if entry.name.trim().is_empty() || entry.name.chars().any(char::is_control) {
                return Err(field(format!("{at}.name"), "must be non-empty printable text"));
            }
            if !names.insert(entry.name.clone()) {
                return Err(field(format!("{at}.name"), format!("name {:?} is used by another entry", entry.name)));
            }
            let mut sans =
                SubjectAltNames::parse(&entry.sans).map_err(|e| field(format!("{at}.sans"), e.to_string()))?;
            if [".", ".."].contains(&entry.name.as_str()) || !spiffe_chars(&entry.name, true) {
                let why = format!(
                    "{:?} cannot be the path of the SPIFFE ID spiffe://{mesh_name}/<name>: use letters, digits, . - _",
                    entry.name
                );
                return Err(field(format!("{at}.name"), why));
            }
            let id = format!("spiffe://{mesh_name}/{}", entry.name);
            if !sans.uris.contains(&id) {
                sans.uris.push(id);
            }
            if policies.insert(raw, Policy { name: entry.name.clone(), sans }).is_some() {
                return Err(field(&at, "duplicate key (keys are case-insensitive hex)"));
            }
        }
        let canonical_json = serde_json::to_string_pretty(&doc).map_err(|e| ManifestError::Json(e.to_string()))?;
        let sha256 = hex::encode(Sha256::digest(canonical_json.as_bytes()));
        Ok(Manifest { doc, snp, tdx, policies, canonical_json, sha256 })
    }
}

fn validate_snp(doc: &SnpReferenceDoc) -> Result<SnpReference, ManifestError> {
    if doc.measurements.is_empty() {
        return Err(field("reference_values.snp.measurements", "empty; list at least one allowed measurement"));
    }
    let measurements = doc
        .measurements
        .iter()
        .enumerate()
        .map(|(i, m)| hex_array::<48>(&format!("reference_values.snp.measurements[{i}]"), m))
        .collect::<Result<_, _>>()?;
    let guest_policy = doc
        .guest_policy
        .as_deref()
        .map(|p| {
            let digits = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")).unwrap_or(p);
            u64::from_str_radix(digits, 16)
                .map_err(|e| field("reference_values.snp.guest_policy", format!("{p:?} is not a hex u64: {e}")))
        })
        .transpose()?;
    if doc.max_vmpl > 3 {
        return Err(field("reference_values.snp.max_vmpl", format!("{} is not a VMPL (0..3)", doc.max_vmpl)));
    }
    Ok(SnpReference {
        products: doc.products.clone(),
        measurements,
        guest_policy,
        minimum_tcb: doc.minimum_tcb,
        max_vmpl: doc.max_vmpl,
        allow_debug: doc.allow_debug,
    })
}

fn validate_tdx(doc: &TdxReferenceDoc) -> Result<TdxReference, ManifestError> {
    if doc.mrtds.is_empty() {
        return Err(field("reference_values.tdx.mrtds", "empty; list at least one allowed MRTD"));
    }
    let mrtds = doc
        .mrtds
        .iter()
        .enumerate()
        .map(|(i, m)| hex_array::<48>(&format!("reference_values.tdx.mrtds[{i}]"), m))
        .collect::<Result<_, _>>()?;
    let mut rtmrs = [None; 4];
    if let Some(list) = &doc.rtmrs {
        if list.len() != 4 {
            return Err(field(
                "reference_values.tdx.rtmrs",
                format!("{} entries, expected 4 (null = any)", list.len()),
            ));
        }
        for (i, value) in list.iter().enumerate() {
            if let Some(v) = value {
                rtmrs[i] = Some(hex_array::<48>(&format!("reference_values.tdx.rtmrs[{i}]"), v)?);
            }
        }
    }
    let attributes =
        doc.attributes.as_deref().map(|a| hex_array::<8>("reference_values.tdx.attributes", a)).transpose()?;
    let xfam = doc.xfam.as_deref().map(|a| hex_array::<8>("reference_values.tdx.xfam", a)).transpose()?;
    let worst = TDX_TCB_STATUS_ORDER.iter().position(|s| *s == doc.minimum_tcb_status).ok_or_else(|| {
        field(
            "reference_values.tdx.minimum_tcb_status",
            format!("{:?} is not one of {}", doc.minimum_tcb_status, TDX_TCB_STATUS_ORDER.join(", ")),
        )
    })?;
    Ok(TdxReference {
        mrtds,
        rtmrs,
        attributes,
        xfam,
        accepted_tcb_statuses: TDX_TCB_STATUS_ORDER[..=worst].iter().map(|s| s.to_string()).collect(),
        allow_debug: doc.allow_debug,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> serde_json::Value {
        serde_json::json!({
            "reference_values": {
                "snp": { "measurements": ["aa".repeat(48)], "guest_policy": "0x30000",
                         "minimum_tcb": {"bootloader": 1, "tee": 0, "snp": 1, "microcode": 1} },
                "tdx": { "mrtds": ["bb".repeat(48)], "minimum_tcb_status": "SWHardeningNeeded" }
            },
            "policies": {
                "11".repeat(32): { "name": "web", "sans": ["web", "10.0.0.1"] },
                "22".repeat(48): { "name": "db", "sans": [] }
            }
        })
    }

    fn with(mut v: serde_json::Value, f: impl FnOnce(&mut serde_json::Value)) -> Result<Manifest, ManifestError> {
        f(&mut v);
        Manifest::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn every_policy_carries_its_spiffe_id_under_the_mesh_name() {
        let uris = |m: &Manifest, key: &str| m.policies[&hex::decode(key).unwrap()].sans.uris.clone();
        let m = with(sample(), |_| {}).unwrap();
        assert_eq!(uris(&m, &"11".repeat(32)), ["spiffe://podmesh/web"]);
        assert_eq!(uris(&m, &"22".repeat(48)), ["spiffe://podmesh/db"]);
        assert!(!m.canonical_json.contains("mesh_name"), "absent stays absent (the hash of old manifests holds)");
        let m = with(sample(), |v| {
            v["mesh_name"] = "prod.example".into();
            v["policies"]["11".repeat(32)]["sans"] =
                serde_json::json!(["spiffe://prod.example/web", "spiffe://other/x"]);
        })
        .unwrap();
        assert_eq!(uris(&m, &"11".repeat(32)), ["spiffe://prod.example/web", "spiffe://other/x"], "no duplicate");
        for (mesh, why) in
            [("Prod", "not a SPIFFE trust domain"), ("", "not a SPIFFE trust domain"), ("a/b", "trust domain")]
        {
            let err = with(sample(), |v| v["mesh_name"] = mesh.into()).unwrap_err().to_string();
            assert!(err.starts_with("manifest field mesh_name: ") && err.contains(why), "{err}");
        }
        let err = with(sample(), |v| v["policies"]["11".repeat(32)]["name"] = "my web".into()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("policies.{}.name: \"my web\" cannot be the path of the SPIFFE ID", "11".repeat(32))),
            "{err}"
        );
    }

    #[test]
    fn valid_manifest_compiles() {
        let m = with(sample(), |_| {}).unwrap();
        assert_eq!(m.policies.len(), 2);
        assert_eq!(m.snp.as_ref().unwrap().guest_policy, Some(0x30000));
        assert_eq!(m.tdx.as_ref().unwrap().accepted_tcb_statuses, ["UpToDate", "SWHardeningNeeded"]);
        assert!(!m.doc.allow_simulated_tee);
        let again = Manifest::from_json(m.canonical_json.as_bytes()).unwrap();
        assert_eq!(again.sha256, m.sha256);
    }

    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

    #[test]
    fn bad_manifests_name_the_field() {
        let cases: Vec<(&str, Edit)> = vec![
            ("measurements[0]", Box::new(|v| v["reference_values"]["snp"]["measurements"][0] = "abc".into())),
            ("measurements", Box::new(|v| v["reference_values"]["snp"]["measurements"] = serde_json::json!([]))),
            ("guest_policy", Box::new(|v| v["reference_values"]["snp"]["guest_policy"] = "0xzz".into())),
            ("minimum_tcb_status", Box::new(|v| v["reference_values"]["tdx"]["minimum_tcb_status"] = "Fine".into())),
            ("rtmrs", Box::new(|v| v["reference_values"]["tdx"]["rtmrs"] = serde_json::json!([null]))),
            ("key is 3 bytes", Box::new(|v| v["policies"]["abcdef"] = serde_json::json!({"name": "x"}))),
            ("not hex", Box::new(|v| v["policies"]["zz"] = serde_json::json!({"name": "x"}))),
            (
                "is used by another entry",
                Box::new(|v| v["policies"]["33".repeat(32)] = serde_json::json!({"name": "web"})),
            ),
            (
                "sans",
                Box::new(|v| v["policies"]["33".repeat(32)] = serde_json::json!({"name": "x", "sans": ["bad name"]})),
            ),
            ("name", Box::new(|v| v["policies"]["33".repeat(32)] = serde_json::json!({"name": " "}))),
            ("reference_values", Box::new(|v| v["reference_values"] = serde_json::json!({}))),
            ("policies", Box::new(|v| v["policies"] = serde_json::json!({}))),
            ("unknown field", Box::new(|v| v["allow_simulated"] = true.into())),
            (
                "no reference values for its platform",
                Box::new(|v| {
                    v["reference_values"].as_object_mut().unwrap().remove("tdx");
                }),
            ),
        ];
        for (want, edit) in cases {
            let err = with(sample(), edit).expect_err(want).to_string();
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
        for junk in [&b""[..], b"{", b"[]", b"null", b"\xff\xfe", b"{\"policies\": 5}"] {
            assert!(matches!(Manifest::from_json(junk), Err(ManifestError::Json(_))));
        }
    }
}
