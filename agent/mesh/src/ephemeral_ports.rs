//! A startup check: listener ports the kernel may also hand out as ephemeral source ports.
//!
//! A port inside `net.ipv4.ip_local_port_range` (which also governs IPv6) and not in
//! `net.ipv4.ip_local_reserved_ports` can be taken by any outgoing connection of the pod;
//! while that connection lives, our next start cannot bind the port and the pod stays
//! closed. Linux's default range (32768-60999) does not contain our defaults, but pods
//! that widen it do. We warn rather than fail: the port may well be free.

/// Ports of `ports` inside `range` ("low high") and not covered by `reserved`
/// ("a-b,c,..."). Unreadable text yields no clash (we only warn).
pub fn clashes(range: &str, reserved: &str, ports: &[u16]) -> Vec<u16> {
    let mut bounds = range.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(low)), Some(Ok(high))) = (bounds.next(), bounds.next()) else { return Vec::new() };
    let reserved: Vec<(u16, u16)> = reserved
        .trim()
        .split(',')
        .filter_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect();
    let mut out: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| (low..=high).contains(p) && !reserved.iter().any(|(a, b)| (*a..=*b).contains(p)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Logs one warning when any of `ports` may be taken as an ephemeral port.
pub fn warn_on_clash(ports: &[u16]) {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap_or_default();
    let range = read("ip_local_port_range");
    let clash = clashes(&range, &read("ip_local_reserved_ports"), ports);
    if !clash.is_empty() {
        let list: Vec<String> = clash.iter().map(u16::to_string).collect();
        tracing::warn!(
            PODMESH_EVENT = "ports_ephemeral",
            "listener port(s) {} lie in net.ipv4.ip_local_port_range ({}) and are not reserved: an outgoing connection can hold one and make a restart fail to bind; add them to net.ipv4.ip_local_reserved_ports",
            list.join(","),
            range.split_whitespace().collect::<Vec<_>>().join("-")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::clashes;

    #[test]
    fn ports_in_the_range_and_not_reserved_clash() {
        assert_eq!(clashes("32768\t60999\n", "\n", &[15006, 15007, 9901]), Vec::<u16>::new());
        assert_eq!(clashes("10240 65000", "", &[15007, 15006, 15006, 80]), vec![15006, 15007]);
        assert_eq!(clashes("10240 65000", "15006-15007\n", &[15006, 15007, 20000]), vec![20000]);
        assert_eq!(clashes("10240 65000", "15006,20000-20010", &[15006, 15007, 20005]), vec![15007]);
        assert_eq!(clashes("garbage", "", &[15006]), Vec::<u16>::new(), "unreadable: no warning");
    }
}
