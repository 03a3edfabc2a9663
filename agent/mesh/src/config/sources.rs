//! Where settings come from: process environment, an env-file, the kernel command line.

use super::{grammar::Ctx, ConfigError, SettingKind, SETTINGS};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Default kernel command line.
pub const PROC_CMDLINE: &str = "/proc/cmdline";

/// A file's path and contents.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub text: String,
}

impl Input {
    /// Reads `path` (UTF-8); `what` names it in errors (`env-file`, `kernel command line`).
    pub fn read(what: &'static str, path: &Path) -> Result<Self, ConfigError> {
        let read_err = |reason: String| ConfigError::Read { what, path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| read_err(format!("not UTF-8 ({e})")))?;
        Ok(Self { path: path.to_path_buf(), text })
    }
}

/// The raw inputs; [`Sources::resolve`] picks each setting from them.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Process environment (only the config variables matter).
    pub env: Vec<(String, String)>,
    /// `--env-file` (systemd EnvironmentFile syntax).
    pub env_file: Option<Input>,
    /// Kernel command line (`/proc/cmdline` or `--cmdline FILE`).
    pub cmdline: Option<Input>,
    /// Attested mode: the `podmesh.env` of initdata whose digest the TEE report confirmed
    /// (`path` names the initdata file). Then the mesh settings and the coordinator settings
    /// come only from it and from the measured kernel command line; environment and env-file
    /// values for them are ignored, each with a line in [`Resolved::ignored`].
    pub attested: Option<Input>,
}

/// The `podmesh` daemon settings that decide trust: in attested mode only initdata or the
/// kernel command line may set them.
pub const ATTESTED_PODMESH_KEYS: [&str; 3] = ["coordinator", "coordinator_root_ca", "coordinator_fingerprint"];

/// One resolved setting: its value and exactly where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub kind: SettingKind,
    /// The variable or kernel command line key that supplied it.
    pub name: &'static str,
    pub value: String,
    /// `environment`, `env-file PATH` or `kernel command line PATH`.
    pub source: String,
}

impl Setting {
    /// Error context for the grammar parser.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx { setting: self.name, origin: &self.source }
    }
}

/// The chosen value of each setting (index = [`SettingKind::ALL`] order) plus warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub settings: [Option<Setting>; SETTINGS],
    pub warnings: Vec<String>,
    /// Attested mode: settings from the environment or an env-file that were ignored, one line
    /// each naming the setting and its source.
    pub ignored: Vec<String>,
}

impl Sources {
    /// This process's environment, plus the env-file (if any) and the kernel command line
    /// (`cmdline`, default `/proc/cmdline`).
    pub fn system(env_file: Option<&Path>, cmdline: Option<&Path>) -> Result<Self, ConfigError> {
        let mut env = Vec::new();
        for kind in SettingKind::ALL {
            for name in std::iter::once(kind.var()).chain(kind.legacy_var()) {
                if let Some(v) = std::env::var_os(name) {
                    let value = v.into_string().map_err(|v| ConfigError::Value {
                        setting: name,
                        origin: "environment".into(),
                        value: v.to_string_lossy().into_owned(),
                        reason: "not valid UTF-8".into(),
                    })?;
                    env.push((name.to_string(), value));
                }
            }
        }
        let env_file = env_file.map(|p| Input::read("env-file", p)).transpose()?;
        let cmdline = Input::read("kernel command line", cmdline.unwrap_or(Path::new(PROC_CMDLINE)))?;
        Ok(Self { env, env_file, cmdline: Some(cmdline), attested: None })
    }

    /// `initdata PATH`: the source name of attested values.
    fn attested_src(&self) -> Option<String> {
        self.attested.as_ref().map(|a| format!("initdata {}", a.path.display()))
    }

