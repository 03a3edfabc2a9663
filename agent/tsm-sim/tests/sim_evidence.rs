//! The simulated signers through E2's production verifier, without FUSE (runs unprivileged):
//! both products verify with their own simulated anchor and nothing else.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use tee::snp::{AmdRoots, Product as TeeProduct};
use tee::{Evidence, TrustConfig};
use tsm_sim::signer::{Provider as _, SnpProvider};
use tsm_sim::snp_chain::{Product, SimAmdChain, TcbVersion};
use tsm_sim::snp_report::SnpLaunch;

fn roots(chain: &SimAmdChain, product: TeeProduct) -> AmdRoots {
    AmdRoots { product, ark: chain.ark_der().to_vec(), ask: chain.ask_der().to_vec(), asvk: None }
}

fn provider(product: Product, launch: SnpLaunch, with_certs: bool) -> SnpProvider {
    let chain = SimAmdChain::load_or_create(&common::shared_state(), product).expect("sim chain");
    SnpProvider::new(chain, launch, with_certs, 0).expect("provider")
}

#[test]
fn milan_and_genoa_verify_with_their_own_anchor_only() {
    let now = time::OffsetDateTime::now_utc();
    let milan = provider(Product::Milan, SnpLaunch::default(), true);
    let genoa = provider(Product::Genoa, SnpLaunch::default(), true);
    let milan_roots = roots(milan.chain(), TeeProduct::Milan);
    let genoa_roots = roots(genoa.chain(), TeeProduct::Genoa);
    for (p, product_name, own, other) in
        [(&milan, "Milan", &milan_roots, &genoa_roots), (&genoa, "Genoa", &genoa_roots, &milan_roots)]
    {
        let ev = p.generate(&[0x11; 64], 0).unwrap();
        let evidence = Evidence::Snp { report: ev.outblob, vek: None, cert_table: Some(ev.auxblob) };
        let ok = tee::verify(
            &evidence,
            &TrustConfig::production().unwrap().with_simulated_anchors(vec![own.clone()], None),
            now,
        )
        .unwrap_or_else(|e| panic!("{product_name}: {e}"));
        assert_eq!(ok.product, product_name);
        assert!(ok.simulated);
        let wrong = TrustConfig::production().unwrap().with_simulated_anchors(vec![other.clone()], None);
        assert!(tee::verify(&evidence, &wrong, now).is_err(), "{product_name} report under the other product's anchor");
        assert!(
            tee::verify(&evidence, &TrustConfig::production().unwrap(), now).is_err(),
            "{product_name}: real AMD roots"
        );
    }
}

#[test]
fn turin_reports_carry_an_eight_byte_chip_id_and_verify() {
    let now = time::OffsetDateTime::now_utc();
    let tcb: TcbVersion = "fmc=1,bl=2,tee=0,snp=3,ucode=71".parse().unwrap();
    let launch = SnpLaunch { reported_tcb: tcb, committed_tcb: tcb, launch_tcb: tcb, ..Default::default() };
    let p = provider(Product::Turin, launch, true);
    let chip = p.chain().chip_id();
    assert!(chip[..8].iter().any(|b| *b != 0) && chip[8..].iter().all(|b| *b == 0), "Turin hwID is 8 bytes");
    let ev = p.generate(&[0x33; 64], 0).unwrap();
    let evidence = Evidence::Snp { report: ev.outblob, vek: None, cert_table: Some(ev.auxblob) };
    let trust =
        TrustConfig::production().unwrap().with_simulated_anchors(vec![roots(p.chain(), TeeProduct::Turin)], None);
    let claims = tee::verify(&evidence, &trust, now).expect("Turin verifies with its simulated anchor");
    assert_eq!(claims.product, "Turin");
    assert!(claims.tcb.human.contains("fmc=1") && claims.tcb.human.contains("ucode=71"), "{:?}", claims.tcb);
}

#[test]
fn vcek_passed_separately_when_the_host_supplies_no_certificates() {
    let now = time::OffsetDateTime::now_utc();
    let tcb: TcbVersion = "bl=4,tee=0,snp=21,ucode=210".parse().unwrap();
    let launch =
        SnpLaunch { reported_tcb: tcb, committed_tcb: tcb, launch_tcb: tcb, policy: 0x3_0000, ..Default::default() };
    let p = provider(Product::Genoa, launch, false);
    let ev = p.generate(&[0x22; 64], 0).unwrap();
    assert!(ev.auxblob.is_empty(), "--no-certs: empty auxblob");
    let trust =
        TrustConfig::production().unwrap().with_simulated_anchors(vec![roots(p.chain(), TeeProduct::Genoa)], None);
    let missing = Evidence::Snp { report: ev.outblob.clone(), vek: None, cert_table: None };
    assert!(tee::verify(&missing, &trust, now).is_err(), "no VCEK anywhere");
    // The verifier fetched the VCEK for this TCB (what AMD KDS would serve).
    let vcek = p.chain().issue_vcek(tcb).unwrap();
    let claims =
        tee::verify(&Evidence::Snp { report: ev.outblob.clone(), vek: Some(vcek), cert_table: None }, &trust, now)
            .expect("verifies with the VCEK passed explicitly");
    assert!(claims.tcb.human.contains("ucode=210"), "{:?}", claims.tcb);
    // A VCEK for another TCB is refused (TCB binding), as with real hardware.
    let stale = p.chain().issue_vcek(TcbVersion { microcode: 209, ..tcb }).unwrap();
    assert!(
        tee::verify(&Evidence::Snp { report: ev.outblob, vek: Some(stale), cert_table: None }, &trust, now).is_err()
    );
}
