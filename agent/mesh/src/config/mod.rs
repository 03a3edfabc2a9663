//! The mesh proxy configuration: Contrast's grammar, parsed strictly.
//!
//! # Settings
//!
//! | variable (legacy name)                                          | kernel command line   |
//! |-----------------------------------------------------------------|-----------------------|
//! | `CONTRAST_INGRESS_PROXY_CONFIG` (`EDG_INGRESS_PROXY_CONFIG`)    | `podmesh.ingress=`    |
//! | `CONTRAST_EGRESS_PROXY_CONFIG` (`EDG_EGRESS_PROXY_CONFIG`)      | `podmesh.egress=`     |
//! | `CONTRAST_ADMIN_PORT` (`EDG_ADMIN_PORT`)                        | `podmesh.admin_port=` |
//! | `PODMESH_INGRESS_UDP` (podmesh extension, no legacy name)       | `podmesh.ingress_udp=` |
//!
//! # Sources and precedence
//!
//! Each setting is resolved on its own, from the most specific source that has it:
//! **process environment > env-file (`--env-file`) > kernel command line**. Within one
//! source a `CONTRAST_*` name wins over its `EDG_*` twin (with a warning). A kernel command
//! line parameter given twice: the last one wins (with a warning). The mesh is *disabled*
//! ([`load`] returns `None`) when no source has any of the three Contrast settings
//! (`PODMESH_INGRESS_UDP` alone configures nothing and draws a warning). A setting that is
//! present but empty counts as present for ingress (`""` = intercept every port with mTLS)
//! and egress (no egress listeners); an empty admin port counts as absent.
//!
//! # Grammar
//!
//! - Ingress: `DISABLED` (no interception at all), or entries `name#port#bool` joined by `##`
//!   (empty entries between `##` are skipped). `true` = plaintext straight to the app (no
//!   redirect); `false` = TLS terminated, no client certificate required. Ports not listed:
//!   mTLS, the client certificate must chain to the mesh CA. `bool` is what Go's
//!   `strconv.ParseBool` (Contrast) accepts: `1`, `t`, `T`, `TRUE`, `True`, `true` and `0`,
//!   `f`, `F`, `FALSE`, `False`, `false` (and, as before, `true`/`false` in any case).
//! - Ingress extension (podmesh): the third field `mtls` names an mTLS port explicitly, and an
//!   optional fourth field lists the identities allowed to connect, separated by `|`
//!   (`web#8080#mtls#frontend|spiffe://mesh/ops`). An identity matches a DNS SAN (ASCII case
//!   ignored) or a URI SAN (exactly) of the client certificate. Without a list any mesh
//!   certificate is accepted, as on an unlisted port. `#true`/`#false` entries take no list.
//! - Egress: entries `name#listen#remote[#identity]` joined by `##`: `listen` is
//!   `<IPv4 in 127.0.0.0/8>:<port>`, `remote` is `<host>:<port>` with host a DNS name, an IPv4
//!   address or a bracketed IPv6 address (`[fd00::1]:443`). The remote's certificate must
//!   chain to the mesh CA and, by default, carry `host` as a SAN (DNS name or IP address).
//!   The optional 4th field (podmesh extension) changes the second part: `strict` = the
//!   default; `any` = any server of the mesh (Contrast's behaviour; a warning at startup
//!   names the entry); otherwise identities separated by `|`, one of which must be a DNS or
//!   URI SAN of the server (`billing#127.137.0.1:8081#10.0.0.7:8080#spiffe://mesh/billing`).
//! - Identities: printable ASCII without whitespace, quotes, backslashes, `#` or `|`, at most
//!   2048 bytes each, no duplicates within a list.
//! - Admin port: a port number.
//! - Ingress UDP (podmesh extension): entries `name#port` joined by `##`: the UDP ports that
//!   accept new inbound flows once the proxy is ready. Every other new inbound flow of a
//!   protocol other than TCP stays dropped. Empty = none. An error with ingress `DISABLED`
//!   (nothing is filtered then, so the list would be a lie).
//! - Ports are `1..=65535` (decimal digits only, no wrap). Names are non-empty, without `#`, whitespace, control characters,
//!   quotes or backslashes,
//!   at most 253 bytes, and unique within ingress, within egress and within ingress UDP.
//!   Duplicate ingress ports, duplicate ingress UDP ports,
//!   duplicate egress listen addresses and an admin port equal to an ingress port or an
//!   egress listen port are errors. Every error names the setting, its source, the entry
//!   text and the field.
//!
//! [`MeshConfig`]'s `Display` renders the settings back as env-file lines that parse to the
//! same configuration.

