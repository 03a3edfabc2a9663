//! The CLI vocabulary of every `podmesh` subcommand: one parser each for durations, on/off and
//! numbers, and the options several subcommands share (tls dir, network namespace, the
//! configuration sources).
//!
//! One rule for durations: `500ms`, `10s`, `5m`, `1h` or plain seconds, and never zero. A zero
//! timeout fails every request, a zero interval or backoff busy-loops: none of them is a
//! useful way to say "off", so `0s` is refused with the same message everywhere.

use crate::initdata_check::{self, InitdataCheckError, Verified};
use mesh::config::{self, ConfigError, MeshConfig, Resolved, Sources};
use std::{fmt, path::PathBuf, str::FromStr, time::Duration};
use tsm::TsmClient;

/// A duration flag (see the module docs for the rule). `Display` prints what `FromStr` reads,
/// so clap defaults come from the same constants as the library's `Default`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let bad = || format!("{raw:?} is not a duration (e.g. 500ms, 10s, 5m, 1h)");
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(format!("{raw:?}: unknown unit {unit:?} (use ms, s, m or h)")),
        };
        if d.is_zero() {
            return Err(format!("{raw:?}: must be greater than zero"));
        }
        Ok(Dur(d))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        match (d.subsec_millis(), d.as_secs()) {
            (0, s) if s % 3600 == 0 && s > 0 => write!(f, "{}h", s / 3600),
            (0, s) if s % 60 == 0 && s > 0 => write!(f, "{}m", s / 60),
            (0, s) => write!(f, "{s}s"),
            _ => write!(f, "{}ms", d.as_millis()),
        }
    }
}

/// A 32-bit number, decimal or `0x`-hex (marks, routing tables).
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a 32-bit number (decimal or 0x-hex): {e}"))
}

/// `on|true|yes|1` → true, `off|false|no|0` → false (any case), anything else → `None`.
/// The words of kernel command line flags and of on/off options.
pub fn on_off(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// [`on_off`] as a clap value parser.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    on_off(s).ok_or_else(|| format!("{s:?} is neither on nor off"))
}

/// The tls dir, shared by `attest` (writer), `proxy` and `status` (readers).
#[derive(clap::Args, Debug, Clone)]
pub struct TlsDirArg {
    /// Directory of mesh-ca.pem, certChain.pem, key.pem and coordinator-root-ca.pem
    #[arg(long = "tls-dir", env = "PODMESH_TLS_DIR", default_value = mesh::tls_dir::DEFAULT_DIR, value_name = "DIR")]
    pub path: PathBuf,
}

/// The pod's network namespace, honoured by every subcommand that touches rules.
#[derive(clap::Args, Debug, Clone)]
pub struct NetnsArg {
    /// Named network namespace (`ip netns`) of the pod, e.g. `podns` on peer-pod images;
    /// default: our own
    #[arg(long = "netns", global = true, value_name = "NAME", env = "PODMESH_NETNS")]
    pub name: Option<String>,
}

/// Where the configuration comes from: the one loader of `attest`, `proxy` and `config check`.
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Also read settings from FILE (systemd EnvironmentFile syntax). Precedence per setting:
    /// flag > process environment > env-file > kernel command line.
    #[arg(long, value_name = "FILE", env = "PODMESH_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Kernel command line to read podmesh.* settings from.
    #[arg(long, value_name = "FILE", default_value = config::PROC_CMDLINE, alias = "kernel-cmdline")]
    pub cmdline: PathBuf,
    /// CoCo initdata [podmesh.initdata=; default: where kata-agent or the cloud-api-adaptor
    /// put it]. When present its digest must be the report's HOSTDATA / MRCONFIGID, and the
    /// mesh and coordinator settings then come only from it and the kernel command line.
    #[arg(long, value_name = "FILE", env = "PODMESH_INITDATA")]
    pub initdata: Option<PathBuf>,
    /// configfs-tsm mount point (the fresh report initdata is checked against)
    #[arg(long, env = "PODMESH_TSM_ROOT", default_value = tsm::DEFAULT_ROOT, value_name = "DIR")]
    pub tsm_root: PathBuf,
}

/// Loading failed: the configuration is invalid, or initdata is present and not confirmed by
/// the report (then the caller logs [`LoadError::event`] and exits 78; the deny table stays).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Initdata(#[from] InitdataCheckError),
}

impl LoadError {
    /// The journal event for this failure.
    pub fn event(&self) -> &'static str {
        match self {
            LoadError::Config(_) => "config_invalid",
            LoadError::Initdata(_) => "initdata_mismatch",
        }
    }
}

/// Every source read once, and the mesh configuration they give.
pub struct Loaded {
    pub sources: Sources,
    pub resolved: Resolved,
    /// `None`: no mesh configured (then `podmesh attest` opens the pod, else the proxy does).
    pub mesh: Option<MeshConfig>,
    /// Attested mode: the initdata the report confirmed.
    pub attested: Option<Verified>,
}

impl SourceArgs {
    /// Reads and parses everything; an invalid mesh configuration is an error (nobody may open
    /// the pod on a configuration nobody understood).
    pub fn load(&self) -> Result<Loaded, LoadError> {
        let mut sources = Sources::system(self.env_file.as_deref(), Some(&self.cmdline))?;
        let params = sources.cmdline.as_ref().map(|c| config::parse_cmdline(&c.text)).unwrap_or_default();
        let attested = match initdata_check::locate(self.initdata.as_deref(), &params) {
            Some(path) => Some(initdata_check::verify(&path, &TsmClient::new(&self.tsm_root), None)?),
            None => None,
        };
        if let Some(v) = &attested {
            let env = v.initdata.podmesh_env().unwrap_or_default().to_owned();
            sources.attested = Some(config::Input { path: v.path.clone(), text: env });
        }
        let resolved = sources.resolve()?;
        let mesh = config::parse(&resolved)?;
        Ok(Loaded { sources, resolved, mesh, attested })
    }
}

