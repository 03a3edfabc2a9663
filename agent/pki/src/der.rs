//! The few DER encodings the claim extensions need (OCTET STRING, UTF8String,
//! BOOLEAN, SEQUENCE), written out so decoding stays strict and small.

pub(crate) const BOOLEAN: u8 = 0x01;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const UTF8_STRING: u8 = 0x0c;
pub(crate) const SEQUENCE: u8 = 0x30;

pub(crate) fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// Splits one TLV off the front of `input`: (tag, value, rest).
pub(crate) fn next_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, rest) = input.split_first().ok_or("empty")?;
    let (&first, rest) = rest.split_first().ok_or("missing length")?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad length");
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        if len < 0x80 || rest[0] == 0 {
            return Err("non-minimal length");
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("truncated");
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Exactly one TLV with the expected tag, nothing after it.
pub(crate) fn expect(input: &[u8], tag: u8) -> Result<&[u8], &'static str> {
    let (t, value, rest) = next_tlv(input)?;
    if t != tag {
        return Err("unexpected tag");
    }
    if !rest.is_empty() {
        return Err("trailing bytes");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_short_and_long_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let value = vec![7u8; len];
            let enc = tlv(OCTET_STRING, &value);
            assert_eq!(expect(&enc, OCTET_STRING).unwrap(), &value[..]);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(expect(&[], OCTET_STRING).is_err());
        assert!(expect(&[0x04], OCTET_STRING).is_err());
        assert!(expect(&[0x04, 0x05, 1], OCTET_STRING).is_err());
        assert!(expect(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5], OCTET_STRING).is_err());
        assert!(expect(&[0x04, 0x01, 1, 9], OCTET_STRING).is_err());
        assert!(expect(&[0x0c, 0x01, 1], OCTET_STRING).is_err());
        assert!(expect(&[0x04, 0x85, 1, 1, 1, 1, 1], OCTET_STRING).is_err());
    }
}
