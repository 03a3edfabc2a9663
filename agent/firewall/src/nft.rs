//! Running `nft` with JSON batches, optionally inside a named network namespace.
//!
//! A batch ([`nftables::schema::Nftables`], usually built with [`nftables::batch::Batch`])
//! is serialized and piped to `nft -j -f -`, which applies it as ONE kernel transaction:
//! either every command takes effect or none does. In a named namespace the same command
//! runs as `ip netns exec NAME nft -j -f -`.
//!
//! Idempotent replacement without `destroy` (nft 1.0.6 has none): start the batch with
//! [`replace_table`], which emits `add table` (a no-op when present), `delete table`,
//! `add table`; the caller then adds chains and rules to the same batch.
//!
//! ```no_run
//! use firewall::nft::{self, Nft};
//! use nftables::{batch::Batch, types::NfFamily};
//! let nft = Nft::new(Some("podns"))?;
//! let mut batch = Batch::new();
//! nft::replace_table(&mut batch, NfFamily::INet, "example");
//! nft.apply(&batch.to_nftables())?;
//! assert!(nft.table_exists(NfFamily::INet, "example")?);
//! nft.delete_table(NfFamily::INet, "example")?;
//! # Ok::<(), firewall::nft::NftError>(())
//! ```

use nftables::{
    batch::Batch,
    schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table},
    stmt::Statement,
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};
use std::{
    borrow::Cow,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Directory where `ip netns` keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Why an `nft` operation failed. Each message is one line naming what failed and why
/// (causes are part of the message, not chained again as `source`).
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("`{program}` not found (searched PATH and /usr/sbin, /sbin): install the nftables package")]
    NftMissing { program: String },
    #[error("`ip` not found in PATH (needed to enter netns {netns:?}): install the iproute2 package")]
    IpMissing { netns: String },
    #[error("invalid network namespace name {0:?}: must be non-empty, without '/', not '.' or '..'")]
    BadNetnsName(String),
    #[error("network namespace {0:?} does not exist (no {NETNS_DIR}/{0})")]
    NoSuchNetns(String),
    #[error("the kernel lacks nf_tables (or a feature the ruleset needs) while {action}: {stderr}")]
    KernelUnsupported { action: String, stderr: String },
    #[error("not permitted to change nftables while {action} (needs root / CAP_NET_ADMIN): {stderr}")]
    NotPermitted { action: String, stderr: String },
    #[error("cannot run `{command}` while {action}: {error}")]
    Spawn { command: String, action: String, error: std::io::Error },
    #[error("`{command}` failed (exit {status}) while {action}: {stderr}")]
    Failed { command: String, action: String, status: String, stderr: String },
    #[error("cannot serialize the nft batch: {0}")]
    Serialize(serde_json::Error),
    #[error("`{command}` printed JSON we cannot parse while {action}: {error}")]
    BadJson { command: String, action: String, error: serde_json::Error },
}

/// Handle on the `nft` of one network namespace (`None` = the caller's own namespace).
#[derive(Debug, Clone)]
pub struct Nft {
    netns: Option<String>,
    nft: PathBuf,
    ip: Option<PathBuf>,
}

impl Nft {
    /// Locates `nft` (and `ip` for a named namespace) and checks that the namespace exists.
    pub fn new(netns: Option<&str>) -> Result<Self, NftError> {
        let nft = find_in_path("nft").ok_or_else(|| NftError::NftMissing { program: "nft".into() })?;
        Self::with_nft(netns, &nft)
    }

    /// Like [`Nft::new`] with an explicit `nft` executable (tests, unusual installs).
    pub fn with_nft(netns: Option<&str>, nft: &Path) -> Result<Self, NftError> {
        if !is_executable(nft) {
            return Err(NftError::NftMissing { program: nft.display().to_string() });
        }
        let nft = nft.to_path_buf();
        let ip = match netns {
            None => None,
            Some(name) => {
                check_netns_name(name)?;
                if !Path::new(NETNS_DIR).join(name).exists() {
                    return Err(NftError::NoSuchNetns(name.to_string()));
                }
                Some(find_in_path("ip").ok_or_else(|| NftError::IpMissing { netns: name.into() })?)
            }
        };
        Ok(Self { netns: netns.map(str::to_string), nft, ip })
    }

    /// The namespace this handle acts in (`None` = our own).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Applies `batch` atomically (`nft -j -f -`): all commands or none.
    pub fn apply(&self, batch: &Nftables) -> Result<(), NftError> {
        let payload = serde_json::to_string(batch).map_err(NftError::Serialize)?;
        self.run(&["-j", "-f", "-"], Some(&payload), "applying a JSON batch").map(|_| ())
    }

