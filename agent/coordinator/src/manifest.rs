//! The manifest: reference values per platform, policy entries keyed by host data, and the
//! simulated-TEE opt-in. Parsed from JSON and validated into a [`Manifest`] that the issue
//! path uses directly (so nothing is re-parsed per request).
//!
//! # Schema (strict)
//!
//! ```json
//! {
//!   "reference_values": {
//!     "snp": {
//!       "measurements": ["<96 hex>"],
//!       "guest_policy": "0x30000",
//!       "minimum_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
//!       "minimum_launch_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
//!       "chip_ids": ["<128 hex>"],
//!       "products": ["Milan", "Genoa"],
//!       "allow_migration_agent": false, "max_vmpl": 0, "allow_debug": false
//!     },
//!     "tdx": {
//!       "mrtds": ["<96 hex>"],
//!       "rtmrs": ["<96 hex>", "<96 hex>", "<96 hex>", "any"],
//!       "attributes": "0000001000000000", "xfam": "e702060000000000",
//!       "minimum_tcb_status": "UpToDate",
//!       "minimum_tee_tcb_svn": "<32 hex>",
//!       "mrseams": ["<96 hex>"],
//!       "allow_debug": false
//!     }
//!   },
//!   "policies": { "<HOSTDATA 64 hex | MRCONFIGID 96 hex>": { "name": "web", "sans": ["web", "10.0.0.7"] } },
//!   "allow_simulated_tee": false,
//!   "mesh_name": "prod.example"
//! }
//! ```
//!
//! **Required** (a missing one is refused at `--manifest` load and on `PUT /v1/manifest` with an
//! error naming the field and what to write):
//! - SNP: `measurements`, `guest_policy` (the exact POLICY), `minimum_tcb` (floor for
//!   REPORTED_TCB, componentwise; `fmc` only for Turin, default 0).
//! - TDX: `mrtds`, `rtmrs` with RTMR0, RTMR1 and RTMR2 (a fourth entry, RTMR3, is optional:
//!   podmesh guests do not extend it; `null` or absent = not pinned), `attributes`
//!   (TDATTRIBUTES, 8 bytes little-endian hex) and `xfam` (8 bytes little-endian hex).
//!
//! **Permissive values are written out**: every required field accepts the string `"any"`
//! instead of its value (`"measurements": "any"`, `"guest_policy": "any"`, `"minimum_tcb":
//! "any"`, `"mrtds": "any"`, an RTMR as `"any"`, `"attributes": "any"`, `"xfam": "any"`), and
//! so do `minimum_launch_tcb`, `chip_ids`, `minimum_tee_tcb_svn` and `mrseams`. Every `"any"`,
//! and `allow_debug` / `allow_migration_agent` set to true, is a *permissive reference value*:
//! logged as a warning (`PODMESH_EVENT=permissive_reference_value`, `field=...`) when the
//! manifest is loaded or replaced and on every certificate issued under it. `null` is no
//! longer a way to say "any" for RTMR0..2.
//!
//! **Optional pins** (omitted = not pinned, no warning; each only narrows what the required
//! values and the signature chain already admit):
//! - SNP `minimum_launch_tcb`: floor for LAUNCH_TCB; omitted = the same as `minimum_tcb`
//!   (as Contrast sets it), so a guest launched by older firmware than the floor is refused
//!   even after a live firmware update raised its REPORTED_TCB.
//! - SNP `chip_ids`: allowed CHIP_IDs (64 bytes hex); a masked CHIP_ID (VLEK) matches none.
//! - SNP `products`: Milan / Genoa / Turin.
//! - SNP `allow_migration_agent` (default false): POLICY bit 18 (MIGRATE_MA) is refused unless
//!   true. `allow_debug` (default false): POLICY bit 19. `max_vmpl` (default 0). A pinned
//!   `guest_policy` with bit 18 or 19 set needs the matching `allow_*` (else the manifest
//!   contradicts itself and is refused).
//! - TDX `minimum_tcb_status` (default `UpToDate`, see [`TDX_TCB_STATUS_ORDER`]),
//!   `minimum_tee_tcb_svn` (16 bytes hex, componentwise floor for TEE_TCB_SVN), `mrseams`
//!   (allowed MRSEAM, the TDX module's measurement), `allow_debug` (default false).
//! - TDX QE vendor ID: always Intel's (939a7233f79c4ca9940a0db3957f0607), not configurable:
//!   no other quoting enclave's quotes can be verified.
//!
//! A manifest fragment generated from the build's reference values (`reference-values.json`)
//! must write every required field; values it cannot know (chip IDs, the host's TCB) are either
//! set by the operator or written as `"any"`.
//!
//! Workload identity: every certificate carries its policy's `sans` and the URI SAN
//! `spiffe://<mesh_name>/<policy name>` (the SPIFFE ID), so proxy rules can name workloads
//! independently of their addresses. `mesh_name` is optional (default [`DEFAULT_MESH_NAME`]),
//! a SPIFFE trust domain (lowercase letters, digits, `.`, `-`, `_`); policy names must be
//! SPIFFE path segments (letters, digits, `.`, `-`, `_`).