    /// A `podmesh` daemon setting that is not a flag or in the process environment (clap
    /// reads those): `PODMESH_<KEY>` from the env-file, else `podmesh.<key>=` from the kernel
    /// command line, the same precedence as the mesh settings. `key` is lower case
    /// (`coordinator`, `open_without_coordinator`). Returns the value and where it came from.
    /// In attested mode the keys of [`ATTESTED_PODMESH_KEYS`] come from initdata's
    /// `podmesh.env` instead of the env-file.
    pub fn podmesh_value(&self, key: &str) -> Result<Option<(String, String)>, ConfigError> {
        let var = format!("PODMESH_{}", key.to_ascii_uppercase());
        let file = match (&self.attested, ATTESTED_PODMESH_KEYS.contains(&key)) {
            (Some(a), true) => Some((a, format!("initdata {}", a.path.display()))),
            _ => self.env_file.as_ref().map(|f| (f, format!("env-file {}", f.path.display()))),
        };
        if let Some((f, src)) = file {
            let vars = parse_env_file(&f.text, &f.path)?;
            if let Some((_, v)) = vars.into_iter().rev().find(|(k, _)| *k == var) {
                return Ok(Some((v, format!("{var} in {src}"))));
            }
        }
        let key = format!("podmesh.{key}");
        let from_cmdline = self.cmdline.as_ref().and_then(|c| {
            let v = parse_cmdline(&c.text).into_iter().rev().find(|(k, _)| *k == key)?.1;
            Some((v, format!("{key}= on kernel command line {}", c.path.display())))
        });
        Ok(from_cmdline)
    }

    /// Attested mode: the env-file's values for [`ATTESTED_PODMESH_KEYS`] that
    /// [`Sources::podmesh_value`] ignores, one line each (empty otherwise).
    pub fn ignored_podmesh_values(&self) -> Result<Vec<String>, ConfigError> {
        let (Some(_), Some(f)) = (&self.attested, &self.env_file) else { return Ok(Vec::new()) };
        let vars = parse_env_file(&f.text, &f.path)?;
        Ok(ATTESTED_PODMESH_KEYS
            .iter()
            .map(|k| format!("PODMESH_{}", k.to_ascii_uppercase()))
            .filter(|var| vars.iter().any(|(k, _)| k == var))
            .map(|var| {
                format!("{var} from env-file {} is ignored: not attested (initdata is present)", f.path.display())
            })
            .collect())
    }

    /// Picks each setting from the most specific source: environment > env-file > cmdline.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let mut warnings = Vec::new();
        let file_vars = match &self.env_file {
            Some(f) => parse_env_file(&f.text, &f.path)?,
            None => Vec::new(),
        };
        let cmd_vars = self.cmdline.as_ref().map(|c| parse_cmdline(&c.text)).unwrap_or_default();
        let file_src = self.env_file.as_ref().map(|f| format!("env-file {}", f.path.display()));
        let cmd_src = self.cmdline.as_ref().map(|c| format!("kernel command line {}", c.path.display()));
        let attested_vars = match &self.attested {
            Some(a) => parse_env_file(&a.text, &a.path)?,
            None => Vec::new(),
        };
        let attested_src = self.attested_src();

        let mut resolved = Resolved::default();
        let mut ignored = Vec::new();
        for (slot, kind) in resolved.settings.iter_mut().zip(SettingKind::ALL) {
            let mut candidates = Vec::new();
            let mut unattested =
                from_vars(kind, &self.env, "environment", &mut warnings).into_iter().collect::<Vec<_>>();
            if let Some(src) = &file_src {
                unattested.extend(from_vars(kind, &file_vars, src, &mut warnings));
            }
            match &attested_src {
                Some(src) => {
                    candidates.extend(from_vars(kind, &attested_vars, src, &mut warnings));
                    ignored.extend(unattested.into_iter().map(|s| {
                        format!("{} from {} is ignored: not attested (initdata is present)", s.name, s.source)
                    }));
                }
                None => candidates.extend(unattested),
            }
            if let Some(src) = &cmd_src {
                candidates.extend(from_cmdline(kind, &cmd_vars, src, &mut warnings));
            }
            // An empty admin port means "no admin listener": the same as not set.
            candidates.retain(|s| kind != SettingKind::AdminPort || !s.value.trim().is_empty());
            let mut it = candidates.into_iter();
            *slot = it.next();
            if let Some(chosen) = slot {
                for ignored in it {
                    warnings.push(format!(
                        "{} from {} is ignored: {} from {} takes precedence",
                        ignored.name, ignored.source, chosen.name, chosen.source
                    ));
                }
            }
        }
        if let Some(udp) = &resolved.settings[SettingKind::IngressUdp as usize] {
            if !resolved.settings.iter().flatten().any(|s| s.kind.enables_mesh()) {
                warnings.push(format!("{} from {} is ignored: no mesh is configured", udp.name, udp.source));
            }
        }
        resolved.warnings = warnings;
        resolved.ignored = ignored;
        Ok(resolved)
    }
}