mod grammar;
mod sources;

use serde::Serialize;
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

pub use grammar::{parse_admin_port, parse_egress, parse_ingress, parse_ingress_udp, Ctx};
pub use sources::{parse_cmdline, parse_env_file, Input, Resolved, Setting, Sources, PROC_CMDLINE};

/// The settings, with their current and legacy variable names and cmdline key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingKind {
    Ingress,
    Egress,
    AdminPort,
    /// podmesh extension: UDP ports open to new inbound flows.
    IngressUdp,
}

/// Number of settings (length of [`SettingKind::ALL`]).
pub const SETTINGS: usize = 4;

impl SettingKind {
    pub const ALL: [SettingKind; SETTINGS] =
        [SettingKind::Ingress, SettingKind::Egress, SettingKind::AdminPort, SettingKind::IngressUdp];

    pub fn var(self) -> &'static str {
        match self {
            SettingKind::Ingress => "CONTRAST_INGRESS_PROXY_CONFIG",
            SettingKind::Egress => "CONTRAST_EGRESS_PROXY_CONFIG",
            SettingKind::AdminPort => "CONTRAST_ADMIN_PORT",
            SettingKind::IngressUdp => "PODMESH_INGRESS_UDP",
        }
    }

    /// The `EDG_*` twin of a Contrast setting; podmesh's own settings have none.
    pub fn legacy_var(self) -> Option<&'static str> {
        match self {
            SettingKind::Ingress => Some("EDG_INGRESS_PROXY_CONFIG"),
            SettingKind::Egress => Some("EDG_EGRESS_PROXY_CONFIG"),
            SettingKind::AdminPort => Some("EDG_ADMIN_PORT"),
            SettingKind::IngressUdp => None,
        }
    }

    pub fn cmdline_key(self) -> &'static str {
        match self {
            SettingKind::Ingress => "podmesh.ingress",
            SettingKind::Egress => "podmesh.egress",
            SettingKind::AdminPort => "podmesh.admin_port",
            SettingKind::IngressUdp => "podmesh.ingress_udp",
        }
    }

    /// Whether the setting alone configures a mesh (Contrast's three do; extensions refine).
    pub fn enables_mesh(self) -> bool {
        self != SettingKind::IngressUdp
    }
}

/// The parsed mesh configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshConfig {
    pub ingress: Ingress,
    pub egress: Vec<EgressEntry>,
    pub admin_port: Option<u16>,
    /// `PODMESH_INGRESS_UDP`: UDP ports open to new inbound flows (none by default).
    pub ingress_udp: Vec<UdpEntry>,
}

/// One `PODMESH_INGRESS_UDP` entry `name#port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpEntry {
    pub name: String,
    pub port: u16,
}

/// Ingress interception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "entries")]
pub enum Ingress {
    /// `DISABLED`: no interception at all (egress-only pod).
    Disabled,
    /// Intercept every port; listed ports get their own mode, the others require mTLS.
    Intercept(Vec<IngressEntry>),
}

/// One ingress entry `name#port#bool` or `name#port#mtls[#id1|id2]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressEntry {
    pub name: String,
    pub port: u16,
    pub mode: IngressMode,
    /// `mtls` entries (podmesh extension): the identities allowed to connect, each matching a
    /// DNS or URI SAN of the client certificate; empty = any mesh certificate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

/// What an ingress entry does to its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngressMode {
    /// `#true`: not redirected, plaintext straight to the app.
    Plaintext,
    /// `#false`: TLS terminated, no client certificate required.
    TlsOnly,
    /// `#mtls` (podmesh extension): client certificate of the mesh CA required, like an
    /// unlisted port, optionally from the identities of the entry's allow-list.
    MutualTls,
}

/// How the proxy treats inbound traffic to one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortPolicy {
    /// Ingress is `DISABLED`: nothing is intercepted.
    NotIntercepted,
    Plaintext,
    TlsOnly,
    /// Default for unlisted ports: client certificate must chain to the mesh CA.
    MutualTls,
}

/// One egress listener `name#listen#remote[#strict|#any|#id1|id2]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressEntry {
    pub name: String,
    /// Always an IPv4 address in 127.0.0.0/8.
    pub listen: SocketAddr,
    pub remote_host: RemoteHost,
    pub remote_port: u16,
    /// Which server the remote's certificate (always of the mesh CA) must name.
    pub identity: EgressIdentity,
}