use pki::SubjectAltNames;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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

/// The spelling of a deliberately permissive reference value.
pub const ANY: &str = "any";

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

/// A reference value, or the explicit permissive `"any"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin<T> {
    Any,
    Value(T),
}

impl<T: Serialize> Serialize for Pin<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pin::Any => s.serialize_str(ANY),
            Pin::Value(v) => v.serialize(s),
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Pin<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if value.as_str() == Some(ANY) {
            return Ok(Pin::Any);
        }
        T::deserialize(value).map(Pin::Value).map_err(|e| serde::de::Error::custom(format!("{e}, or \"any\"")))
    }
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

/// SNP reference values as written; the `Option`s of required fields are `None` only so a
/// missing one gets an error that says what to write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpReferenceDoc {
    /// Empty: any product.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<tee::snp::Product>,
    /// Required: allowed launch measurements, 48 bytes hex each, at least one; or "any".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurements: Option<Pin<Vec<String>>>,
    /// Required: the exact guest POLICY, hex (`0x30000`); or "any".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy: Option<Pin<String>>,
    /// Required: floor for REPORTED_TCB; or "any".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_tcb: Option<Pin<tee::snp::MinTcb>>,
    /// Floor for LAUNCH_TCB; absent: `minimum_tcb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_launch_tcb: Option<Pin<tee::snp::MinTcb>>,
    /// Allowed CHIP_IDs, 64 bytes hex; absent: any chip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chip_ids: Option<Pin<Vec<String>>>,
    /// Accept POLICY.MIGRATE_MA (bit 18).
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// Highest accepted VMPL (0 unless set).
    #[serde(default)]
    pub max_vmpl: u32,
    #[serde(default)]
    pub allow_debug: bool,
}

/// TDX reference values as written (see [`SnpReferenceDoc`] for the `Option`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxReferenceDoc {
    /// Required: allowed MRTDs, 48 bytes hex each, at least one; or "any".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrtds: Option<Pin<Vec<String>>>,
    /// Required: RTMR0..2 (and optionally RTMR3), 48 bytes hex or "any" each; RTMR3 may be null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmrs: Option<Vec<Option<Pin<String>>>>,
    /// Required: exact TDATTRIBUTES, 8 bytes hex; or "any".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Pin<String>>,
    /// Required: exact XFAM, 8 bytes hex; or "any".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xfam: Option<Pin<String>>,
    /// Worst accepted TCB status (see [`TDX_TCB_STATUS_ORDER`]); default `UpToDate`.
    #[serde(default = "default_tcb_status")]
    pub minimum_tcb_status: String,
    /// Componentwise floor for TEE_TCB_SVN, 16 bytes hex; absent: the TCB status decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_tee_tcb_svn: Option<Pin<String>>,
    /// Allowed MRSEAMs, 48 bytes hex; absent: any TDX module Intel's collateral accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrseams: Option<Pin<Vec<String>>>,
    #[serde(default)]
    pub allow_debug: bool,
}

