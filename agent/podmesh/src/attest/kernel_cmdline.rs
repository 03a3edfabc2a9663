//! `podmesh.<key>=<value>` settings from the kernel command line, the last source after flags
//! and environment (a podVM gets its per-pod settings there).

/// The value of the last `key=value` token (values may be double-quoted, as the kernel allows).
pub fn value(cmdline: &str, key: &str) -> Option<String> {
    tokens(cmdline).into_iter().rev().find_map(|t| t.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

/// Whether a flag-like key is set: `key`, `key=1|true|yes|on`.
pub fn flag(cmdline: &str, key: &str) -> bool {
    tokens(cmdline).into_iter().rev().find_map(|t| {
        if t == key {
            return Some(true);
        }
        let v = t.strip_prefix(key)?.strip_prefix('=')?;
        Some(matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    }) == Some(true)
}

/// Split like the kernel: whitespace separates, double quotes group (and are dropped).
fn tokens(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
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
    }

    #[test]
    fn flags() {
        assert!(flag("a podmesh.open_without_coordinator b", "podmesh.open_without_coordinator"));
        assert!(flag("podmesh.open_without_coordinator=yes", "podmesh.open_without_coordinator"));
        assert!(!flag("podmesh.open_without_coordinator=0", "podmesh.open_without_coordinator"));
        assert!(!flag("podmesh.open_without_coordinatorx", "podmesh.open_without_coordinator"));
        assert!(!flag("\"unterminated podmesh.open_without_coordinator", "podmesh.open_without_coordinator"));
    }
}
