//! The value grammar of the settings: parsing with strict checks.

use super::{ConfigError, EgressEntry, Ingress, IngressEntry, IngressMode, MeshConfig, RemoteHost, UdpEntry};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where a value came from, for error messages: the variable (or cmdline key) and source.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// Variable or kernel command line key the value was read from.
    pub setting: &'static str,
    /// Human description of the source (`environment`, `env-file /etc/x`, `kernel command line`).
    pub origin: &'a str,
}

const ENTRY_SEP: &str = "##";
const MAX_NAME: usize = 253;

impl Ctx<'_> {
    fn entry(&self, entry: &str, field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Entry {
            setting: self.setting,
            origin: self.origin.to_string(),
            entry: entry.to_string(),
            field,
            reason: reason.into(),
        }
    }

    fn duplicate(&self, first: &str, second: &str, what: &'static str) -> ConfigError {
        ConfigError::Duplicate {
            setting: self.setting,
            origin: self.origin.to_string(),
            first: first.to_string(),
            second: second.to_string(),
            what,
        }
    }

    fn field_count(&self, entry: &str, expected: &'static str, got: usize) -> ConfigError {
        ConfigError::FieldCount {
            setting: self.setting,
            origin: self.origin.to_string(),
            entry: entry.to_string(),
            expected,
            got,
        }
    }
}

/// Entries between `##`; empty ones are skipped, surrounding whitespace is ignored.
fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(ENTRY_SEP).map(str::trim).filter(|e| !e.is_empty())
}

/// Parses `DISABLED` or `name#port#bool##...`.
pub fn parse_ingress(value: &str, ctx: &Ctx<'_>) -> Result<Ingress, ConfigError> {
    if value.trim() == "DISABLED" {
        return Ok(Ingress::Disabled);
    }
    let mut parsed: Vec<IngressEntry> = Vec::new();
    let mut texts: Vec<&str> = Vec::new();
    for entry in entries(value) {
        let fields: Vec<&str> = entry.split('#').collect();
        let [name, port, plaintext] = fields[..] else {
            return Err(ctx.field_count(entry, "3 (name#port#bool)", fields.len()));
        };
        let name = parse_name(name, entry, ctx)?;
        let port = parse_port(port, entry, "port", ctx)?;
        let mode = match plaintext.trim().to_ascii_lowercase().as_str() {
            "true" => IngressMode::Plaintext,
            "false" => IngressMode::TlsOnly,
            _ => return Err(ctx.entry(entry, "bool", format!("expected true or false, got {plaintext:?}"))),
        };
        if let Some(i) = parsed.iter().position(|e| e.name == name) {
            return Err(ctx.duplicate(texts[i], entry, "name"));
        }
        if let Some(i) = parsed.iter().position(|e| e.port == port) {
            return Err(ctx.duplicate(texts[i], entry, "port"));
        }
        parsed.push(IngressEntry { name, port, mode });
        texts.push(entry);
    }
    Ok(Ingress::Intercept(parsed))
}

/// Parses `name#port##...` (`PODMESH_INGRESS_UDP`); empty = no UDP port.
pub fn parse_ingress_udp(value: &str, ctx: &Ctx<'_>) -> Result<Vec<UdpEntry>, ConfigError> {
    let mut parsed: Vec<UdpEntry> = Vec::new();
    let mut texts: Vec<&str> = Vec::new();
    for entry in entries(value) {
        let fields: Vec<&str> = entry.split('#').collect();
        let [name, port] = fields[..] else {
            return Err(ctx.field_count(entry, "2 (name#port)", fields.len()));
        };
        let name = parse_name(name, entry, ctx)?;
        let port = parse_port(port, entry, "port", ctx)?;
        if let Some(i) = parsed.iter().position(|e| e.name == name) {
            return Err(ctx.duplicate(texts[i], entry, "name"));
        }
        if let Some(i) = parsed.iter().position(|e| e.port == port) {
            return Err(ctx.duplicate(texts[i], entry, "port"));
        }
        parsed.push(UdpEntry { name, port });
        texts.push(entry);
    }
    Ok(parsed)
}

/// Parses `name#listen#remote[#strict]##...`.
pub fn parse_egress(value: &str, ctx: &Ctx<'_>) -> Result<Vec<EgressEntry>, ConfigError> {
    let mut parsed: Vec<EgressEntry> = Vec::new();
    let mut texts: Vec<&str> = Vec::new();
    for entry in entries(value) {
        let fields: Vec<&str> = entry.split('#').collect();
        let (name, listen, remote, strict) = match fields[..] {
            [n, l, r] => (n, l, r, false),
            [n, l, r, s] if s.trim().eq_ignore_ascii_case("strict") => (n, l, r, true),
            [_, _, _, s] => {
                return Err(ctx.entry(entry, "strict", format!("expected \"strict\" or nothing, got {s:?}")))
            }
            _ => return Err(ctx.field_count(entry, "3 or 4 (name#listen#remote[#strict])", fields.len())),
        };
        let name = parse_name(name, entry, ctx)?;
        let listen = parse_listen(listen, entry, ctx)?;
        let (remote_host, remote_port) = parse_remote(remote, entry, ctx)?;
        if let Some(i) = parsed.iter().position(|e| e.name == name) {
            return Err(ctx.duplicate(texts[i], entry, "name"));
        }
        if let Some(i) = parsed.iter().position(|e| e.listen == listen) {
            return Err(ctx.duplicate(texts[i], entry, "listen address"));
        }
        parsed.push(EgressEntry { name, listen, remote_host, remote_port, strict });
        texts.push(entry);
    }
    Ok(parsed)
}