impl Default for TdxReferenceDoc {
    fn default() -> Self {
        Self {
            mrtds: None,
            rtmrs: None,
            attributes: None,
            xfam: None,
            minimum_tcb_status: default_tcb_status(),
            minimum_tee_tcb_svn: None,
            mrseams: None,
            allow_debug: false,
        }
    }
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
    /// Empty: "any".
    pub measurements: Vec<[u8; 48]>,
    /// None: "any".
    pub guest_policy: Option<u64>,
    /// None: "any".
    pub minimum_tcb: Option<tee::snp::MinTcb>,
    /// None: "any".
    pub minimum_launch_tcb: Option<tee::snp::MinTcb>,
    /// Empty: any chip.
    pub chip_ids: Vec<[u8; 64]>,
    pub allow_migration_agent: bool,
    pub max_vmpl: u32,
    pub allow_debug: bool,
    /// The fields written as "any" (or allow_* = true), for the warnings.
    pub permissive: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TdxReference {
    /// Empty: "any".
    pub mrtds: Vec<[u8; 48]>,
    /// None: "any" (or RTMR3 unpinned).
    pub rtmrs: [Option<[u8; 48]>; 4],
    pub attributes: Option<[u8; 8]>,
    pub xfam: Option<[u8; 8]>,
    pub accepted_tcb_statuses: Vec<String>,
    pub minimum_tee_tcb_svn: Option<[u8; 16]>,
    /// Empty: any.
    pub mrseams: Vec<[u8; 48]>,
    pub allow_debug: bool,
    /// The fields written as "any" (or allow_debug = true), for the warnings.
    pub permissive: Vec<String>,
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

/// A required field that is absent: the error says what to write, including the permissive spelling.
fn required<'a, T>(value: &'a Option<T>, name: &str, what: &str) -> Result<&'a T, ManifestError> {
    value.as_ref().ok_or_else(|| {
        field(
            name,
            format!(
                "missing (required since manifests are strict): add {what}, or \"any\" to accept every value (logged as a warning at every start and on every certificate)"
            ),
        )
    })
}

/// Collects the pinned values of `pin`, noting "any" in `permissive`.
fn pinned<T, R>(
    pin: &Pin<T>,
    name: &str,
    permissive: &mut Vec<String>,
    parse: impl FnOnce(&T) -> Result<R, ManifestError>,
) -> Result<Option<R>, ManifestError> {
    match pin {
        Pin::Any => {
            permissive.push(name.to_owned());
            Ok(None)
        }
        Pin::Value(v) => parse(v).map(Some),
    }
}

/// A non-empty list of fixed-size hex values.
fn hex_list<const N: usize>(name: &str, list: &[String], what: &str) -> Result<Vec<[u8; N]>, ManifestError> {
    if list.is_empty() {
        return Err(field(name, format!("empty; list at least one allowed {what}, or write \"any\"")));
    }
    list.iter().enumerate().map(|(i, m)| hex_array::<N>(&format!("{name}[{i}]"), m)).collect()
}

