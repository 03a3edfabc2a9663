//! GHCB extended-report certificate table (GHCB spec 2.03, MSG_REPORT_REQ; configfs-tsm
//! `auxblob` for `sev_guest`).
//!
//! Layout: entries of `GUID (16 bytes, RFC 4122 byte order) | offset u32 LE | length u32 LE`,
//! terminated by an all-zero entry; `offset` counts from the start of the table. The GHCB spec
//! defines no GUID of its own for the ASVK: with a VLEK the ASVK travels in the ASK entry
//! (the nil GUID is the terminator, never a certificate).

use std::fmt;

const ENTRY_LEN: usize = 24;

/// Well-known entry kinds; anything else is kept as `Other` (e.g. vendor endorsements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    Vcek,
    Vlek,
    /// ASK, or the ASVK when the report is signed by a VLEK.
    Ask,
    Ark,
    Crl,
    Other(#[serde(serialize_with = "ser_guid")] [u8; 16]),
}

fn ser_guid<S: serde::Serializer>(g: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Guid(*g))
}

/// GUIDs from the GHCB specification (identical in Linux, virtee/sev and go-sev-guest).
pub const VCEK_GUID: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd]);
pub const VLEK_GUID: [u8; 16] = guid(0xa8074bc2, 0xa25a, 0x483e, [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1]);
pub const ASK_GUID: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82]);
pub const ARK_GUID: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae]);
pub const CRL_GUID: [u8; 16] = guid(0x92f81bc3, 0x5811, 0x4d3d, [0x97, 0xff, 0xd1, 0x9f, 0x88, 0xdc, 0x67, 0xea]);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_be_bytes();
    let b = b.to_be_bytes();
    let c = c.to_be_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

impl CertKind {
    pub fn from_guid(g: [u8; 16]) -> Self {
        match g {
            VCEK_GUID => CertKind::Vcek,
            VLEK_GUID => CertKind::Vlek,
            ASK_GUID => CertKind::Ask,
            ARK_GUID => CertKind::Ark,
            CRL_GUID => CertKind::Crl,
            other => CertKind::Other(other),
        }
    }

    pub fn guid(self) -> [u8; 16] {
        match self {
            CertKind::Vcek => VCEK_GUID,
            CertKind::Vlek => VLEK_GUID,
            CertKind::Ask => ASK_GUID,
            CertKind::Ark => ARK_GUID,
            CertKind::Crl => CRL_GUID,
            CertKind::Other(g) => g,
        }
    }
}

/// Displays a GUID in the canonical 8-4-4-4-12 form.
pub struct Guid(pub [u8; 16]);

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(f, "{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertKind::Vcek => f.write_str("VCEK"),
            CertKind::Vlek => f.write_str("VLEK"),
            CertKind::Ask => f.write_str("ASK/ASVK"),
            CertKind::Ark => f.write_str("ARK"),
            CertKind::Crl => f.write_str("CRL"),
            CertKind::Other(g) => write!(f, "GUID {}", Guid(*g)),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertTableError {
    #[error("certificate table: {len} bytes end before the terminating all-zero entry")]
    Unterminated { len: usize },
    #[error("certificate table: entry {index} ({kind}) has zero length")]
    EmptyEntry { index: usize, kind: CertKind },
    #[error("certificate table: entry {index} ({kind}) at offset {offset} length {length} lies outside the data area {start}..{end}")]
    OutOfRange { index: usize, kind: CertKind, offset: u32, length: u32, start: usize, end: usize },
    #[error("certificate table: entries {first} and {second} overlap")]
    Overlap { first: usize, second: usize },
    #[error("certificate table: {kind} appears twice (entries {first} and {second})")]
    Duplicate { kind: CertKind, first: usize, second: usize },
    #[error("certificate table: an entry uses the nil GUID reserved for the terminator")]
    NilGuid,
    #[error("certificate table: encoded table would exceed 4 GiB")]
    TooLarge,
}

/// One certificate (DER for AMD's certificates) and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEntry {
    pub kind: CertKind,
    pub data: Vec<u8>,
}

/// A parsed certificate table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertTable {
    pub entries: Vec<CertEntry>,
}

impl CertTable {
    /// Parses with full bounds checks: every entry must lie after the header, inside the
    /// buffer, not overlap another entry, and each kind may appear once.
    pub fn parse(bytes: &[u8]) -> Result<Self, CertTableError> {
        let mut raw = Vec::new();
        let mut pos = 0;
        loop {
            let Some(chunk) = bytes.get(pos..pos + ENTRY_LEN) else {
                return Err(CertTableError::Unterminated { len: bytes.len() });
            };
            if chunk.iter().all(|&b| b == 0) {
                break;
            }
            let mut g = [0u8; 16];
            g.copy_from_slice(&chunk[..16]);
            if g == [0u8; 16] {
                return Err(CertTableError::NilGuid);
            }
            let offset = u32::from_le_bytes([chunk[16], chunk[17], chunk[18], chunk[19]]);
            let length = u32::from_le_bytes([chunk[20], chunk[21], chunk[22], chunk[23]]);
            raw.push((CertKind::from_guid(g), offset, length));
            pos += ENTRY_LEN;
        }
        let start = pos + ENTRY_LEN;
        let end = bytes.len();
        let mut entries = Vec::with_capacity(raw.len());
        for (index, &(kind, offset, length)) in raw.iter().enumerate() {
            if length == 0 {
                return Err(CertTableError::EmptyEntry { index, kind });
            }
            let (o, l) = (offset as usize, length as usize);
            if o < start || o.checked_add(l).is_none_or(|e| e > end) {
                return Err(CertTableError::OutOfRange { index, kind, offset, length, start, end });
            }
            for (prev, &(pkind, poff, plen)) in raw[..index].iter().enumerate() {
                if pkind == kind {
                    return Err(CertTableError::Duplicate { kind, first: prev, second: index });
                }
                let (po, pl) = (poff as usize, plen as usize);
                if o < po + pl && po < o + l {
                    return Err(CertTableError::Overlap { first: prev, second: index });
                }
            }
            entries.push(CertEntry { kind, data: bytes[o..o + l].to_vec() });
        }
        Ok(CertTable { entries })
    }

