//! `podmesh.<key>=<value>` settings from the kernel command line, the last source after flags
//! and environment (a podVM gets its per-pod settings there). Tokenizing is the config
//! grammar's (`mesh::config::parse_cmdline`: quotes, `--` ends the kernel's part).

/// The value of the last `key=value` token.
pub fn value(cmdline: &str, key: &str) -> Option<String> {
    mesh::config::parse_cmdline(cmdline).into_iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Whether a flag-like key is set: `key`, `key=1|true|yes|on` (the last occurrence counts).
pub fn flag(cmdline: &str, key: &str) -> bool {
    let tokens = mesh::config::parse_cmdline(cmdline);
    let Some((_, v)) = tokens.iter().rev().find(|(k, _)| k == key) else { return false };
    v.is_empty() || on_off(v) == Some(true)
}

/// `on|true|yes|1` → true, `off|false|no|0` → false (any case), anything else → `None`.
pub fn on_off(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_last_value_and_handles_quotes() {
        let c = "ro quiet podmesh.coordinator=10.0.0.1:1313 podmesh.coordinator_fingerprint=\"ab cd\" podmesh.coordinator=c:1\n";
        assert_eq!(value(c, "podmesh.coordinator").as_deref(), Some("c:1"));
        assert_eq!(value(c, "podmesh.coordinator_fingerprint").as_deref(), Some("ab cd"));
        assert_eq!(value(c, "podmesh.coord"), None);
        assert_eq!(value("", "x"), None);
        assert_eq!(value("podmesh.coordinator=", "podmesh.coordinator").as_deref(), Some(""));
        assert_eq!(value("a -- podmesh.coordinator=init:1", "podmesh.coordinator"), None, "init's arguments are not ours");
    }

    #[test]
    fn flags() {
        let key = "podmesh.open_without_coordinator";
        assert!(flag("a podmesh.open_without_coordinator b", key));
        assert!(flag("podmesh.open_without_coordinator=yes", key));
        assert!(!flag("podmesh.open_without_coordinator=0", key));
        assert!(!flag("podmesh.open_without_coordinator=1 podmesh.open_without_coordinator=off", key));
        assert!(!flag("podmesh.open_without_coordinatorx", key));
        assert!(!flag("", key));
    }
}
