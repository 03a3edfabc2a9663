//! The private OID arc of the attestation extensions (see the crate docs).

/// `1.3.6.1.4.1.4128800.1`: attested claims in mesh certificates.
pub const CLAIMS_ARC: &[u64] = &[1, 3, 6, 1, 4, 1, 4128800, 1];

pub const PLATFORM: u64 = 1;
pub const MEASUREMENT: u64 = 2;
pub const RUNTIME_MEASUREMENTS: u64 = 3;
pub const HOST_DATA: u64 = 4;
pub const REPORT_DATA: u64 = 5;
pub const TCB: u64 = 6;
pub const POLICY: u64 = 7;
pub const SIMULATED: u64 = 8;
pub const WORKLOAD: u64 = 9;
pub const INITDATA_DIGEST: u64 = 10;

/// The full OID of one claim, e.g. `claim(MEASUREMENT)`.
pub fn claim(suffix: u64) -> Vec<u64> {
    let mut oid = CLAIMS_ARC.to_vec();
    oid.push(suffix);
    oid
}

/// Dotted text form, e.g. `1.3.6.1.4.1.4128800.1.2`.
pub fn dotted(oid: &[u64]) -> String {
    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}
