//! The two fields the guest reads back from its own report: the launch value the host set
//! (SNP `HOST_DATA`, TDX `MRCONFIGID`, where initdata's digest goes) and the report data it
//! asked for. Offsets only, no signature check: the blob came from the kernel's configfs in
//! this request, and verifying it is the coordinator's job (`tee`, host side), so the guest
//! links no verifier. Layouts: AMD SEV-SNP ABI spec (ATTESTATION_REPORT, table 23) and Intel
//! TDX DCAP quote format v4/v5 (TD quote body 1.0/1.5). `tsm/tests` checks these offsets
//! against `tee`'s full parsers on real reports and quotes.

use crate::Provider;

/// Length of an SNP attestation report (versions 2, 3 and 5).
const SNP_REPORT_LEN: usize = 0x4A0;
const SNP_REPORT_DATA: std::ops::Range<usize> = 0x50..0x90;
const SNP_HOST_DATA: std::ops::Range<usize> = 0xC0..0xE0;
/// Quote header; a v5 quote then has a 6-byte body descriptor (type u16, size u32).
const TDX_HEADER_LEN: usize = 48;
const TDX_TEE_TYPE: u32 = 0x81;
/// Offsets inside the TD quote body (the same in TD 1.0 and 1.5 bodies).
const TDX_MRCONFIGID: std::ops::Range<usize> = 184..232;
const TDX_REPORT_DATA: std::ops::Range<usize> = 520..584;

/// What the report says about its launch, read at fixed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFields {
    /// SNP `HOST_DATA` (32 bytes) or TDX `MRCONFIGID` (48 bytes).
    pub launch_value: Vec<u8>,
    /// The 64 bytes of report data the request wrote to `inblob`.
    pub report_data: [u8; 64],
}

/// Why a blob is not a report of the expected shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    #[error("SNP report has {len} bytes, expected {SNP_REPORT_LEN}")]
    SnpLength { len: usize },
    #[error("SNP report version {version} is not supported (2, 3 or 5)")]
    SnpVersion { version: u32 },
    #[error("TDX quote too short for its {what} ({len} bytes)")]
    TdxShort { what: &'static str, len: usize },
    #[error("TDX quote version {version} is not supported (4 or 5)")]
    TdxVersion { version: u16 },
    #[error("TDX quote has TEE type {tee_type:#x}, not TDX (0x81)")]
    TdxTeeType { tee_type: u32 },
    #[error("TDX v5 quote body type {body_type} of {size} bytes is not a TD report body")]
    TdxBody { body_type: u16, size: u32 },
}

/// Reads the launch value and report data of `provider`'s outblob.
pub fn launch_fields(provider: Provider, outblob: &[u8]) -> Result<LaunchFields, LaunchError> {
    let (launch, data) = match provider {
        Provider::SevGuest => {
            if outblob.len() != SNP_REPORT_LEN {
                return Err(LaunchError::SnpLength { len: outblob.len() });
            }
            let version = u32::from_le_bytes([outblob[0], outblob[1], outblob[2], outblob[3]]);
            if !matches!(version, 2 | 3 | 5) {
                return Err(LaunchError::SnpVersion { version });
            }
            (&outblob[SNP_HOST_DATA], &outblob[SNP_REPORT_DATA])
        }
        Provider::TdxGuest => {
            let body = tdx_body(outblob)?;
            (&body[TDX_MRCONFIGID], &body[TDX_REPORT_DATA])
        }
    };
    let mut report_data = [0u8; 64];
    report_data.copy_from_slice(data);
    Ok(LaunchFields { launch_value: launch.to_vec(), report_data })
}

