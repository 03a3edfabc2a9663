//! `coordinator::contrast`: Contrast's documented example becomes Kata initdata that the guest's
//! own parsers accept, with the HOSTDATA / MRCONFIGID a manifest keys on.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use base64::Engine;
use coordinator::contrast::{self, ContrastError, Options, KATA_INITDATA};
use initdata::{Algorithm, Initdata};
use mesh::config::{self, Input, PortPolicy, Sources};
use sha2::{Digest, Sha256, Sha384};
use std::io::{Read, Write};

const EXAMPLE: &str = include_str!("data/contrast-web.yaml");
const FP: &str = "aa00000000000000000000000000000000000000000000000000000000000000";

fn options() -> Options {
    Options {
        coordinator: "coordinator.mesh:8443".into(),
        root_ca_pem: None,
        root_fingerprint: Some(FP.into()),
        algorithm: None,
    }
}

fn docs(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

/// Decodes an annotation the way Kata does, independently of the code under test.
fn kata_decode(annotation: &str) -> String {
    let gz = base64::engine::general_purpose::STANDARD.decode(annotation).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz.as_slice()).read_to_string(&mut text).unwrap();
    text
}

fn guest_config(env: &str) -> config::MeshConfig {
    let sources =
        Sources { env_file: Some(Input { path: "podmesh.env".into(), text: env.into() }), ..Default::default() };
    config::parse(&sources.resolve().unwrap()).unwrap().unwrap()
}

#[test]
fn contrast_docs_example_becomes_attested_initdata() {
    let out = contrast::rewrite(EXAMPLE, &options()).unwrap();
    let names: Vec<_> = out.workloads.iter().map(|w| w.id()).collect();
    assert_eq!(names, ["deployment-web", "shop.deployment-web-legacy"]);

    let rewritten = docs(&out.manifest);
    assert_eq!(rewritten.len(), 4, "every document is kept");
    let web = &rewritten[0];
    let annotation = web["spec"]["template"]["metadata"]["annotations"][KATA_INITDATA].as_str().unwrap();
    let text = kata_decode(annotation);
    assert_eq!(text, out.workloads[0].initdata);
    // HOSTDATA = sha384(document)[..32], MRCONFIGID = all 48 bytes, computed here by hand.
    let digest = Sha384::digest(text.as_bytes());
    assert_eq!(out.workloads[0].host_data, hex::encode(&digest[..32]));
    assert_eq!(out.workloads[0].mrconfigid, hex::encode(digest));

    let init = Initdata::parse(text.as_bytes()).unwrap();
    let env = init.podmesh_env().unwrap();
    assert_eq!(
        env,
        format!("CONTRAST_INGRESS_PROXY_CONFIG=web#8080#false##metrics#7890#true\nPODMESH_COORDINATOR=coordinator.mesh:8443\nPODMESH_COORDINATOR_FINGERPRINT={FP}\n")
    );
    let cfg = guest_config(env);
    assert_eq!(cfg.port_policy(8080), PortPolicy::TlsOnly);
    assert_eq!(cfg.port_policy(7890), PortPolicy::Plaintext);
    assert_eq!(cfg.port_policy(9000), PortPolicy::MutualTls);

    // Annotations on the Deployment itself (older docs): initdata goes on the pod template,
    // where Kata sees it.
    let legacy = &rewritten[2];
    let annotation = legacy["spec"]["template"]["metadata"]["annotations"][KATA_INITDATA].as_str().unwrap();
    let cfg = guest_config(Initdata::parse(kata_decode(annotation).as_bytes()).unwrap().podmesh_env().unwrap());
    assert_eq!(cfg.admin_port, Some(9901));
    assert_eq!(cfg.egress.len(), 1);
    // The Service and the unannotated Pod are unchanged.
    assert_eq!(rewritten[1], docs(EXAMPLE)[1]);
    assert_eq!(rewritten[3], docs(EXAMPLE)[3]);
}

fn pod_with_initdata(annotation: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    {KATA_INITDATA}: \"{annotation}\"\n    contrast.edgeless.systems/servicemesh-ingress: \"web#8080#false\"\n{extra}spec:\n  containers: []\n"
    )
}

fn kata_encode(text: &str) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
}

