//! `tsm-sim evidence`: one report for given report data, written to files (no FUSE).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::signer_args::{hex_array, SignerArgs, Tee};

#[derive(Args, Debug)]
pub struct EvidenceArgs {
    #[command(flatten)]
    pub signer: SignerArgs,
    /// The 64 bytes of report data (hex).
    #[arg(long, value_parser = hex_array::<64>)]
    pub report_data: [u8; 64],
    /// SNP privilege level (VMPL) to report.
    #[arg(long, default_value_t = 0)]
    pub privlevel: u32,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn evidence(a: EvidenceArgs) -> anyhow::Result<()> {
    let provider = a.signer.provider()?;
    if let Some(floor) = provider.privlevel_floor() {
        if a.privlevel < floor || a.privlevel > 3 {
            bail!("--privlevel {} is outside privlevel_floor {floor}..=3", a.privlevel);
        }
    }
    let ev = provider.generate(&a.report_data, a.privlevel)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let write = |name: &str, data: &[u8]| -> anyhow::Result<()> {
        let path = a.out.join(name);
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
        Ok(())
    };
    match a.signer.tee {
        Tee::Snp => {
            write("report.bin", &ev.outblob)?;
            if !ev.auxblob.is_empty() {
                write("auxblob.bin", &ev.auxblob)?;
                let table = tee::certtable::CertTable::parse(&ev.auxblob)?;
                if let Some(vcek) = table.get(tee::certtable::CertKind::Vcek) {
                    write("vcek.der", vcek)?;
                }
            }
        }
        Tee::Tdx => write("quote.bin", &ev.outblob)?,
    }
    Ok(())
}
