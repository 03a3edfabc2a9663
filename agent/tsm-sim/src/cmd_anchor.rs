//! `tsm-sim anchor`: export the simulated trust anchor a coordinator is told to trust.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::signer_args::Tee;
use tsm_sim::signer::TdxProvider;
use tsm_sim::snp_chain::{Product, SimAmdChain};
use tsm_sim::tdx_quote::TdxLaunch;

#[derive(Args, Debug)]
pub struct AnchorArgs {
    /// Which simulated PKI to export.
    #[arg(long, value_enum, default_value = "snp")]
    pub tee: Tee,
    /// State directory holding the simulated chain (created on first use).
    #[arg(long)]
    pub state: PathBuf,
    /// Output directory for ark.pem, ask.pem and cert_chain.pem.
    #[arg(long)]
    pub out: PathBuf,
    /// AMD product the chain simulates.
    #[arg(long, default_value = "genoa")]
    pub product: Product,
}

pub fn anchor(a: AnchorArgs) -> anyhow::Result<()> {
    if a.tee == Tee::Tdx {
        let launch = TdxLaunch::default();
        let tdx = TdxProvider::new(&a.state, launch.clone())
            .with_context(|| format!("loading the simulated TDX keys from {}", a.state.display()))?;
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        let files = [
            ("intel_root.der", tdx.keys().root_der().to_vec()),
            ("intel_root.pem", tsm_sim::x509_build::pem_cert(tdx.keys().root_der()).into_bytes()),
            ("collateral.json", tdx.keys().collateral_json(&launch)?.into_bytes()),
        ];
        for (name, data) in files {
            let path = a.out.join(name);
            std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
            println!("{}", path.display());
        }
        return Ok(());
    }
    let chain = SimAmdChain::load_or_create(&a.state, a.product)
        .with_context(|| format!("loading the simulated AMD chain from {}", a.state.display()))?;
    for path in chain.export_anchor(&a.out)? {
        println!("{}", path.display());
    }
    Ok(())
}