#[test]
fn existing_coco_initdata_is_merged_not_dropped_and_rewrite_is_idempotent() {
    let coco = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"http://kbs:8080\"\n'''\n\"podmesh.env\" = \"CONTRAST_INGRESS_PROXY_CONFIG=web#8080#true\\n\"\n";
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let opts = Options { root_ca_pem: Some(pem.into()), root_fingerprint: None, ..options() };
    let out = contrast::rewrite(&pod_with_initdata(&kata_encode(coco), ""), &opts).unwrap();
    let w = &out.workloads[0];
    assert_eq!(w.kept_documents, ["aa.toml"]);
    assert_eq!(w.algorithm, "sha256", "the existing document's algorithm is kept");
    let init = Initdata::parse(w.initdata.as_bytes()).unwrap();
    let names: Vec<_> = init.documents().keys().map(String::as_str).collect();
    assert_eq!(names, ["aa.toml", "coordinator-root-ca.pem", "podmesh.env"]);
    assert_eq!(init.documents()["aa.toml"], "[token_configs.kbs]\nurl = \"http://kbs:8080\"\n");
    assert_eq!(init.root_ca_pem(), Some(pem));
    // The annotation's podmesh.env (plaintext 8080) is replaced by the object's annotations.
    assert!(init.podmesh_env().unwrap().contains("web#8080#false"));
    assert_eq!(w.host_data, hex::encode(Sha256::digest(w.initdata.as_bytes())));
    assert_eq!(w.mrconfigid, format!("{}{}", w.host_data, "00".repeat(16)), "sha256 is zero-padded to 48 bytes");

    let again = contrast::rewrite(&out.manifest, &opts).unwrap();
    assert_eq!(again.manifest, out.manifest);
    assert_eq!(again.workloads[0].host_data, w.host_data);

    let forced = contrast::rewrite(&out.manifest, &Options { algorithm: Some(Algorithm::Sha512), ..opts }).unwrap();
    assert_eq!(forced.workloads[0].algorithm, "sha512");
}

#[test]
fn bad_manifests_and_options_get_clear_errors() {
    let err = |yaml: &str, opts: &Options| contrast::rewrite(yaml, opts).unwrap_err();
    // The guest's grammar refuses it, so the host refuses it first.
    let bad = EXAMPLE.replace("web#8080#false##metrics#7890#true\"\n    spec", "web#8080#maybe\"\n    spec");
    let e = err(&bad, &options());
    assert!(
        matches!(&e, ContrastError::Config { object, reason } if object == "Deployment/web" && reason.contains("maybe")),
        "{e}"
    );
    // Object and pod template disagree.
    let both = EXAMPLE.replacen(
        "  name: web\nspec:",
        "  name: web\n  annotations:\n    contrast.edgeless.systems/servicemesh-ingress: \"DISABLED\"\nspec:",
        1,
    );
    assert!(matches!(err(&both, &options()), ContrastError::Conflict { .. }));
    // No trust anchor: refused (an attested pod never trusts on first use).
    let none = Options { root_fingerprint: None, ..options() };
    assert!(matches!(err(EXAMPLE, &none), ContrastError::Trust(_)));
    let short = Options { root_fingerprint: Some("abcd".into()), ..options() };
    assert!(matches!(err(EXAMPLE, &short), ContrastError::Trust(_)));
    let spaced = Options { coordinator: "a b:1".into(), ..options() };
    assert!(matches!(err(EXAMPLE, &spaced), ContrastError::Trust(_)));
    // An env-file injection through the annotation value.
    let inject = EXAMPLE.replace("web#8080#false##metrics#7890#true", "web#8080#false\\nCONTRAST_ADMIN_PORT=1");
    assert!(matches!(err(&inject, &options()), ContrastError::Config { .. }));
    // Non-string annotation, broken existing initdata, broken YAML.
    let number = "kind: Pod\nmetadata:\n  name: p\n  annotations:\n    contrast.edgeless.systems/servicemesh-admin-interface-port: 9901\n";
    assert!(matches!(err(number, &options()), ContrastError::NotString { .. }));
    assert!(matches!(err(&pod_with_initdata("bm90IGd6aXA=", ""), &options()), ContrastError::ExistingInitdata { .. }));
    assert!(matches!(
        err(&pod_with_initdata(&kata_encode("version = 1"), ""), &options()),
        ContrastError::ExistingInitdata { .. }
    ));
    assert!(matches!(err("kind: Pod\nmetadata: [\n", &options()), ContrastError::Yaml(_)));
    let bomb = kata_encode(&"#".repeat(initdata::MAX_INITDATA_BYTES + 10));
    let e = err(&pod_with_initdata(&bomb, ""), &options());
    assert!(e.to_string().contains("limit"), "{e}");
}