impl Manifest {
    /// Parses and validates manifest JSON; errors name the field (its JSON path).
    pub fn from_json(text: &[u8]) -> Result<Self, ManifestError> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let doc: ManifestDoc = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                ManifestError::Json(e.into_inner().to_string())
            } else {
                ManifestError::Json(format!("{path}: {}", e.into_inner()))
            }
        })?;
        de.end().map_err(|e| ManifestError::Json(e.to_string()))?;
        Self::validate(doc)
    }

    /// The fields of `platform`'s reference values that are deliberately permissive.
    pub fn permissive(&self, platform: tee::Platform) -> &[String] {
        match platform {
            tee::Platform::SevSnp => self.snp.as_ref().map(|s| &s.permissive[..]),
            tee::Platform::Tdx => self.tdx.as_ref().map(|t| &t.permissive[..]),
        }
        .unwrap_or(&[])
    }

    /// Logs one warning per permissive reference value (`context`: why now).
    pub fn warn_permissive(&self, context: &str) {
        for platform in [tee::Platform::SevSnp, tee::Platform::Tdx] {
            for name in self.permissive(platform) {
                tracing::warn!(
                    PODMESH_EVENT = "permissive_reference_value",
                    field = %name,
                    manifest_sha256 = %self.sha256,
                    "manifest {context}: reference value {name} is permissive; evidence is not checked against it"
                );
            }
        }
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
    const AT: &str = "reference_values.snp";
    let mut permissive = Vec::new();
    let name = |f: &str| format!("{AT}.{f}");
    let measurements = required(
        &doc.measurements,
        &name("measurements"),
        "the allowed launch measurements (a list of 96-hex-digit values)",
    )?;
    let measurements = pinned(measurements, &name("measurements"), &mut permissive, |list| {
        hex_list::<48>(&name("measurements"), list, "measurement")
    })?
    .unwrap_or_default();
    let guest_policy = required(&doc.guest_policy, &name("guest_policy"), "the exact guest POLICY (e.g. \"0x30000\")")?;
    let guest_policy = pinned(guest_policy, &name("guest_policy"), &mut permissive, |p| {
        let digits = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")).unwrap_or(p);
        u64::from_str_radix(digits, 16).map_err(|e| field(name("guest_policy"), format!("{p:?} is not a hex u64: {e}")))
    })?;
    let minimum_tcb = required(
        &doc.minimum_tcb,
        &name("minimum_tcb"),
        "the minimum REPORTED_TCB ({\"bootloader\": N, \"tee\": N, \"snp\": N, \"microcode\": N})",
    )?;
    let minimum_tcb = pinned(minimum_tcb, &name("minimum_tcb"), &mut permissive, |t| Ok(*t))?;
    let minimum_launch_tcb = match &doc.minimum_launch_tcb {
        None => minimum_tcb,
        Some(pin) => pinned(pin, &name("minimum_launch_tcb"), &mut permissive, |t| Ok(*t))?,
    };
    let chip_ids = match &doc.chip_ids {
        None => Vec::new(),
        Some(pin) => {
            pinned(pin, &name("chip_ids"), &mut permissive, |list| hex_list::<64>(&name("chip_ids"), list, "CHIP_ID"))?
                .unwrap_or_default()
        }
    };
    if doc.max_vmpl > 3 {
        return Err(field(name("max_vmpl"), format!("{} is not a VMPL (0..3)", doc.max_vmpl)));
    }
    for (bit, allowed, flag) in [
        (tee::snp::POLICY_MIGRATE_MA, doc.allow_migration_agent, "allow_migration_agent"),
        (tee::snp::POLICY_DEBUG, doc.allow_debug, "allow_debug"),
    ] {
        if allowed {
            permissive.push(name(flag));
        } else if guest_policy.is_some_and(|p| p & bit != 0) {
            return Err(field(
                name("guest_policy"),
                format!(
                    "sets bit {} ({bit:#x}), which {flag} (false) refuses; clear the bit or set {flag}",
                    bit.trailing_zeros()
                ),
            ));
        }
    }
    Ok(SnpReference {
        products: doc.products.clone(),
        measurements,
        guest_policy,
        minimum_tcb,
        minimum_launch_tcb,
        chip_ids,
        allow_migration_agent: doc.allow_migration_agent,
        max_vmpl: doc.max_vmpl,
        allow_debug: doc.allow_debug,
        permissive,
    })
}