/// The setting from a variable list (environment or env-file): CONTRAST_* over EDG_*; the
/// last assignment of a name wins.
fn from_vars(
    kind: SettingKind,
    vars: &[(String, String)],
    source: &str,
    warnings: &mut Vec<String>,
) -> Option<Setting> {
    let last = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let current = last(kind.var());
    let legacy = kind.legacy_var().and_then(last);
    let setting = |name, value| Some(Setting { kind, name, value, source: source.to_string() });
    match (current, legacy) {
        (Some(v), Some(_)) => {
            let legacy = kind.legacy_var().unwrap_or_default();
            warnings.push(format!("both {} and legacy {legacy} are set in {source}: using {}", kind.var(), kind.var()));
            setting(kind.var(), v)
        }
        (Some(v), None) => setting(kind.var(), v),
        (None, Some(v)) => setting(kind.legacy_var().unwrap_or_default(), v),
        (None, None) => None,
    }
}

fn from_cmdline(
    kind: SettingKind,
    params: &[(String, String)],
    source: &str,
    warnings: &mut Vec<String>,
) -> Option<Setting> {
    let key = kind.cmdline_key();
    let values: Vec<&String> = params.iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect();
    if values.len() > 1 {
        warnings.push(format!("{key}= appears {} times in {source}: the last one wins", values.len()));
    }
    values.last().map(|v| Setting { kind, name: key, value: (*v).clone(), source: source.to_string() })
}

/// Parses an env-file in systemd `EnvironmentFile=` syntax: `KEY=VALUE` lines, blank lines
/// and lines starting with `#` or `;` ignored, one pair of matching quotes around the value
/// removed. Anything else (no `=`, bad key, continuation lines) is an error with its line.
pub fn parse_env_file(text: &str, path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let err = |line: usize, reason: String| ConfigError::EnvFile { path: path.to_path_buf(), line, reason };
    let mut vars = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.ends_with('\\') {
            return Err(err(i + 1, "line continuation (trailing backslash) is not supported".into()));
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(i + 1, format!("{:?} is not KEY=VALUE", truncate(line))));
        };
        let key = key.trim();
        let valid_key = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err(err(i + 1, format!("{:?} is not a variable name", truncate(key))));
        }
        vars.push((key.to_string(), unquote(value.trim()).to_string()));
    }
    Ok(vars)
}

/// Parses kernel command line parameters (`key=value`, double quotes group, arguments after
/// `--` belong to init and are ignored). Parameters without `=` get an empty value.
pub fn parse_cmdline(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut token = String::new();
    let mut in_quotes = false;
    let mut flush = |token: &mut String| -> bool {
        if token == "--" {
            return false;
        }
        if !token.is_empty() {
            let (k, v) = token.split_once('=').unwrap_or((token.as_str(), ""));
            params.push((k.to_string(), v.to_string()));
        }
        token.clear();
        true
    };
    for c in text.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                if !flush(&mut token) {
                    return params;
                }
            }
            c => token.push(c),
        }
    }
    flush(&mut token);
    params
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}
