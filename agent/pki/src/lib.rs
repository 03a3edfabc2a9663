//! The podmesh coordinator's certificate authority and the attested mesh certificate.
//!
//! # Hierarchy
//!
//! ```text
//! root CA (ECDSA P-384, 20 years, never rotates)
//!   └── intermediate CA  (key K, subject S, signed by the root)
//! mesh CA = self-signed certificate with key K and subject S
//!   └── mesh certificate (workload key, 24 h by default)
//! ```
//!
//! Because the intermediate and the mesh CA share key and subject, a mesh
//! certificate chains to the root via the intermediate, or verifies directly
//! against the mesh CA as trust anchor. Workloads trust the mesh CA they were
//! given, so a manifest update (which rotates K) separates old and new workloads,
//! while data owners keep verifying everything against the root.
//!
//! # Attestation extensions (OID arc)
//!
//! Every mesh certificate carries the verified attestation claims as
//! non-critical X.509 extensions under the arc **`1.3.6.1.4.1.4128800.1`**
//! ([`oid::CLAIMS_ARC`]). `4128800` is a private, unregistered enterprise
//! number far above the assigned IANA range; it lives only in [`oid`], so
//! switching to a registered number is a one-line change.
//!
//! | OID suffix | claim | DER type | SEV-SNP | TDX |
//! |---|---|---|---|---|
//! | `.1` | platform | UTF8String | `"snp"` | `"tdx"` |
//! | `.2` | measurement | OCTET STRING | MEASUREMENT (48 B) | MRTD (48 B) |
//! | `.3` | runtime measurements | SEQUENCE OF OCTET STRING | absent | RTMR0..3 |
//! | `.4` | host data | OCTET STRING | HOST_DATA (32 B) | MRCONFIGID (48 B) |
//! | `.5` | report data | OCTET STRING | REPORT_DATA (64 B) | REPORTDATA (64 B) |
//! | `.6` | TCB | OCTET STRING | REPORTED_TCB (8 B, little endian) | TEE_TCB_SVN (16 B) |
//! | `.7` | policy | OCTET STRING | guest POLICY (8 B, little endian) | TDATTRIBUTES (8 B) |
//! | `.8` | simulated | BOOLEAN | true when signed by the simulated (test) anchor | same |
//! | `.9` | workload | UTF8String | name of the manifest policy entry | same |
//! | `.10` | initdata digest | OCTET STRING | HOST_DATA (32 B) | MRCONFIGID (48 B) |
//!
//! `.10` names the host data for what it is in podmesh: the digest of the pod's initdata (the
//! `initdata` crate; the guest refuses to start its mesh when the two differ), so a peer or a data
//! owner can tell from the certificate which exact mesh configuration the workload runs. It is
//! optional when reading, so certificates issued before it existed still parse.
//!
//! [`claims::AttestationClaims::from_certificate`] reads them back.
//!
//! # Test and benchmark CAs
//!
//! There is no separate testing API: tests build CAs exactly as the coordinator does, with
//! [`RootCa::generate`], [`MeshCa::generate`], a key from [`leaf::new_workload_key`] and
//! [`MeshCa::issue`] (chain = leaf + intermediate, trust anchor = [`MeshCa::mesh_ca_pem`]).

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
pub mod ca;
pub mod claims;
mod der;
pub mod leaf;
pub mod oid;

pub use ca::{CaError, MeshCa, RootCa};
pub use claims::{AttestationClaims, ClaimsError, Platform};
pub use leaf::{IssueError, IssuedCertificate, LeafRequest, PublicKeyInput, SubjectAltNames};