    /// Encodes header, terminator, then the certificates back to back (what a host would
    /// hand the guest; used by the simulator).
    pub fn encode(&self) -> Result<Vec<u8>, CertTableError> {
        let header = (self.entries.len() + 1) * ENTRY_LEN;
        let total = header + self.entries.iter().map(|e| e.data.len()).sum::<usize>();
        if total > u32::MAX as usize {
            return Err(CertTableError::TooLarge);
        }
        let mut out = Vec::with_capacity(total);
        let mut offset = header;
        for e in &self.entries {
            if e.kind.guid() == [0u8; 16] {
                return Err(CertTableError::NilGuid);
            }
            out.extend_from_slice(&e.kind.guid());
            out.extend_from_slice(&(offset as u32).to_le_bytes());
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            offset += e.data.len();
        }
        out.extend_from_slice(&[0u8; ENTRY_LEN]);
        for e in &self.entries {
            out.extend_from_slice(&e.data);
        }
        Ok(out)
    }

    pub fn get(&self, kind: CertKind) -> Option<&[u8]> {
        self.entries.iter().find(|e| e.kind == kind).map(|e| e.data.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CertTable {
        CertTable {
            entries: vec![
                CertEntry { kind: CertKind::Vcek, data: vec![1; 10] },
                CertEntry { kind: CertKind::Ask, data: vec![2; 5] },
                CertEntry { kind: CertKind::Ark, data: vec![3; 7] },
                CertEntry { kind: CertKind::Other([9; 16]), data: vec![4; 3] },
            ],
        }
    }

    #[test]
    fn guids_render_as_in_the_ghcb_spec() {
        assert_eq!(Guid(VCEK_GUID).to_string(), "63da758d-e664-4564-adc5-f4b93be8accd");
        assert_eq!(Guid(VLEK_GUID).to_string(), "a8074bc2-a25a-483e-aae6-39c045a0b8a1");
        assert_eq!(Guid(ASK_GUID).to_string(), "4ab7b379-bbac-4fe4-a02f-05aef327c782");
        assert_eq!(Guid(ARK_GUID).to_string(), "c0b406a4-a803-4952-9743-3fb6014cd0ae");
        assert_eq!(Guid(CRL_GUID).to_string(), "92f81bc3-5811-4d3d-97ff-d19f88dc67ea");
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let bytes = t.encode().unwrap();
        assert_eq!(CertTable::parse(&bytes).unwrap(), t);
        assert_eq!(CertTable::parse(&bytes).unwrap().get(CertKind::Ask), Some(&[2u8; 5][..]));
    }

    #[test]
    fn trailing_padding_after_data_is_fine() {
        let mut bytes = sample().encode().unwrap();
        bytes.extend_from_slice(&[0u8; 4096]);
        assert_eq!(CertTable::parse(&bytes).unwrap(), sample());
    }

    #[test]
    fn empty_table_is_just_the_terminator() {
        assert_eq!(CertTable::parse(&[0u8; 24]).unwrap().entries.len(), 0);
    }

    #[test]
    fn bad_tables_are_rejected() {
        assert_eq!(CertTable::parse(&[]), Err(CertTableError::Unterminated { len: 0 }));
        let good = sample().encode().unwrap();
        // Truncated data.
        assert!(matches!(CertTable::parse(&good[..good.len() - 1]), Err(CertTableError::OutOfRange { index: 3, .. })));
        // Offset pointing into the header.
        let mut b = good.clone();
        b[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(CertTable::parse(&b), Err(CertTableError::OutOfRange { index: 0, .. })));
        // Overflowing length.
        let mut b = good.clone();
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(CertTable::parse(&b), Err(CertTableError::OutOfRange { .. })));
        // Second entry overlapping the first.
        let mut b = good.clone();
        let first_off = u32::from_le_bytes(b[16..20].try_into().unwrap());
        b[40..44].copy_from_slice(&(first_off + 2).to_le_bytes());
        assert_eq!(CertTable::parse(&b), Err(CertTableError::Overlap { first: 0, second: 1 }));
        // Duplicate kind.
        let mut b = good.clone();
        b[24..40].copy_from_slice(&VCEK_GUID);
        assert!(matches!(CertTable::parse(&b), Err(CertTableError::Duplicate { kind: CertKind::Vcek, .. })));
        // Zero length.
        let mut b = good.clone();
        b[20..24].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(CertTable::parse(&b), Err(CertTableError::EmptyEntry { .. })));
        // Nil GUID with a non-zero offset.
        let mut b = good;
        b[0..16].copy_from_slice(&[0u8; 16]);
        assert_eq!(CertTable::parse(&b), Err(CertTableError::NilGuid));
        assert!(CertTable { entries: vec![CertEntry { kind: CertKind::Other([0; 16]), data: vec![1] }] }
            .encode()
            .is_err());
    }
}