/// What the server certificate of an egress remote must carry besides the mesh CA's signature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "check", content = "identities")]
pub enum EgressIdentity {
    /// The default (`#strict` is a synonym): the remote host as a DNS or IP SAN.
    #[default]
    TargetHost,
    /// `#any`: any server of the mesh (Contrast's behaviour before podmesh; warned at startup).
    Any,
    /// `#id1|id2`: a DNS or URI SAN equal to one of these.
    OneOf(Vec<String>),
}

/// The remote of an egress entry: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RemoteHost {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for RemoteHost {
    /// As it appears before `:port` (IPv6 in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            RemoteHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            RemoteHost::Name(n) => f.write_str(n),
        }
    }
}

impl MeshConfig {
    /// The policy the ingress proxy applies to inbound TCP `port`.
    pub fn port_policy(&self, port: u16) -> PortPolicy {
        match &self.ingress {
            Ingress::Disabled => PortPolicy::NotIntercepted,
            Ingress::Intercept(entries) => match entries.iter().find(|e| e.port == port) {
                Some(IngressEntry { mode: IngressMode::Plaintext, .. }) => PortPolicy::Plaintext,
                Some(IngressEntry { mode: IngressMode::TlsOnly, .. }) => PortPolicy::TlsOnly,
                Some(IngressEntry { mode: IngressMode::MutualTls, .. }) | None => PortPolicy::MutualTls,
            },
        }
    }

    /// The ingress value in the grammar (`DISABLED` or `name#port#bool##...`).
    pub fn render_ingress(&self) -> String {
        match &self.ingress {
            Ingress::Disabled => "DISABLED".to_string(),
            Ingress::Intercept(entries) => entries.iter().map(ToString::to_string).collect::<Vec<_>>().join("##"),
        }
    }

    /// The egress value in the grammar (`name#listen#remote[#any|#id1|id2]##...`).
    pub fn render_egress(&self) -> String {
        self.egress.iter().map(ToString::to_string).collect::<Vec<_>>().join("##")
    }
}

/// The warning of an `#any` egress entry (config check and proxy start).
pub fn any_warning(entry: &str, host: &str) -> String {
    format!(
        "egress entry {entry}: #any accepts any server of the mesh at {host}, so the host can redirect it to any other \
         workload; name the expected identity instead (#<SAN>) or drop #any to require {host} as a SAN"
    )
}

/// One effective identity rule, for humans (config check, `/config`, the startup log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityRule {
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// The entry; `None` for the ingress ports no entry names.
    pub entry: Option<String>,
    /// Ingress port; `None` = every port without an entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The rule in words.
    pub rule: String,
}

impl IdentityRule {
    pub fn ingress(entry: Option<&str>, port: Option<u16>, allow: &[String]) -> Self {
        let rule = if allow.is_empty() {
            "client certificate of the mesh CA, any identity".to_string()
        } else {
            format!("client certificate of the mesh CA with a DNS or URI SAN in [{}]", allow.join(", "))
        };
        Self { direction: "ingress", entry: entry.map(str::to_string), port, rule }
    }

    pub fn egress(entry: &str, host: &str, identity: &EgressIdentity) -> Self {
        let rule = match identity {
            EgressIdentity::TargetHost => format!("server certificate of the mesh CA with {host} as a SAN"),
            EgressIdentity::Any => "server certificate of the mesh CA, any identity (#any)".to_string(),
            EgressIdentity::OneOf(ids) => {
                format!("server certificate of the mesh CA with a DNS or URI SAN in [{}]", ids.join(", "))
            }
        };
        Self { direction: "egress", entry: Some(entry.to_string()), port: None, rule }
    }
}

impl fmt::Display for IdentityRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.entry, self.port) {
            (Some(e), Some(p)) => write!(f, "{} entry {e} (port {p}): {}", self.direction, self.rule),
            (Some(e), None) => write!(f, "{} entry {e}: {}", self.direction, self.rule),
            (None, _) => write!(f, "{} ports without an entry: {}", self.direction, self.rule),
        }
    }
}

impl fmt::Display for IngressEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            IngressMode::Plaintext => write!(f, "{}#{}#true", self.name, self.port),
            IngressMode::TlsOnly => write!(f, "{}#{}#false", self.name, self.port),
            IngressMode::MutualTls if self.allow.is_empty() => write!(f, "{}#{}#mtls", self.name, self.port),
            IngressMode::MutualTls => write!(f, "{}#{}#mtls#{}", self.name, self.port, self.allow.join("|")),
        }
    }
}

impl fmt::Display for UdpEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.port)
    }
}