    /// Returns the whole ruleset of the namespace.
    pub fn list_ruleset(&self) -> Result<Nftables<'static>, NftError> {
        self.list(&["-j", "list", "ruleset"], "listing the ruleset")
    }

    /// Whether table `family name` exists.
    pub fn table_exists(&self, family: NfFamily, name: &str) -> Result<bool, NftError> {
        let tables = self.list(&["-j", "list", "tables"], "listing tables")?;
        Ok(tables
            .objects
            .iter()
            .any(|o| matches!(o, NfObject::ListObject(NfListObject::Table(t)) if t.family == family && t.name == name)))
    }

    /// Lists table `family name` with its chains and rules, or `None` when absent.
    pub fn list_table(&self, family: NfFamily, name: &str) -> Result<Option<Nftables<'static>>, NftError> {
        if !self.table_exists(family, name)? {
            return Ok(None);
        }
        let fam = family_name(family);
        let action = format!("listing table {fam} {name}");
        self.list(&["-j", "list", "table", fam, name], &action).map(Some)
    }

    /// Deletes table `family name` in one transaction; returns whether it was present.
    /// Absent is not an error (the `add`+`delete` pair makes the batch valid either way).
    pub fn delete_table(&self, family: NfFamily, name: &str) -> Result<bool, NftError> {
        let present = self.table_exists(family, name)?;
        let mut batch = Batch::new();
        batch.add(NfListObject::Table(table(family, name)));
        batch.delete(NfListObject::Table(table(family, name)));
        self.apply(&batch.to_nftables())?;
        Ok(present)
    }

    fn list(&self, args: &[&str], action: &str) -> Result<Nftables<'static>, NftError> {
        let out = self.run(args, None, action)?;
        serde_json::from_str(&out).map_err(|error| NftError::BadJson {
            command: self.describe(args),
            action: action.to_string(),
            error,
        })
    }

    fn command(&self) -> Command {
        match (&self.netns, &self.ip) {
            (Some(ns), Some(ip)) => {
                let mut c = Command::new(ip);
                c.args(["netns", "exec", ns.as_str()]).arg(&self.nft);
                c
            }
            _ => Command::new(&self.nft),
        }
    }

    fn describe(&self, args: &[&str]) -> String {
        let prefix = match &self.netns {
            Some(ns) => format!("ip netns exec {ns} nft"),
            None => "nft".to_string(),
        };
        format!("{prefix} {}", args.join(" "))
    }

    /// Runs nft with `args`, feeding `stdin`; returns stdout or a classified error.
    fn run(&self, args: &[&str], stdin: Option<&str>, action: &str) -> Result<String, NftError> {
        let command = self.describe(args);
        let spawn_err = |error| NftError::Spawn { command: command.clone(), action: action.into(), error };
        let mut child = self
            .command()
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads all of stdin before it answers, so writing first cannot deadlock
            // on a full stdout pipe.
            pipe.write_all(data.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = one_line(&String::from_utf8_lossy(&out.stderr));
        let action = action.to_string();
        Err(classify(command, action, out.status, stderr))
    }
}

fn classify(command: String, action: String, status: std::process::ExitStatus, stderr: String) -> NftError {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("protocol not supported") || lower.contains("operation not supported") {
        NftError::KernelUnsupported { action, stderr }
    } else if lower.contains("operation not permitted") || lower.contains("permission denied") {
        NftError::NotPermitted { action, stderr }
    } else {
        let status = status.code().map_or_else(|| "by signal".to_string(), |c| c.to_string());
        let stderr = if stderr.is_empty() { "(no output)".to_string() } else { stderr };
        NftError::Failed { command, action, status, stderr }
    }
}

/// Appends `add table`, `delete table`, `add table` to `batch`: after it the table exists
/// and is empty, whether or not it existed before, within the same transaction.
pub fn replace_table(batch: &mut Batch<'_>, family: NfFamily, name: &str) {
    batch.add(NfListObject::Table(table(family, name)));
    batch.delete(NfListObject::Table(table(family, name)));
    batch.add(NfListObject::Table(table(family, name)));
}

/// Rules of a chain: the statements of each, with an optional comment.
pub type Rules = Vec<(Vec<Statement<'static>>, Option<&'static str>)>;

/// A filter base chain: its name, where it hooks in, and what happens to a packet no rule decides.
pub struct BaseChain {
    pub name: &'static str,
    pub hook: NfHook,
    pub prio: i32,
    pub policy: NfChainPolicy,
}

