//! The signer options shared by `tsm-sim mount` and `tsm-sim evidence`: which TEE, the
//! simulated launch values, and their hex parsers.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use tsm_sim::signer::{Provider, SnpProvider, TdxProvider};
use tsm_sim::snp_chain::{Product, SimAmdChain, TcbVersion};
use tsm_sim::snp_report::SnpLaunch;
use tsm_sim::tdx_quote::TdxLaunch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tee {
    Snp,
    Tdx,
}

#[derive(Args, Debug)]
pub struct SignerArgs {
    /// Which TEE to simulate: snp (provider sev_guest) or tdx (provider tdx_guest).
    #[arg(long, value_enum)]
    pub tee: Tee,
    /// State directory for the simulated keys (kept across restarts: the trust anchor).
    #[arg(long)]
    pub state: PathBuf,
    /// SNP: AMD product (milan, genoa or turin).
    #[arg(long, default_value = "genoa")]
    pub product: Product,
    /// SNP: launch MEASUREMENT (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    pub measurement: Option<[u8; 48]>,
    /// SNP: HOST_DATA (32 bytes hex).
    #[arg(long, value_parser = hex_array::<32>)]
    pub host_data: Option<[u8; 32]>,
    /// SNP: guest POLICY (hex u64, e.g. 0x30000; bit 19 = debug).
    #[arg(long, value_parser = hex_u64)]
    pub policy: Option<u64>,
    /// SNP: reported (and current) TCB: bl=N,tee=N,snp=N,ucode=N[,fmc=N] or a hex TCB_VERSION (Milan/Genoa layout).
    #[arg(long)]
    pub tcb: Option<TcbVersion>,
    /// SNP: committed TCB (defaults to --tcb).
    #[arg(long)]
    pub committed_tcb: Option<TcbVersion>,
    /// SNP: launch TCB (defaults to --tcb).
    #[arg(long)]
    pub launch_tcb: Option<TcbVersion>,
    /// SNP: GUEST_SVN.
    #[arg(long)]
    pub guest_svn: Option<u32>,
    /// SNP: FAMILY_ID (16 bytes hex).
    #[arg(long, value_parser = hex_array::<16>)]
    pub family_id: Option<[u8; 16]>,
    /// SNP: IMAGE_ID (16 bytes hex).
    #[arg(long, value_parser = hex_array::<16>)]
    pub image_id: Option<[u8; 16]>,
    /// SNP: privlevel_floor, the VMPL the guest runs at (0..3).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=3))]
    pub vmpl_floor: u32,
    /// SNP: the host supplies no certificates (empty auxblob).
    #[arg(long)]
    pub no_certs: bool,
    /// TDX: MRTD (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    pub mrtd: Option<[u8; 48]>,
    /// TDX: RTMR0 (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    pub rtmr0: Option<[u8; 48]>,
    /// TDX: RTMR1 (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    pub rtmr1: Option<[u8; 48]>,
    /// TDX: RTMR2 (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    pub rtmr2: Option<[u8; 48]>,
    /// TDX: RTMR3 (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    pub rtmr3: Option<[u8; 48]>,
    /// TDX: MRCONFIGID (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    pub mrconfigid: Option<[u8; 48]>,
    /// TDX: MROWNER (48 bytes hex).
    #[arg(long, value_parser = hex_array::<48>)]
    pub mrowner: Option<[u8; 48]>,
    /// TDX: TD ATTRIBUTES (hex u64; bit 0 = debug).
    #[arg(long, value_parser = hex_u64)]
    pub td_attributes: Option<u64>,
    /// CoCo initdata file: HOSTDATA (snp) / MRCONFIGID (tdx) become its launch value, the digest
    /// truncated or zero-padded as Kata's runtime sets it (see the `initdata` crate).
    #[arg(long, conflicts_with_all = ["host_data", "mrconfigid"])]
    pub initdata: Option<PathBuf>,
}

/// Fixed-length hex (optional 0x prefix); the error names the expected length.
pub fn hex_array<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| format!("expected {N} bytes ({} hex digits), got {len} bytes", N * 2))
}

pub fn hex_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u64::from_str_radix(t, 16).map_err(|e| format!("{s:?} is not a hex u64: {e}"))
}

impl SignerArgs {
    pub fn snp_launch(&self) -> SnpLaunch {
        let mut l = SnpLaunch::default();
        if let Some(v) = self.measurement {
            l.measurement = v;
        }
        if let Some(v) = self.host_data {
            l.host_data = v;
        }
        if let Some(v) = self.policy {
            l.policy = v;
        }
        if let Some(v) = self.tcb {
            l.reported_tcb = v;
            l.committed_tcb = v;
            l.launch_tcb = v;
        }
        if let Some(v) = self.committed_tcb {
            l.committed_tcb = v;
        }
        if let Some(v) = self.launch_tcb {
            l.launch_tcb = v;
        }
        if let Some(v) = self.guest_svn {
            l.guest_svn = v;
        }
        if let Some(v) = self.family_id {
            l.family_id = v;
        }
        if let Some(v) = self.image_id {
            l.image_id = v;
        }
        l
    }

    pub fn tdx_launch(&self) -> TdxLaunch {
        let mut l = TdxLaunch::default();
        let set = |dst: &mut [u8; 48], v: Option<[u8; 48]>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut l.mr_td, self.mrtd);
        set(&mut l.rtmr[0], self.rtmr0);
        set(&mut l.rtmr[1], self.rtmr1);
        set(&mut l.rtmr[2], self.rtmr2);
        set(&mut l.rtmr[3], self.rtmr3);
        set(&mut l.mr_config_id, self.mrconfigid);
        set(&mut l.mr_owner, self.mrowner);
        if let Some(v) = self.td_attributes {
            l.td_attributes = v;
        }
        l
    }

    /// The `--initdata` launch value for `field`, if given.
    fn initdata_value(&self, field: initdata::Field) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = &self.initdata else { return Ok(None) };
        let bytes = std::fs::read(path).with_context(|| format!("reading --initdata {}", path.display()))?;
        let init = initdata::Initdata::parse(&bytes).with_context(|| format!("--initdata {}", path.display()))?;
        Ok(Some(init.launch_value(field)))
    }

    pub fn provider(&self) -> anyhow::Result<Arc<dyn Provider>> {
        Ok(match self.tee {
            Tee::Snp => {
                let chain = SimAmdChain::load_or_create(&self.state, self.product)
                    .with_context(|| format!("loading the simulated AMD chain from {}", self.state.display()))?;
                let mut launch = self.snp_launch();
                if let Some(v) = self.initdata_value(initdata::Field::SnpHostData)? {
                    launch.host_data.copy_from_slice(&v);
                }
                Arc::new(SnpProvider::new(chain, launch, !self.no_certs, self.vmpl_floor)?)
            }
            Tee::Tdx => {
                let mut launch = self.tdx_launch();
                if let Some(v) = self.initdata_value(initdata::Field::TdxMrConfigId)? {
                    launch.mr_config_id.copy_from_slice(&v);
                }
                Arc::new(
                    TdxProvider::new(&self.state, launch)
                        .with_context(|| format!("loading the simulated TDX keys from {}", self.state.display()))?,
                )
            }
        })
    }
}
