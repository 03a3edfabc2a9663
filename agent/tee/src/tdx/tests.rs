//! Unit tests for collateral JSON handling; real quotes are tested in `tests/tdx_vectors.rs`.

use super::*;

#[test]
fn signed_object_keeps_the_exact_text_including_nested_braces_and_escapes() {
    let text = r#"{"tcbInfo":{"a":"x}\"{","b":{"c":[1,2]}},"signature":"0a0b"}"#;
    let (obj, sig) = signed_object("t", text, "tcbInfo").unwrap();
    assert_eq!(obj, r#"{"a":"x}\"{","b":{"c":[1,2]}}"#);
    assert_eq!(sig, vec![0x0a, 0x0b]);
}

#[test]
fn signed_object_errors_name_the_problem() {
    assert!(matches!(signed_object("t", "{}", "tcbInfo"), Err(TdxError::BadCollateral { .. })));
    assert!(matches!(signed_object("t", r#"{"signature":"zz","tcbInfo":{}}"#, "tcbInfo"), Err(TdxError::BadCollateral { .. })));
    assert!(matches!(signed_object("t", r#"{"signature":"00","other":{}}"#, "tcbInfo"), Err(TdxError::BadCollateral { .. })));
}

#[test]
fn dcap_errors_are_classified() {
    assert!(matches!(classify("No matching TCB level found".into()), TdxError::TcbLevelNotFound));
    assert!(matches!(classify("Failed to verify certificate chain: CertNotValidYet".into()), TdxError::CertificateExpired(_)));
    assert!(matches!(classify("ISV report signature is invalid".into()), TdxError::BadSignature(_)));
    assert!(matches!(classify("PCK certificate is revoked".into()), TdxError::Revoked(_)));
    assert!(matches!(classify("something else".into()), TdxError::Verification(_)));
}