/// Appends the filter base chain `chain` of `table`, then its `rules`.
pub fn add_base_chain(batch: &mut Batch<'_>, family: NfFamily, table: &'static str, chain: BaseChain, rules: Rules) {
    batch.add(NfListObject::Chain(Chain {
        family,
        table: table.into(),
        name: chain.name.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(chain.hook),
        prio: Some(chain.prio),
        policy: Some(chain.policy),
        ..Chain::default()
    }));
    add_rules(batch, family, table, chain.name, rules);
}

/// Appends `rules` (statements plus an optional comment each) to `chain` of `table`.
pub fn add_rules(batch: &mut Batch<'_>, family: NfFamily, table: &'static str, chain: &'static str, rules: Rules) {
    for (expr, comment) in rules {
        batch.add(NfListObject::Rule(Rule {
            family,
            table: table.into(),
            chain: chain.into(),
            expr: Cow::Owned(expr),
            comment: comment.map(Cow::Borrowed),
            ..Rule::default()
        }));
    }
}

/// A table object for batches (`family name`).
pub fn table(family: NfFamily, name: &str) -> Table<'static> {
    Table { family, name: Cow::Owned(name.to_string()), handle: None }
}

/// The nft keyword of a family (`inet`, `ip`, `ip6`, ...).
pub fn family_name(family: NfFamily) -> &'static str {
    match family {
        NfFamily::IP => "ip",
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        NfFamily::ARP => "arp",
        NfFamily::Bridge => "bridge",
        NfFamily::NetDev => "netdev",
    }
}

/// " in netns NAME" for error messages, empty in the current namespace.
pub(crate) fn in_netns(netns: &Option<String>) -> String {
    netns.as_ref().map(|n| format!(" in netns {n}")).unwrap_or_default()
}

/// What was being done to one of our tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableOp {
    Install,
    Remove,
    Inspect,
}

impl std::fmt::Display for TableOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableOp::Install => "installing",
            TableOp::Remove => "removing",
            TableOp::Inspect => "inspecting",
        })
    }
}

/// An operation on one of our `inet` tables failed. One line: operation, table, namespace
/// and cause (the cause is part of the message, not chained again).
#[derive(Debug, thiserror::Error)]
#[error("{op} table inet {table}{}: {reason}", in_netns(.netns))]
pub struct TableError {
    pub op: TableOp,
    pub table: &'static str,
    pub netns: Option<String>,
    pub reason: Box<NftError>,
}

/// Runs `f` on the `nft` of `netns`, naming `table` and `op` in any error.
pub fn on_table<T>(
    op: TableOp,
    table: &'static str,
    netns: Option<&str>,
    f: impl FnOnce(&Nft) -> Result<T, NftError>,
) -> Result<T, TableError> {
    let err = |reason| TableError { op, table, netns: netns.map(str::to_string), reason: Box::new(reason) };
    f(&Nft::new(netns).map_err(err)?).map_err(err)
}

/// Same rules as `ip netns add`: a single path component.
pub fn check_netns_name(name: &str) -> Result<(), NftError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NftError::BadNetnsName(name.to_string()));
    }
    Ok(())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    // Daemons may start with a minimal PATH; the sbin directories are where nft and ip live.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// nft errors span several lines (message, offending input, caret line): keep one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names_are_single_path_components() {
        for bad in ["", ".", "..", "a/b", "/abs", "x\0y"] {
            assert!(matches!(check_netns_name(bad), Err(NftError::BadNetnsName(_))), "{bad:?}");
        }
        for good in ["podns", "pmfw-1", "a.b"] {
            assert!(check_netns_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn missing_netns_is_a_clear_error() {
        let err = Nft::new(Some("pmfw-does-not-exist")).unwrap_err();
        assert!(matches!(err, NftError::NoSuchNetns(_)), "{err}");
        assert!(err.to_string().contains("pmfw-does-not-exist"));
    }

    #[test]
    fn replace_table_is_add_delete_add() {
        let mut b = Batch::new();
        replace_table(&mut b, NfFamily::INet, "t");
        let json = serde_json::to_string(&b.to_nftables()).unwrap();
        assert_eq!(
            json,
            r#"{"nftables":[{"add":{"table":{"family":"inet","name":"t"}}},{"delete":{"table":{"family":"inet","name":"t"}}},{"add":{"table":{"family":"inet","name":"t"}}}]}"#
        );
    }

    #[test]
    fn multi_line_nft_errors_become_one_line() {
        let e = "Error: syntax error\nadd rule x\n    ^^^^\n";
        assert_eq!(one_line(e), "Error: syntax error | add rule x");
    }
}
