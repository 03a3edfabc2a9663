use super::*;
use proptest::prelude::*;

const EXAMPLE: &[u8] = include_bytes!("../testdata/coco-example.toml");
// `sha384sum testdata/coco-example.toml` (and sha256sum, sha512sum): computed outside this code.
const EXAMPLE_SHA384: &str =
    "706adce0ad73ecf65a247395e1abbc73cb171e9bb9a564fbfbde169f198d11da3405636af1e890e5b29028e13bde0922";
const EXAMPLE_SHA256: &str = "b450f9e6ca1a0d7776fd09b37e8848a0423fb362526bb299891ceb29d460f3e2";
const EXAMPLE_SHA512: &str = "a1106f1e13424ffb1f828cae118f1dc4b949c5f4f79548f47669c7fca89094a06e70d7d64709dfcf44ffde104d19938d63226c764d91d4affde87e6714a80662";

fn with_algorithm(algorithm: &str) -> Vec<u8> {
    String::from_utf8(EXAMPLE.to_vec()).unwrap().replace("\"sha384\"", &format!("\"{algorithm}\"")).into_bytes()
}

#[test]
fn coco_example_digest_and_documents() {
    let init = Initdata::parse(EXAMPLE).unwrap();
    assert_eq!(init.algorithm(), Algorithm::Sha384);
    assert_eq!(hex::encode(init.digest()), EXAMPLE_SHA384);
    // SNP: the first 32 bytes; TDX: all 48.
    assert_eq!(hex::encode(init.launch_value(Field::SnpHostData)), EXAMPLE_SHA384[..64]);
    assert_eq!(hex::encode(init.launch_value(Field::TdxMrConfigId)), EXAMPLE_SHA384);
    assert_eq!(
        init.podmesh_env(),
        Some("CONTRAST_INGRESS_PROXY_CONFIG=web#8080#false##metrics#7890#true\nPODMESH_COORDINATOR=10.0.2.2:8443\n")
    );
    assert_eq!(init.root_ca_pem(), None);
    // CoCo's own documents are kept, not rejected.
    assert!(init.documents().contains_key("aa.toml") && init.documents().contains_key("policy.rego"));
}

#[test]
fn truncation_and_zero_padding_per_algorithm() {
    let sha256 = Initdata::parse(&with_algorithm("sha256")).unwrap();
    // The digest is over the bytes as delivered, so changing the algorithm name changes them:
    // recompute the expected values from those bytes with the named algorithm.
    let expect256 = Sha256::digest(with_algorithm("sha256")).to_vec();
    assert_eq!(sha256.launch_value(Field::SnpHostData), expect256);
    let mrconfigid = sha256.launch_value(Field::TdxMrConfigId);
    assert_eq!(&mrconfigid[..32], &expect256[..]);
    assert_eq!(&mrconfigid[32..], &[0u8; 16]);

    let sha512 = Initdata::parse(&with_algorithm("sha512")).unwrap();
    let expect512 = Sha512::digest(with_algorithm("sha512")).to_vec();
    assert_eq!(sha512.launch_value(Field::SnpHostData), expect512[..32]);
    assert_eq!(sha512.launch_value(Field::TdxMrConfigId), expect512[..48]);
}

#[test]
fn digest_vectors_match_coreutils() {
    // Same bytes, every algorithm: Algorithm::digest against sha*sum.
    assert_eq!(hex::encode(Algorithm::Sha256.digest(EXAMPLE)), EXAMPLE_SHA256);
    assert_eq!(hex::encode(Algorithm::Sha384.digest(EXAMPLE)), EXAMPLE_SHA384);
    assert_eq!(hex::encode(Algorithm::Sha512.digest(EXAMPLE)), EXAMPLE_SHA512);
}

#[test]
fn cloud_api_adaptor_base64_form_digests_the_decoded_document() {
    use base64::Engine;
    let mut b64 = base64::engine::general_purpose::STANDARD.encode(EXAMPLE);
    b64.push('\n');
    let init = Initdata::parse(b64.as_bytes()).unwrap();
    assert_eq!(init, Initdata::parse(EXAMPLE).unwrap());
    assert_eq!(hex::encode(init.digest()), EXAMPLE_SHA384);
}

