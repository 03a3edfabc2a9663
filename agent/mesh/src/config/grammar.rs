//! The value grammar of the settings: parsing with strict checks.

use super::{
    ConfigError, EgressEntry, EgressIdentity, Ingress, IngressEntry, IngressMode, MeshConfig, RemoteHost, UdpEntry,
};
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
/// Longest identity of an allow-list (SPIFFE IDs may be up to 2048 bytes).
pub const MAX_IDENTITY: usize = 2048;

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

/// Parses `DISABLED` or `name#port#bool##...` (and the `name#port#mtls[#id1|id2]` extension).
pub fn parse_ingress(value: &str, ctx: &Ctx<'_>) -> Result<Ingress, ConfigError> {
    if value.trim() == "DISABLED" {
        return Ok(Ingress::Disabled);
    }
    let mut parsed: Vec<IngressEntry> = Vec::new();
    let mut texts: Vec<&str> = Vec::new();
    for entry in entries(value) {
        let fields: Vec<&str> = entry.split('#').collect();
        let (name, port, mode, allow) = match fields[..] {
            [n, p, m] => (n, p, m, None),
            [n, p, m, a] => (n, p, m, Some(a)),
            _ => {
                return Err(ctx.field_count(
                    entry,
                    "3 (name#port#bool) or, for mtls, 4 (name#port#mtls#id1|id2)",
                    fields.len(),
                ))
            }
        };
        let name = parse_name(name, entry, ctx)?;
        let port = parse_port(port, entry, "port", ctx)?;
        let mode = parse_mode(mode).ok_or_else(|| {
            ctx.entry(entry, "bool", format!("expected true or false (or 1, t, 0, f; or mtls), got {mode:?}"))
        })?;
        let allow =
            match (mode, allow) {
                (_, None) => Vec::new(),
                (IngressMode::MutualTls, Some(list)) => parse_identities(list, entry, ctx)?,
                (_, Some(_)) => return Err(ctx.entry(
                    entry,
                    "allow",
                    "an identity list needs an mtls port (name#port#mtls#id1|id2); true and false entries take none",
                )),
            };
        if let Some(i) = parsed.iter().position(|e| e.name == name) {
            return Err(ctx.duplicate(texts[i], entry, "name"));
        }
        if let Some(i) = parsed.iter().position(|e| e.port == port) {
            return Err(ctx.duplicate(texts[i], entry, "port"));
        }
        parsed.push(IngressEntry { name, port, mode, allow });
        texts.push(entry);
    }
    Ok(Ingress::Intercept(parsed))
}

/// The third ingress field: Go's `strconv.ParseBool` set (what Contrast accepts), `true` and
/// `false` in any case (what podmesh always accepted), or `mtls` (podmesh extension).
fn parse_mode(raw: &str) -> Option<IngressMode> {
    let raw = raw.trim();
    let any = |words: &[&str]| words.iter().any(|w| raw.eq_ignore_ascii_case(w));
    if raw == "1" || any(&["t", "true"]) {
        Some(IngressMode::Plaintext)
    } else if raw == "0" || any(&["f", "false"]) {
        Some(IngressMode::TlsOnly)
    } else if any(&["mtls"]) {
        Some(IngressMode::MutualTls)
    } else {
        None
    }
}

/// `id1|id2`: identities matched against DNS or URI SANs.
fn parse_identities(raw: &str, entry: &str, ctx: &Ctx<'_>) -> Result<Vec<String>, ConfigError> {
    let bad = |reason: String| ctx.entry(entry, "identities", reason);
    let mut ids: Vec<String> = Vec::new();
    for id in raw.split('|').map(str::trim) {
        if id.is_empty() {
            return Err(bad(format!("{raw:?} has an empty identity (write id1|id2)")));
        }
        if id.len() > MAX_IDENTITY {
            return Err(bad(format!("an identity is longer than {MAX_IDENTITY} bytes")));
        }
        if let Some(c) = id.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '\\')) {
            return Err(bad(format!(
                "{id:?} contains {c:?} (SANs are printable ASCII, no whitespace, quotes or backslashes)"
            )));
        }
        if ids.iter().any(|known| known == id) {
            return Err(bad(format!("{id:?} is listed twice")));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
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

/// Parses `name#listen#remote[#strict|#any|#id1|id2]##...`.
pub fn parse_egress(value: &str, ctx: &Ctx<'_>) -> Result<Vec<EgressEntry>, ConfigError> {
    let mut parsed: Vec<EgressEntry> = Vec::new();
    let mut texts: Vec<&str> = Vec::new();
    for entry in entries(value) {
        let fields: Vec<&str> = entry.split('#').collect();
        let (name, listen, remote, identity) = match fields[..] {
            [n, l, r] => (n, l, r, EgressIdentity::TargetHost),
            [n, l, r, i] => (n, l, r, parse_egress_identity(i, entry, ctx)?),
            _ => {
                return Err(ctx.field_count(entry, "3 or 4 (name#listen#remote[#strict|#any|#id1|id2])", fields.len()))
            }
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
        parsed.push(EgressEntry { name, listen, remote_host, remote_port, identity });
        texts.push(entry);
    }
    Ok(parsed)
}

/// The fourth egress field: `strict` (the default), `any`, or identities `id1|id2`.
fn parse_egress_identity(raw: &str, entry: &str, ctx: &Ctx<'_>) -> Result<EgressIdentity, ConfigError> {
    let word = raw.trim();
    if word.eq_ignore_ascii_case("strict") {
        Ok(EgressIdentity::TargetHost)
    } else if word.eq_ignore_ascii_case("any") {
        Ok(EgressIdentity::Any)
    } else {
        let ids = parse_identities(raw, entry, ctx)?;
        // Reserved words: `a|any` would read as an identity here but `any` alone as the keyword.
        if let Some(id) = ids.iter().find(|id| ["any", "strict"].iter().any(|w| id.eq_ignore_ascii_case(w))) {
            return Err(ctx.entry(entry, "identities", format!("{id:?} is a keyword (any, strict), not an identity")));
        }
        Ok(EgressIdentity::OneOf(ids))
    }
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