impl Loaded {
    /// Logs the resolver's warnings (precedence conflicts, legacy names).
    pub fn log_warnings(&self) {
        for w in &self.resolved.warnings {
            tracing::warn!(PODMESH_EVENT = "config_warning", "{w}");
        }
        if let Some(v) = &self.attested {
            tracing::info!(
                PODMESH_EVENT = "initdata_verified",
                PODMESH_INITDATA_DIGEST = %v.digest_hex,
                "initdata {} matches the report's {} {}: attested configuration",
                v.path.display(), v.field.name(), v.digest_hex
            );
        }
        let ignored = self.sources.ignored_podmesh_values().unwrap_or_default();
        for line in self.resolved.ignored.iter().chain(&ignored) {
            tracing::warn!(PODMESH_EVENT = "unattested_setting_ignored", "{line}");
        }
    }

    /// Attested mode: a daemon setting from clap (`--flag` or its environment variable `var`)
    /// counts only when the environment did not supply it; else it is ignored with a warning.
    pub fn attested_arg<T>(&self, value: Option<T>, var: &str) -> Option<T> {
        if self.attested.is_some() && value.is_some() && std::env::var_os(var).is_some() {
            tracing::warn!(
                PODMESH_EVENT = "unattested_setting_ignored",
                "{var} from environment is ignored: not attested (initdata is present)"
            );
            return None;
        }
        value
    }

    /// A daemon setting from the env-file or the kernel command line (flags and the process
    /// environment come first, through clap); empty values count as unset.
    pub fn value(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.sources.podmesh_value(key)?.map(|(v, _)| v).filter(|v| !v.is_empty()))
    }

    /// A flag-like setting: `key`, or `key=on|true|yes|1` (off, false, no, 0: unset).
    pub fn flag(&self, key: &str) -> Result<bool, ConfigError> {
        Ok(self.sources.podmesh_value(key)?.is_some_and(|(v, _)| v.is_empty() || on_off(&v) == Some(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, String> {
        s.parse::<Dur>().map(|d| d.0)
    }

    #[test]
    fn durations_parse_or_explain_and_zero_is_refused() {
        assert_eq!(dur("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(dur("10"), Ok(Duration::from_secs(10)));
        assert_eq!(dur(" 3s "), Ok(Duration::from_secs(3)));
        assert_eq!(dur("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(dur("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "10x", "-1s", "1.5s", "99999999999999999999999s"] {
            assert!(dur(bad).unwrap_err().contains("duration") || dur(bad).unwrap_err().contains("unit"), "{bad:?}");
        }
        for zero in ["0", "0s", "0ms", "0m", "0h"] {
            assert!(dur(zero).unwrap_err().contains("greater than zero"), "{zero:?}");
        }
    }

    #[test]
    fn durations_print_what_they_parse() {
        for d in [
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_secs(90),
            Duration::from_secs(120),
            Duration::from_secs(7200),
            Duration::from_millis(1500),
        ] {
            assert_eq!(dur(&Dur(d).to_string()), Ok(d), "{}", Dur(d));
        }
        assert_eq!(Dur(Duration::from_secs(3600)).to_string(), "1h");
    }

    #[test]
    fn numbers_and_on_off() {
        assert_eq!(parse_u32("0x1"), Ok(1));
        assert_eq!(parse_u32("100"), Ok(100));
        for bad in ["", "0x", "0xg", "-1", "4294967296"] {
            assert!(parse_u32(bad).is_err(), "{bad:?}");
        }
        assert_eq!((parse_on_off("on"), parse_on_off("OFF"), parse_on_off("false")), (Ok(true), Ok(false), Ok(false)));
        assert!(parse_on_off("maybe").unwrap_err().contains("neither on nor off"));
    }

    #[test]
    fn daemon_settings_come_from_the_env_file_before_the_kernel_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let (env_file, cmdline) = (dir.path().join("podmesh.env"), dir.path().join("cmdline"));
        std::fs::write(&env_file, "PODMESH_COORDINATOR=file:1\nPODMESH_OPEN_WITHOUT_COORDINATOR=off\n").unwrap();
        std::fs::write(
            &cmdline,
            "podmesh.coordinator=cmd:2 podmesh.open_without_coordinator podmesh.coordinator_fingerprint=ab\n",
        )
        .unwrap();
        let loaded = SourceArgs {
            env_file: Some(env_file.clone()),
            cmdline: cmdline.clone(),
            initdata: None,
            tsm_root: "/nonexistent".into(),
        }
        .load()
        .unwrap();
        assert_eq!(loaded.value("coordinator").unwrap().as_deref(), Some("file:1"));
        assert_eq!(loaded.value("coordinator_fingerprint").unwrap().as_deref(), Some("ab"));
        assert!(!loaded.flag("open_without_coordinator").unwrap(), "the env-file's off wins");
        let loaded =
            SourceArgs { env_file: None, cmdline, initdata: None, tsm_root: "/nonexistent".into() }.load().unwrap();
        assert!(loaded.flag("open_without_coordinator").unwrap());
        // A broken env-file is an error naming the file and line, not "unset".
        std::fs::write(&env_file, "garbage\n").unwrap();
        let e = SourceArgs {
            env_file: Some(env_file),
            cmdline: "/dev/null".into(),
            initdata: None,
            tsm_root: "/nonexistent".into(),
        }
        .load()
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("podmesh.env") && e.contains("line 1"), "{e}");
    }
}