impl fmt::Display for EgressEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}#{}:{}", self.name, self.listen, self.remote_host, self.remote_port)?;
        match &self.identity {
            // The default needs no field (`#strict` parses to it too).
            EgressIdentity::TargetHost => Ok(()),
            EgressIdentity::Any => f.write_str("#any"),
            EgressIdentity::OneOf(ids) => write!(f, "#{}", ids.join("|")),
        }
    }
}

impl fmt::Display for MeshConfig {
    /// Env-file lines (`CONTRAST_*=value`) that parse back to this configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}={}", SettingKind::Ingress.var(), self.render_ingress())?;
        if !self.egress.is_empty() {
            writeln!(f, "{}={}", SettingKind::Egress.var(), self.render_egress())?;
        }
        if let Some(port) = self.admin_port {
            writeln!(f, "{}={port}", SettingKind::AdminPort.var())?;
        }
        if !self.ingress_udp.is_empty() {
            let entries: Vec<String> = self.ingress_udp.iter().map(ToString::to_string).collect();
            writeln!(f, "{}={}", SettingKind::IngressUdp.var(), entries.join("##"))?;
        }
        Ok(())
    }
}

/// Why the configuration was rejected. One line each, naming the setting, where it came from,
/// the entry text and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting} ({origin}): entry {entry:?}: field {field}: {reason}")]
    Entry { setting: &'static str, origin: String, entry: String, field: &'static str, reason: String },
    #[error("{setting} ({origin}): entry {entry:?}: expected {expected}, got {got} field(s) separated by '#'")]
    FieldCount { setting: &'static str, origin: String, entry: String, expected: &'static str, got: usize },
    #[error("{setting} ({origin}): entries {first:?} and {second:?}: duplicate {what}")]
    Duplicate { setting: &'static str, origin: String, first: String, second: String, what: &'static str },
    #[error("{setting} ({origin}): admin port {port} collides with {other} entry {entry:?}")]
    AdminCollision { setting: &'static str, origin: String, port: u16, other: &'static str, entry: String },
    #[error("{setting} ({origin}): {reason}")]
    Conflict { setting: &'static str, origin: String, reason: String },
    #[error("{setting} ({origin}): {value:?}: {reason}")]
    Value { setting: &'static str, origin: String, value: String, reason: String },
    #[error("env-file {path}: line {line}: {reason}")]
    EnvFile { path: PathBuf, line: usize, reason: String },
    #[error("cannot read {what} {path}: {reason}")]
    Read { what: &'static str, path: PathBuf, reason: String },
}

/// Reads the sources and parses the settings: `Ok(None)` when the mesh is disabled (no
/// setting anywhere). Warnings (legacy names shadowed, repeated cmdline keys) are logged
/// with `PODMESH_EVENT=config_warning`.
pub fn load(sources: &Sources) -> Result<Option<MeshConfig>, ConfigError> {
    let resolved = sources.resolve()?;
    for w in &resolved.warnings {
        tracing::warn!(PODMESH_EVENT = "config_warning", "{w}");
    }
    parse(&resolved)
}

/// Parses already resolved settings (see [`Sources::resolve`]).
pub fn parse(resolved: &Resolved) -> Result<Option<MeshConfig>, ConfigError> {
    if !resolved.settings.iter().flatten().any(|s| s.kind.enables_mesh()) {
        return Ok(None);
    }
    let [ingress, egress, admin, udp] = &resolved.settings;
    let ingress = match ingress {
        Some(s) => parse_ingress(&s.value, &s.ctx())?,
        None => Ingress::Intercept(Vec::new()),
    };
    let egress = match egress {
        Some(s) => parse_egress(&s.value, &s.ctx())?,
        None => Vec::new(),
    };
    let admin_port = match admin {
        Some(s) => parse_admin_port(&s.value, &s.ctx())?,
        None => None,
    };
    let ingress_udp = match udp {
        Some(s) => parse_ingress_udp(&s.value, &s.ctx())?,
        None => Vec::new(),
    };
    if let (Ingress::Disabled, Some(s), false) = (&ingress, udp, ingress_udp.is_empty()) {
        return Err(ConfigError::Conflict {
            setting: s.name,
            origin: s.source.clone(),
            reason: "ingress is DISABLED, so nothing inbound is filtered: listing UDP ports would promise a filter that does not exist".into(),
        });
    }
    let config = MeshConfig { ingress, egress, admin_port, ingress_udp };
    if let (Some(port), Some(s)) = (config.admin_port, admin) {
        grammar::check_admin_collision(&config, port, &s.ctx())?;
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests;