/// Parses the admin port; empty means no admin listener.
pub fn parse_admin_port(value: &str, ctx: &Ctx<'_>) -> Result<Option<u16>, ConfigError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    port_number(v).map(Some).map_err(|reason| ConfigError::Value {
        setting: ctx.setting,
        origin: ctx.origin.to_string(),
        value: value.to_string(),
        reason,
    })
}

/// The admin listener may not take a port that an ingress entry or egress listener names.
pub(super) fn check_admin_collision(config: &MeshConfig, port: u16, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let collision = |other, entry: String| ConfigError::AdminCollision {
        setting: ctx.setting,
        origin: ctx.origin.to_string(),
        port,
        other,
        entry,
    };
    if let Ingress::Intercept(entries) = &config.ingress {
        if let Some(e) = entries.iter().find(|e| e.port == port) {
            return Err(collision("ingress", e.to_string()));
        }
    }
    if let Some(e) = config.egress.iter().find(|e| e.listen.port() == port) {
        return Err(collision("egress", e.to_string()));
    }
    Ok(())
}

fn parse_name(raw: &str, entry: &str, ctx: &Ctx<'_>) -> Result<String, ConfigError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ctx.entry(entry, "name", "must not be empty"));
    }
    if name.len() > MAX_NAME {
        return Err(ctx.entry(entry, "name", format!("longer than {MAX_NAME} bytes")));
    }
    // Quotes and backslashes would not survive env-files and the kernel command line.
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\')) {
        return Err(ctx.entry(
            entry,
            "name",
            format!("contains {c:?} (no whitespace, control characters, quotes or backslashes)"),
        ));
    }
    Ok(name.to_string())
}

fn parse_port(raw: &str, entry: &str, field: &'static str, ctx: &Ctx<'_>) -> Result<u16, ConfigError> {
    port_number(raw.trim()).map_err(|reason| ctx.entry(entry, field, reason))
}

/// `1..=65535`, decimal digits only (no sign, no wrap-around).
fn port_number(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("port is empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a port number (decimal digits only)"));
    }
    // Leading zeros are harmless; compare digit strings so huge values cannot wrap.
    let digits = s.trim_start_matches('0');
    match digits.parse::<u32>() {
        Ok(n @ 1..=65535) if digits.len() <= 5 => Ok(n as u16),
        _ => Err(format!("port {s} is out of range 1..65535")),
    }
}

fn parse_listen(raw: &str, entry: &str, ctx: &Ctx<'_>) -> Result<SocketAddr, ConfigError> {
    let raw = raw.trim();
    let Some((ip, port)) = raw.rsplit_once(':') else {
        return Err(ctx.entry(entry, "listen", format!("{raw:?} is not <ip>:<port>")));
    };
    let ip: Ipv4Addr =
        ip.parse().map_err(|_| ctx.entry(entry, "listen", format!("{ip:?} is not an IPv4 address in 127.0.0.0/8")))?;
    if !ip.is_loopback() {
        return Err(ctx.entry(entry, "listen", format!("{ip} is outside 127.0.0.0/8")));
    }
    let port = parse_port(port, entry, "listen port", ctx)?;
    Ok(SocketAddr::new(IpAddr::V4(ip), port))
}

fn parse_remote(raw: &str, entry: &str, ctx: &Ctx<'_>) -> Result<(RemoteHost, u16), ConfigError> {
    let raw = raw.trim();
    let bad = |reason: String| ctx.entry(entry, "remote", reason);
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:").ok_or_else(|| bad(format!("{raw:?} is not [<ipv6>]:<port>")))?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad(format!("{ip:?} is not an IPv6 address")))?;
        (RemoteHost::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = raw.rsplit_once(':').ok_or_else(|| bad(format!("{raw:?} is not <host>:<port>")))?;
        if host.contains(':') {
            return Err(bad(format!("{host:?}: an IPv6 remote must be in brackets, e.g. [{host}]:{port}")));
        }
        (parse_host(host).map_err(bad)?, port)
    };
    let port = parse_port(port, entry, "remote port", ctx)?;
    Ok((host, port))
}

/// An IPv4 address or a DNS name (labels of letters, digits, `-`, `_`; last label not numeric).
fn parse_host(host: &str) -> Result<RemoteHost, String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(RemoteHost::Ip(IpAddr::V4(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err("host is empty".into());
    }
    if name.len() > 253 {
        return Err("host name longer than 253 bytes".into());
    }
    for label in name.split('.') {
        let ok_chars = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{host:?} is not a valid host name or IPv4 address (label {label:?})"));
        }
    }
    if name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("{host:?} is not a valid IPv4 address (and not a host name: last label is numeric)"));
    }
    Ok(RemoteHost::Name(host.to_string()))
}