fn validate_tdx(doc: &TdxReferenceDoc) -> Result<TdxReference, ManifestError> {
    const AT: &str = "reference_values.tdx";
    let mut permissive = Vec::new();
    let name = |f: &str| format!("{AT}.{f}");
    let mrtds = required(&doc.mrtds, &name("mrtds"), "the allowed MRTDs (a list of 96-hex-digit values)")?;
    let mrtds = pinned(mrtds, &name("mrtds"), &mut permissive, |list| hex_list::<48>(&name("mrtds"), list, "MRTD"))?
        .unwrap_or_default();
    let list =
        required(&doc.rtmrs, &name("rtmrs"), "RTMR0, RTMR1 and RTMR2 (a list of 96-hex-digit values, RTMR3 optional)")?;
    if !(3..=4).contains(&list.len()) {
        return Err(field(
            name("rtmrs"),
            format!("{} entries, expected RTMR0..2 and optionally RTMR3 (3 or 4)", list.len()),
        ));
    }
    let mut rtmrs = [None; 4];
    for (i, value) in list.iter().enumerate() {
        let at = format!("{AT}.rtmrs[{i}]");
        rtmrs[i] = match value {
            // RTMR3 is the runtime's register, not extended by podmesh guests: unpinned is no warning.
            None | Some(Pin::Any) if i == 3 => None,
            None => {
                return Err(field(
                    at,
                    format!("null no longer means any: write RTMR{i} (96 hex digits), or \"any\" to accept every value (logged as a warning)"),
                ))
            }
            Some(pin) => pinned(pin, &at, &mut permissive, |v| hex_array::<48>(&at, v))?,
        };
    }
    let attributes = required(&doc.attributes, &name("attributes"), "the exact TDATTRIBUTES (16 hex digits)")?;
    let attributes =
        pinned(attributes, &name("attributes"), &mut permissive, |a| hex_array::<8>(&name("attributes"), a))?;
    let xfam = required(&doc.xfam, &name("xfam"), "the exact XFAM (16 hex digits)")?;
    let xfam = pinned(xfam, &name("xfam"), &mut permissive, |a| hex_array::<8>(&name("xfam"), a))?;
    let minimum_tee_tcb_svn = match &doc.minimum_tee_tcb_svn {
        None => None,
        Some(pin) => pinned(pin, &name("minimum_tee_tcb_svn"), &mut permissive, |v| {
            hex_array::<16>(&name("minimum_tee_tcb_svn"), v)
        })?,
    };
    let mrseams = match &doc.mrseams {
        None => Vec::new(),
        Some(pin) => {
            pinned(pin, &name("mrseams"), &mut permissive, |list| hex_list::<48>(&name("mrseams"), list, "MRSEAM"))?
                .unwrap_or_default()
        }
    };
    let worst = TDX_TCB_STATUS_ORDER.iter().position(|s| *s == doc.minimum_tcb_status).ok_or_else(|| {
        field(
            name("minimum_tcb_status"),
            format!("{:?} is not one of {}", doc.minimum_tcb_status, TDX_TCB_STATUS_ORDER.join(", ")),
        )
    })?;
    if doc.allow_debug {
        permissive.push(name("allow_debug"));
    } else if attributes.is_some_and(|a| a[0] & 1 != 0) {
        return Err(field(name("attributes"), "sets DEBUG (bit 0), which allow_debug (false) refuses"));
    }
    Ok(TdxReference {
        mrtds,
        rtmrs,
        attributes,
        xfam,
        accepted_tcb_statuses: TDX_TCB_STATUS_ORDER[..=worst].iter().map(|s| s.to_string()).collect(),
        minimum_tee_tcb_svn,
        mrseams,
        allow_debug: doc.allow_debug,
        permissive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCB: &str = r#"{"bootloader": 1, "tee": 0, "snp": 1, "microcode": 1}"#;

    pub(crate) fn sample() -> serde_json::Value {
        serde_json::json!({
            "reference_values": {
                "snp": { "measurements": ["aa".repeat(48)], "guest_policy": "0x30000",
                         "minimum_tcb": serde_json::from_str::<serde_json::Value>(TCB).unwrap() },
                "tdx": { "mrtds": ["bb".repeat(48)], "rtmrs": ["01".repeat(48), "02".repeat(48), "03".repeat(48)],
                         "attributes": "0000001000000000", "xfam": "e702060000000000",
                         "minimum_tcb_status": "SWHardeningNeeded" }
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
        let snp = m.snp.as_ref().unwrap();
        assert_eq!(snp.guest_policy, Some(0x30000));
        // minimum_launch_tcb defaults to minimum_tcb
        assert_eq!(snp.minimum_launch_tcb, snp.minimum_tcb);
        assert!(snp.minimum_tcb.is_some() && snp.chip_ids.is_empty() && !snp.allow_migration_agent);
        let tdx = m.tdx.as_ref().unwrap();
        assert_eq!(tdx.accepted_tcb_statuses, ["UpToDate", "SWHardeningNeeded"]);
        assert_eq!(tdx.rtmrs[2], Some([3; 48]));
        assert_eq!(tdx.rtmrs[3], None);
        assert!(m.permissive(tee::Platform::SevSnp).is_empty() && m.permissive(tee::Platform::Tdx).is_empty());
        assert!(!m.doc.allow_simulated_tee);
        let again = Manifest::from_json(m.canonical_json.as_bytes()).unwrap();
        assert_eq!(again.sha256, m.sha256);
    }

    #[test]
    fn every_required_field_can_be_any_and_is_listed_as_permissive() {
        let m = with(sample(), |v| {
            let snp = &mut v["reference_values"]["snp"];
            for f in ["measurements", "guest_policy", "minimum_tcb", "minimum_launch_tcb", "chip_ids"] {
                snp[f] = "any".into();
            }
            snp["allow_migration_agent"] = true.into();
            let tdx = &mut v["reference_values"]["tdx"];
            for f in ["mrtds", "attributes", "xfam", "minimum_tee_tcb_svn", "mrseams"] {
                tdx[f] = "any".into();
            }
            tdx["rtmrs"] = serde_json::json!(["any", "any", "any", "any"]);
        })
        .unwrap();
        let snp = m.snp.as_ref().unwrap();
        assert!(snp.measurements.is_empty() && snp.guest_policy.is_none() && snp.minimum_tcb.is_none());
        assert!(snp.minimum_launch_tcb.is_none() && snp.chip_ids.is_empty());
        assert_eq!(
            m.permissive(tee::Platform::SevSnp),
            [
                "reference_values.snp.measurements",
                "reference_values.snp.guest_policy",
                "reference_values.snp.minimum_tcb",
                "reference_values.snp.minimum_launch_tcb",
                "reference_values.snp.chip_ids",
                "reference_values.snp.allow_migration_agent",
            ]
        );
        // RTMR3 is not extended by podmesh guests: "any" there is no warning.
        assert_eq!(
            m.permissive(tee::Platform::Tdx),
            [
                "reference_values.tdx.mrtds",
                "reference_values.tdx.rtmrs[0]",
                "reference_values.tdx.rtmrs[1]",
                "reference_values.tdx.rtmrs[2]",
                "reference_values.tdx.attributes",
                "reference_values.tdx.xfam",
                "reference_values.tdx.minimum_tee_tcb_svn",
                "reference_values.tdx.mrseams",
            ]
        );
        // "any" round-trips through the canonical JSON
        let again = Manifest::from_json(m.canonical_json.as_bytes()).unwrap();
        assert_eq!(again.sha256, m.sha256);
        assert!(m.canonical_json.contains(r#""guest_policy": "any""#), "{}", m.canonical_json);
    }

    #[test]
    fn the_new_pins_are_parsed() {
        let m = with(sample(), |v| {
            let snp = &mut v["reference_values"]["snp"];
            snp["minimum_launch_tcb"] = serde_json::json!({"bootloader": 9, "tee": 0, "snp": 9, "microcode": 9});
            snp["chip_ids"] = serde_json::json!(["cc".repeat(64)]);
            let tdx = &mut v["reference_values"]["tdx"];
            tdx["minimum_tee_tcb_svn"] = "03000500000000000000000000000000".into();
            tdx["mrseams"] = serde_json::json!(["11".repeat(48)]);
        })
        .unwrap();
        let snp = m.snp.as_ref().unwrap();
        assert_eq!(snp.minimum_launch_tcb.unwrap().bootloader, 9);
        assert_eq!(snp.minimum_tcb.unwrap().bootloader, 1);
        assert_eq!(snp.chip_ids, [[0xcc; 64]]);
        let tdx = m.tdx.as_ref().unwrap();
        assert_eq!(tdx.minimum_tee_tcb_svn.unwrap()[..3], [3, 0, 5]);
        assert_eq!(tdx.mrseams, [[0x11; 48]]);
    }

    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

    fn remove(v: &mut serde_json::Value, platform: &str, key: &str) {
        v["reference_values"][platform].as_object_mut().unwrap().remove(key);
    }

    #[test]
    fn missing_required_fields_are_refused_with_what_to_add() {
        for (platform, key) in [
            ("snp", "measurements"),
            ("snp", "guest_policy"),
            ("snp", "minimum_tcb"),
            ("tdx", "mrtds"),
            ("tdx", "rtmrs"),
            ("tdx", "attributes"),
            ("tdx", "xfam"),
        ] {
            let err = with(sample(), |v| remove(v, platform, key)).expect_err(key).to_string();
            let want = format!("manifest field reference_values.{platform}.{key}: missing");
            assert!(err.starts_with(&want), "expected {want:?} in {err:?}");
            assert!(err.contains(r#"or "any""#), "the error names the permissive spelling: {err}");
        }
        // The manifest every podmesh before strict manifests accepted: SNP with measurements only.
        let old = serde_json::json!({
            "reference_values": { "snp": { "measurements": ["aa".repeat(48)] } },
            "policies": { "11".repeat(32): { "name": "web" } }
        });
        let err = Manifest::from_json(old.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("reference_values.snp.guest_policy: missing") && err.contains("0x30000"), "{err}");
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let cases: Vec<(&str, Edit)> = vec![
            ("measurements[0]", Box::new(|v| v["reference_values"]["snp"]["measurements"][0] = "abc".into())),
            ("measurements", Box::new(|v| v["reference_values"]["snp"]["measurements"] = serde_json::json!([]))),
            ("guest_policy", Box::new(|v| v["reference_values"]["snp"]["guest_policy"] = "0xzz".into())),
            ("minimum_tcb_status", Box::new(|v| v["reference_values"]["tdx"]["minimum_tcb_status"] = "Fine".into())),
            ("rtmrs", Box::new(|v| v["reference_values"]["tdx"]["rtmrs"] = serde_json::json!([null]))),
            (
                "reference_values.tdx.rtmrs[1]: null no longer means any",
                Box::new(|v| v["reference_values"]["tdx"]["rtmrs"] = serde_json::json!(["any", null, "any", null])),
            ),
            (
                "reference_values.snp.minimum_tcb: missing field `tee`, or \"any\"",
                Box::new(|v| v["reference_values"]["snp"]["minimum_tcb"] = serde_json::json!({"bootloader": 1})),
            ),
            (
                "reference_values.snp.minimum_tcb: unknown field `ucode`",
                Box::new(|v| v["reference_values"]["snp"]["minimum_tcb"]["ucode"] = 1.into()),
            ),
            (
                r#"reference_values.snp.guest_policy: invalid type: boolean `true`, expected a string, or "any""#,
                Box::new(|v| v["reference_values"]["snp"]["guest_policy"] = true.into()),
            ),
            ("measurements", Box::new(|v| v["reference_values"]["snp"]["measurements"] = "all".into())),
            ("chip_ids[0]", Box::new(|v| v["reference_values"]["snp"]["chip_ids"] = serde_json::json!(["aa"]))),
            ("chip_ids", Box::new(|v| v["reference_values"]["snp"]["chip_ids"] = serde_json::json!([]))),
            ("mrseams[0]", Box::new(|v| v["reference_values"]["tdx"]["mrseams"] = serde_json::json!(["zz"]))),
            ("minimum_tee_tcb_svn", Box::new(|v| v["reference_values"]["tdx"]["minimum_tee_tcb_svn"] = "0300".into())),
            (
                "reference_values.snp.guest_policy: sets bit 18 (0x40000), which allow_migration_agent (false) refuses",
                Box::new(|v| v["reference_values"]["snp"]["guest_policy"] = "0x70000".into()),
            ),
            (
                "reference_values.snp.guest_policy: sets bit 19",
                Box::new(|v| v["reference_values"]["snp"]["guest_policy"] = "0xb0000".into()),
            ),
            (
                "reference_values.tdx.attributes: sets DEBUG",
                Box::new(|v| v["reference_values"]["tdx"]["attributes"] = "0100001000000000".into()),
            ),
            ("max_vmpl", Box::new(|v| v["reference_values"]["snp"]["max_vmpl"] = 4.into())),
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
        for junk in [&b""[..], b"{", b"[]", b"null", b"\xff\xfe", b"{\"policies\": 5}", b"{\"policies\": {}} x"] {
            assert!(matches!(Manifest::from_json(junk), Err(ManifestError::Json(_))));
        }
    }

    #[test]
    fn allowing_debug_or_a_migration_agent_is_permissive_and_then_consistent() {
        let m = with(sample(), |v| {
            v["reference_values"]["snp"]["guest_policy"] = "0xf0000".into();
            v["reference_values"]["snp"]["allow_migration_agent"] = true.into();
            v["reference_values"]["snp"]["allow_debug"] = true.into();
            v["reference_values"]["tdx"]["allow_debug"] = true.into();
        })
        .unwrap();
        assert_eq!(
            m.permissive(tee::Platform::SevSnp),
            ["reference_values.snp.allow_migration_agent", "reference_values.snp.allow_debug"]
        );
        assert_eq!(m.permissive(tee::Platform::Tdx), ["reference_values.tdx.allow_debug"]);
    }
}