/// The TD quote body of a v4 or v5 quote (at least up to its report data).
fn tdx_body(q: &[u8]) -> Result<&[u8], LaunchError> {
    let short = |what| LaunchError::TdxShort { what, len: q.len() };
    let header = q.get(..TDX_HEADER_LEN).ok_or(short("header"))?;
    let version = u16::from_le_bytes([header[0], header[1]]);
    let tee_type = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let body_at = match version {
        4 => TDX_HEADER_LEN,
        5 => {
            let d = q.get(TDX_HEADER_LEN..TDX_HEADER_LEN + 6).ok_or(short("v5 body descriptor"))?;
            let body_type = u16::from_le_bytes([d[0], d[1]]);
            let size = u32::from_le_bytes([d[2], d[3], d[4], d[5]]);
            if !matches!((body_type, size), (2, 584) | (3, 648)) {
                return Err(LaunchError::TdxBody { body_type, size });
            }
            TDX_HEADER_LEN + 6
        }
        _ => return Err(LaunchError::TdxVersion { version }),
    };
    if tee_type != TDX_TEE_TYPE {
        return Err(LaunchError::TdxTeeType { tee_type });
    }
    q.get(body_at..body_at + TDX_REPORT_DATA.end).ok_or(short("TD report body"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_blobs_are_explained_never_panic() {
        assert_eq!(launch_fields(Provider::SevGuest, &[0; 10]), Err(LaunchError::SnpLength { len: 10 }));
        assert_eq!(
            launch_fields(Provider::SevGuest, &[0; SNP_REPORT_LEN]),
            Err(LaunchError::SnpVersion { version: 0 })
        );
        assert!(matches!(
            launch_fields(Provider::TdxGuest, &[4, 0]),
            Err(LaunchError::TdxShort { what: "header", .. })
        ));
        let mut v4 = vec![0u8; TDX_HEADER_LEN + 100];
        v4[0] = 4;
        v4[4] = 0x81;
        assert!(matches!(
            launch_fields(Provider::TdxGuest, &v4),
            Err(LaunchError::TdxShort { what: "TD report body", .. })
        ));
        v4[4] = 0;
        assert_eq!(launch_fields(Provider::TdxGuest, &v4), Err(LaunchError::TdxTeeType { tee_type: 0 }));
        let mut v5 = vec![0u8; TDX_HEADER_LEN + 6 + 584];
        v5[0] = 5;
        v5[4] = 0x81;
        v5[TDX_HEADER_LEN] = 9;
        assert!(matches!(launch_fields(Provider::TdxGuest, &v5), Err(LaunchError::TdxBody { body_type: 9, .. })));
        for len in 0..700 {
            let _ = launch_fields(Provider::TdxGuest, &vec![5u8; len]);
            let _ = launch_fields(Provider::SevGuest, &vec![2u8; len]);
        }
    }

    #[test]
    fn fields_come_from_their_offsets() {
        let mut snp = vec![0u8; SNP_REPORT_LEN];
        snp[0] = 3;
        snp[SNP_HOST_DATA].fill(0xAB);
        snp[SNP_REPORT_DATA].fill(0xCD);
        let f = launch_fields(Provider::SevGuest, &snp).unwrap();
        assert_eq!((f.launch_value, f.report_data), (vec![0xAB; 32], [0xCD; 64]));
        let mut tdx = vec![0u8; TDX_HEADER_LEN + 6 + 648 + 4];
        tdx[0] = 5;
        tdx[4] = 0x81;
        tdx[TDX_HEADER_LEN] = 3;
        tdx[TDX_HEADER_LEN + 2..TDX_HEADER_LEN + 6].copy_from_slice(&648u32.to_le_bytes());
        let body = TDX_HEADER_LEN + 6;
        tdx[body + TDX_MRCONFIGID.start..body + TDX_MRCONFIGID.end].fill(0x11);
        tdx[body + TDX_REPORT_DATA.start..body + TDX_REPORT_DATA.end].fill(0x22);
        let f = launch_fields(Provider::TdxGuest, &tdx).unwrap();
        assert_eq!((f.launch_value, f.report_data), (vec![0x11; 48], [0x22; 64]));
    }
}
