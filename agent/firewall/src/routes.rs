//! Policy routing for TPROXY'd packets, IPv4 and IPv6:
//!
//! ```text
//! ip rule add fwmark M lookup T
//! ip route replace local default dev lo table T
//! ```
//!
//! Packets marked by [`crate::tproxy`] are routed locally, so they reach the transparent
//! listeners whatever their destination address. `ip rule add` happily adds duplicates,
//! so [`install`] first deletes every matching rule: restarts stay idempotent. Runs `ip`
//! (iproute2), optionally in a named network namespace (`ip -n NAME`).

use crate::nft::check_netns_name;
use std::process::Command;

/// The mark the rule matches and the table holding the `local` default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RouteSpec {
    pub mark: u32,
    pub table: u32,
}

/// Errors of the policy routes. One line, with the failing command and `ip`'s message.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("invalid policy route spec: {0}")]
    Spec(String),
    #[error(transparent)]
    Netns(#[from] crate::nft::NftError),
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

#[derive(Clone, Copy, Debug)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

impl RouteSpec {
    fn check(&self) -> Result<(), RoutesError> {
        if self.mark == 0 {
            return Err(RoutesError::Spec("the fwmark must be non-zero".into()));
        }
        // 0 = unspec, 253..=255 = default/main/local: never ours to fill.
        if self.table == 0 || (253..=255).contains(&self.table) {
            return Err(RoutesError::Spec(format!("routing table {} is reserved; pick another", self.table)));
        }
        Ok(())
    }
}

/// Installs rule and route for both families (IPv6 skipped when the kernel has none).
pub fn install(spec: RouteSpec, netns: Option<&str>) -> Result<(), RoutesError> {
    spec.check()?;
    for family in families() {
        delete_rules(spec, family, netns)?;
        let table = spec.table.to_string();
        ip(netns, family, &["route", "replace", "local", "default", "dev", "lo", "table", &table])?;
        ip(netns, family, &["rule", "add", "fwmark", &format!("{:#x}", spec.mark), "lookup", &table])?;
    }
    Ok(())
}

/// Removes rule and route for both families; returns whether anything was there.
pub fn remove(spec: RouteSpec, netns: Option<&str>) -> Result<bool, RoutesError> {
    spec.check()?;
    let mut present = false;
    for family in families() {
        present |= delete_rules(spec, family, netns)? > 0;
        let table = spec.table.to_string();
        present |= ip(netns, family, &["route", "del", "local", "default", "dev", "lo", "table", &table]).is_ok();
    }
    Ok(present)
}

/// Whether the fwmark rule exists for every available family.
pub fn is_installed(spec: RouteSpec, netns: Option<&str>) -> Result<bool, RoutesError> {
    for family in families() {
        if count_rules(spec, family, netns)? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn families() -> Vec<Family> {
    // Without IPv6 in the kernel `ip -6` fails; intercepting v4 alone is then complete.
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

fn count_rules(spec: RouteSpec, family: Family, netns: Option<&str>) -> Result<usize, RoutesError> {
    let out = ip(netns, family, &["rule", "show"])?;
    let want_mark = format!("fwmark {:#x} ", spec.mark);
    let want_table = format!("lookup {}", spec.table);
    Ok(out.lines().filter(|l| l.contains(&want_mark) && l.trim_end().ends_with(&want_table)).count())
}

/// Deletes every copy of the rule; returns how many there were.
fn delete_rules(spec: RouteSpec, family: Family, netns: Option<&str>) -> Result<usize, RoutesError> {
    let n = count_rules(spec, family, netns)?;
    for _ in 0..n {
        ip(netns, family, &["rule", "del", "fwmark", &format!("{:#x}", spec.mark), "lookup", &spec.table.to_string()])?;
    }
    Ok(n)
}

fn ip(netns: Option<&str>, family: Family, args: &[&str]) -> Result<String, RoutesError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        check_netns_name(ns)?;
        cmd.args(["-n", ns]);
    }
    cmd.arg(family.flag()).args(args);
    let command =
        format!("ip {}{} {}", netns.map(|n| format!("-n {n} ")).unwrap_or_default(), family.flag(), args.join(" "));
    let out = cmd.output().map_err(|source| RoutesError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " | ");
        return Err(RoutesError::Failed { command, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tables_and_zero_mark_are_rejected() {
        for (mark, table) in [(0, 100), (1, 0), (1, 253), (1, 254), (1, 255)] {
            let e = RouteSpec { mark, table }.check().unwrap_err();
            assert!(matches!(e, RoutesError::Spec(_)), "{e}");
        }
        assert!(RouteSpec { mark: 1, table: 100 }.check().is_ok());
    }

    #[test]
    fn bad_netns_names_fail_before_running_ip() {
        let e = install(RouteSpec { mark: 1, table: 100 }, Some("a/b")).unwrap_err();
        assert!(e.to_string().contains("a/b"), "{e}");
    }
}
