//! The coordinator address: `host:port` or `[v6]:port`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
#[error("coordinator address {input:?}: {reason} (expected host:port or [ipv6]:port)")]
pub struct EndpointError {
    input: String,
    reason: &'static str,
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| EndpointError { input: input.to_owned(), reason };
        let s = input.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(|| err("missing \"]:\" after the IPv6 address"))?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| err("not an IPv6 address inside [...]"))?;
            (h, p)
        } else {
            let (h, p) = s.rsplit_once(':').ok_or_else(|| err("missing :port"))?;
            if h.contains(':') {
                return Err(err("IPv6 addresses need brackets"));
            }
            (h, p)
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
            return Err(err("host contains whitespace, '/' or '@'"));
        }
        let port: u16 = port.parse().map_err(|_| err("port is not a number in 1..65535"))?;
        if port == 0 {
            return Err(err("port is not a number in 1..65535"));
        }
        Ok(Endpoint { host: host.to_owned(), port })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_v4_and_v6() {
        let e: Endpoint = "coordinator.example:1313".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("coordinator.example", 1313));
        assert_eq!("10.0.0.1:443".parse::<Endpoint>().unwrap().to_string(), "10.0.0.1:443");
        let v6: Endpoint = "[fd00::1]:8443".parse().unwrap();
        assert_eq!(v6.host, "fd00::1");
        assert_eq!(v6.to_string(), "[fd00::1]:8443");
    }

    #[test]
    fn rejects_bad_addresses_with_the_reason() {
        for (bad, why) in [
            ("", "missing :port"),
            ("host", "missing :port"),
            (":443", "empty host"),
            ("host:0", "port"),
            ("host:65536", "port"),
            ("host:http", "port"),
            ("fd00::1:443", "brackets"),
            ("[fd00::1]443", "]:"),
            ("[nope]:443", "IPv6"),
            ("a b:1", "whitespace"),
            ("user@host:1", "'@'"),
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