#[test]
fn matches_compares_the_launch_value() {
    let init = Initdata::parse(EXAMPLE).unwrap();
    let hostdata = hex::decode(&EXAMPLE_SHA384[..64]).unwrap();
    assert!(init.matches(Field::SnpHostData, &hostdata));
    let mut other = hostdata.clone();
    other[31] ^= 1;
    assert!(!init.matches(Field::SnpHostData, &other));
    assert!(!init.matches(Field::TdxMrConfigId, &hostdata), "a 32-byte value is not a 48-byte MRCONFIGID");
    // One changed byte in the document (a lying host flips #false to #true) changes the digest.
    let flipped = String::from_utf8(EXAMPLE.to_vec()).unwrap().replace("8080#false", "8080#true").into_bytes();
    assert!(!Initdata::parse(&flipped).unwrap().matches(Field::SnpHostData, &hostdata));
}

fn err(input: &[u8]) -> InitdataError {
    Initdata::parse(input).unwrap_err()
}

#[test]
fn bad_input_gets_a_clear_error() {
    let e = err(b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data\n");
    assert!(matches!(&e, InitdataError::Toml(m) if m.contains("at byte")), "{e}");
    assert_eq!(err(b"version = \"0.1.0\"\nalgorithm = \"md5\"\n[data]\n"), InitdataError::Algorithm("md5".into()));
    assert_eq!(err(b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n"), InitdataError::Missing("[data]"));
    assert_eq!(err(b"algorithm = \"sha384\"\n[data]\n"), InitdataError::Missing("version"));
    assert_eq!(err(b"version = \"0.1.0\"\n[data]\n"), InitdataError::Missing("algorithm"));
    assert_eq!(err(b"version = \"0.2.0\"\nalgorithm = \"sha384\"\n[data]\n"), InitdataError::Version("0.2.0".into()));
    assert_eq!(err(b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\xff = 1\n"), InitdataError::NotUtf8);
    let e = err(b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"podmesh.env\" = 5\n");
    assert!(matches!(e, InitdataError::Toml(_)), "a document that is not a string: {e}");
    let e = err(b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\na = \"1\"\na = \"2\"\n");
    assert!(matches!(e, InitdataError::Toml(_)), "a duplicate document: {e}");
    assert!(matches!(err(b"AAAA*"), InitdataError::Toml(_)));
    assert!(matches!(err(b"QUJD=A"), InitdataError::Base64(_)));
    assert!(matches!(err(b""), InitdataError::Missing("version")));
    // The error text is one line (it goes into one journal line).
    for e in [err(b"[data\n"), err(b"x = \n")] {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn huge_input_is_refused_before_parsing() {
    let huge_doc = format!(
        "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"podmesh.env\" = \"{}\"\n",
        "A".repeat(MAX_PODMESH_DOCUMENT_BYTES + 1)
    );
    assert_eq!(
        err(huge_doc.as_bytes()),
        InitdataError::DocumentTooLarge {
            name: PODMESH_ENV.into(),
            size: MAX_PODMESH_DOCUMENT_BYTES + 1,
            max: MAX_PODMESH_DOCUMENT_BYTES
        }
    );
    // The same size in another document is fine (CoCo's policy.rego is large).
    Initdata::parse(huge_doc.replace("podmesh.env", "policy.rego").as_bytes()).unwrap();
    let huge = vec![b'#'; MAX_INITDATA_BYTES + 1];
    assert!(matches!(Initdata::parse_toml(&huge), Err(InitdataError::TooLarge { .. })));
    let huge = vec![b'A'; MAX_INITDATA_BYTES * 2];
    assert!(matches!(err(&huge), InitdataError::TooLarge { .. }));
    // Deep nesting is a TOML error, not a stack overflow.
    let deep = format!(
        "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nx = {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(err(deep.as_bytes()), InitdataError::Toml(_)));
}

#[test]
fn build_writes_what_parse_reads() {
    let mut docs = BTreeMap::new();
    docs.insert(PODMESH_ENV.to_owned(), "CONTRAST_INGRESS_PROXY_CONFIG=web#8080#false\n".to_owned());
    docs.insert(ROOT_CA_PEM.to_owned(), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned());
    let text = build(Algorithm::Sha384, &docs);
    assert!(text.starts_with("version = \"0.1.0\"\nalgorithm = \"sha384\"\n"), "{text}");
    let init = Initdata::parse(text.as_bytes()).unwrap();
    assert_eq!(init.documents(), &docs);
    assert_eq!(init.digest(), Sha384::digest(text.as_bytes()).as_slice());
}

proptest! {
    #[test]
    fn build_round_trips_any_documents(docs in proptest::collection::btree_map(".{0,20}", "(?s).{0,200}", 0..5)) {
        let text = build(Algorithm::Sha256, &docs);
        let init = Initdata::parse_toml(text.as_bytes()).unwrap();
        prop_assert_eq!(init.documents(), &docs);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Initdata::parse(&bytes);
    }
}
