//! The interception table `inet podmesh_tproxy`: inbound TCP for the pod's own addresses
//! goes to the proxy's listeners; no other new inbound flow gets in.
//!
//! ```text
//! table inet podmesh_tproxy {
//!     chain prerouting {
//!         type filter hook prerouting priority mangle; policy accept;
//!         iifname "lo" return                                  # the pod talking to itself
//!         meta l4proto != tcp return                           # only TCP is intercepted (see input)
//!         ct direction reply return                            # replies to our own outbound connections
//!         fib daddr type != local counter drop                 # not addressed to the pod: never proxied
//!         tcp dport { 15006, 15007 } counter reject with tcp reset   # no direct use of the listeners (self-loop)
//!         tcp dport { <#true ports>, <admin port> } return     # plaintext straight to the app
//!         tcp flags != syn / syn,ack socket transparent 1 meta mark set M accept
//!                                                              # packets of proxied connections, never a SYN
//!         tcp dport { <#false ports> } tproxy to :15007 meta mark set M accept
//!         tcp dport { <#false ports> } counter reject with tcp reset     # fail closed: no listener
//!         meta l4proto tcp tproxy to :15006 meta mark set M accept
//!         counter reject with tcp reset                        # fail closed: no listener
//!     }
//!     chain input {
//!         type filter hook input priority filter; policy accept;
//!         iifname "lo" accept
//!         meta l4proto tcp accept                              # decided in prerouting
//!         ct state established,related accept                  # replies (UDP, ICMP, ...) and their errors
//!         meta l4proto icmp icmp type { destination-unreachable, time-exceeded, parameter-problem } accept
//!         meta l4proto ipv6-icmp icmpv6 type { destination-unreachable, packet-too-big, time-exceeded,
//!             parameter-problem, nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept
//!         udp dport { <PODMESH_INGRESS_UDP ports> } accept
//!         counter drop                                         # any other new non-TCP flow
//!     }
//! }
//! ```
//!
//! A `tproxy` statement that finds no transparent socket does not drop; the packet falls
//! through. The reject after each one is what keeps a dead proxy from handing plaintext to
//! the app. The family-less `tproxy to :PORT` serves IPv4 and IPv6 alike. The mark `M`
//! selects the policy route of [`crate::routes`] that delivers the packets locally.
//!
//! The `local default` route of that policy would deliver a packet for *any* address to the
//! proxy, which would then connect "upstream" to that foreign address in plaintext: the
//! host could aim the pod at anything. `fib daddr type` consults the `local` routing table
//! only (no marks, no policy), so it is true for the pod's own addresses alone.
//!
//! The shortcut for packets of existing transparent sockets must not take SYNs: a SYN that
//! reuses the 4-tuple of a connection in TIME_WAIT on our side (we closed first) matches
//! that transparent TIME_WAIT socket, skips `tproxy` and meets the TCP stack without our
//! listener. On kernel 6.18 it is reset: new connections from a recently used source port
//! failed (the read errors of `wrk -H 'Connection: close'`). The only listener the stack
//! could find for it is the app's on the original port. `tproxy` itself hands such a SYN to
//! our listener (`nf_tproxy_handle_time_wait`).

use crate::nft::{self, Rules, TableOp};
use nftables::{
    batch::Batch,
    expr::{
        BinaryOperation, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
        SetItem, Socket, SocketAttr, CT,
    },
    schema::Nftables,
    stmt::{AnonymousCounter, Counter, Mangle, Match, Operator, Reject, RejectType, Statement, TProxy},
    types::{NfChainPolicy, NfFamily, NfHook},
};
use std::borrow::Cow;

/// Table family of the interception table.
pub const FAMILY: NfFamily = NfFamily::INet;
/// Table name of the interception table.
pub const TABLE: &str = "podmesh_tproxy";
/// Its base chain (prerouting hook, mangle priority).
pub const CHAIN: &str = "prerouting";
/// The chain that keeps every other protocol out (input hook, filter priority).
pub const INPUT_CHAIN: &str = "input";
/// Priority `mangle`.
const MANGLE_PRIORITY: i32 = -150;
/// Comment on the drop of TCP not addressed to the pod.
pub const NOT_LOCAL_COMMENT: &str = "podmesh: not addressed to the pod, never proxied";
/// Comment on the final drop of the input chain.
pub const NON_TCP_COMMENT: &str = "podmesh: no new inbound flow but TCP and the listed UDP ports";

/// What to intercept and where to send it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Spec {
    /// Transparent mTLS listener (all intercepted ports not listed below).
    pub mtls_port: u16,
    /// Transparent TLS-only listener (`#false` entries).
    pub tls_port: u16,
    /// Ports passed straight to the app (`#true` entries and the admin port).
    pub passthrough_ports: Vec<u16>,
    /// Ports terminated with TLS but without client authentication (`#false` entries).
    pub tls_only_ports: Vec<u16>,
    /// UDP ports open to new inbound flows (`PODMESH_INGRESS_UDP`); every other non-TCP flow
    /// is dropped.
    pub udp_ports: Vec<u16>,
    /// fwmark of intercepted packets; the policy route matches it. Must be non-zero.
    pub mark: u32,
}

/// Errors of the interception table.
#[derive(Debug, thiserror::Error)]
pub enum TproxyError {
    #[error("invalid interception spec: {0}")]
    Spec(String),
    #[error(transparent)]
    Table(#[from] nft::TableError),
}

impl Spec {
    /// Rejects specs that would loop or leave a port unprotected.
    pub fn check(&self) -> Result<(), TproxyError> {
        let bad = |m: String| Err(TproxyError::Spec(m));
        if self.mark == 0 {
            return bad("the TPROXY mark must be non-zero".into());
        }
        if self.mtls_port == 0 || self.tls_port == 0 || self.mtls_port == self.tls_port {
            return bad(format!(
                "listener ports must be distinct and non-zero (mTLS {}, TLS {})",
                self.mtls_port, self.tls_port
            ));
        }
        let own = [self.mtls_port, self.tls_port];
        for p in self.passthrough_ports.iter().chain(&self.tls_only_ports) {
            if own.contains(p) {
                return bad(format!("port {p} is one of the proxy's own listener ports"));
            }
            if *p == 0 {
                return bad("port 0 cannot be intercepted or passed through".into());
            }
        }
        if self.udp_ports.contains(&0) {
            return bad("UDP port 0 cannot be opened".into());
        }
        if let Some(p) = self.passthrough_ports.iter().find(|p| self.tls_only_ports.contains(p)) {
            return bad(format!("port {p} is both passed through and TLS-only"));
        }
        Ok(())
    }
}

/// Installs (or atomically replaces) the interception table.
pub fn install(spec: &Spec, netns: Option<&str>) -> Result<(), TproxyError> {
    spec.check()?;
    Ok(nft::on_table(TableOp::Install, TABLE, netns, |n| n.apply(&install_batch(spec)))?)
}

/// Removes the interception table; `Ok(false)` when absent.
pub fn remove(netns: Option<&str>) -> Result<bool, TproxyError> {
    Ok(nft::on_table(TableOp::Remove, TABLE, netns, |n| n.delete_table(FAMILY, TABLE))?)
}

/// Whether the interception table exists.
pub fn is_installed(netns: Option<&str>) -> Result<bool, TproxyError> {
    Ok(nft::on_table(TableOp::Inspect, TABLE, netns, |n| n.table_exists(FAMILY, TABLE))?)
}

/// The single transaction [`install`] applies.
pub fn install_batch(spec: &Spec) -> Nftables<'static> {
    let mut batch = Batch::new();
    nft::replace_table(&mut batch, FAMILY, TABLE);
    let prerouting =
        nft::BaseChain { name: CHAIN, hook: NfHook::Prerouting, prio: MANGLE_PRIORITY, policy: NfChainPolicy::Accept };
    nft::add_base_chain(&mut batch, FAMILY, TABLE, prerouting, rules(spec));
    let input = nft::BaseChain { name: INPUT_CHAIN, hook: NfHook::Input, prio: 0, policy: NfChainPolicy::Accept };
    nft::add_base_chain(&mut batch, FAMILY, TABLE, input, input_rules(spec));
    batch.to_nftables()
}

fn rules(spec: &Spec) -> Rules {
    let ret = || Statement::Return(None);
    let tcp = || eq(meta(MetaKey::L4proto), Expression::String("tcp".into()));
    let mark = || Statement::Mangle(Mangle { key: meta(MetaKey::Mark), value: Expression::Number(spec.mark) });
    let reject = || vec![counter(), Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None)))];
    let mut out: Rules = vec![
        (vec![eq(meta(MetaKey::Iifname), Expression::String("lo".into())), ret()], None),
        (
            vec![
                Statement::Match(Match {
                    left: meta(MetaKey::L4proto),
                    right: Expression::String("tcp".into()),
                    op: Operator::NEQ,
                }),
                ret(),
            ],
            None,
        ),
        (
            vec![
                eq(
                    Expression::Named(NamedExpression::CT(CT { key: "direction".into(), family: None, dir: None })),
                    Expression::String("reply".into()),
                ),
                ret(),
            ],
            None,
        ),
        (
            vec![
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::Fib(Fib {
                        result: FibResult::Type,
                        flags: [FibFlag::Daddr].into_iter().collect(),
                    })),
                    right: Expression::String("local".into()),
                    op: Operator::NEQ,
                }),
                counter(),
                Statement::Drop(None),
            ],
            Some(NOT_LOCAL_COMMENT),
        ),
        (
            [vec![dport_in(&[spec.mtls_port, spec.tls_port])], reject()].concat(),
            Some("podmesh: the proxy listeners take no direct connections"),
        ),
    ];
    if !spec.passthrough_ports.is_empty() {
        out.push((vec![dport_in(&spec.passthrough_ports), ret()], Some("podmesh: plaintext ports")));
    }
    out.push((
        vec![
            tcp(),
            Statement::Match(Match { left: syn_ack(), right: Expression::String("syn".into()), op: Operator::NEQ }),
            eq(
                Expression::Named(NamedExpression::Socket(Socket { key: Cow::Owned(SocketAttr::Transparent) })),
                Expression::Number(1),
            ),
            mark(),
            Statement::Accept(None),
        ],
        Some("podmesh: packets of proxied connections (never a SYN: TIME_WAIT reuse goes through tproxy)"),
    ));
    if !spec.tls_only_ports.is_empty() {
        out.push((
            vec![dport_in(&spec.tls_only_ports), tproxy(spec.tls_port), mark(), Statement::Accept(None)],
            Some("podmesh: TLS-only ports"),
        ));
        out.push((
            [vec![dport_in(&spec.tls_only_ports)], reject()].concat(),
            Some("podmesh: fail closed, TLS listener not running"),
        ));
    }
    out.push((vec![tcp(), tproxy(spec.mtls_port), mark(), Statement::Accept(None)], Some("podmesh: mTLS")));
    out.push((reject(), Some("podmesh: fail closed, mTLS listener not running")));
    out
}

/// The input chain: TCP was decided in prerouting; of everything else only replies, the
/// ICMP errors and neighbour discovery that TCP and IPv6 need, and the listed UDP ports.
fn input_rules(spec: &Spec) -> Rules {
    let accept = || Statement::Accept(None);
    let l4 = |p: &'static str| eq(meta(MetaKey::L4proto), Expression::String(p.into()));
    let types = |proto: &'static str, names: &[&'static str]| {
        eq(
            payload(proto, "type"),
            Expression::Named(NamedExpression::Set(
                names.iter().map(|t| SetItem::Element(Expression::String((*t).into()))).collect(),
            )),
        )
    };
    let mut out: Rules = vec![
        (vec![eq(meta(MetaKey::Iifname), Expression::String("lo".into())), accept()], None),
        (vec![l4("tcp"), accept()], Some("podmesh: TCP is decided in prerouting")),
        (
            vec![
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::CT(CT { key: "state".into(), family: None, dir: None })),
                    right: Expression::List(vec![
                        Expression::String("established".into()),
                        Expression::String("related".into()),
                    ]),
                    op: Operator::IN,
                }),
                accept(),
            ],
            None,
        ),
        (
            vec![
                l4("icmp"),
                types("icmp", &["destination-unreachable", "time-exceeded", "parameter-problem"]),
                accept(),
            ],
            Some("podmesh: ICMP errors"),
        ),
        (
            vec![
                l4("ipv6-icmp"),
                types(
                    "icmpv6",
                    &[
                        "destination-unreachable",
                        "packet-too-big",
                        "time-exceeded",
                        "parameter-problem",
                        "nd-neighbor-solicit",
                        "nd-neighbor-advert",
                        "nd-router-advert",
                    ],
                ),
                accept(),
            ],
            Some("podmesh: ICMPv6 errors and neighbour discovery"),
        ),
    ];
    if !spec.udp_ports.is_empty() {
        out.push((vec![ports_in("udp", &spec.udp_ports), accept()], Some("podmesh: UDP ports of PODMESH_INGRESS_UDP")));
    }
    out.push((vec![counter(), Statement::Drop(None)], Some(NON_TCP_COMMENT)));
    out
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(Some(AnonymousCounter::default())))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: protocol.into(),
        field: field.into(),
    })))
}

/// `tcp flags & (syn | ack)`: compared with `syn`, it tells a connection's first segment.
fn syn_ack() -> Expression<'static> {
    Expression::BinaryOperation(Box::new(BinaryOperation::AND(
        payload("tcp", "flags"),
        Expression::List(vec![Expression::String("syn".into()), Expression::String("ack".into())]),
    )))
}

fn tproxy(port: u16) -> Statement<'static> {
    Statement::TProxy(TProxy { family: None, port, addr: None })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op: Operator::EQ })
}

fn dport_in(ports: &[u16]) -> Statement<'static> {
    ports_in("tcp", ports)
}

fn ports_in(protocol: &'static str, ports: &[u16]) -> Statement<'static> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    eq(
        payload(protocol, "dport"),
        Expression::Named(NamedExpression::Set(
            ports.into_iter().map(|p| SetItem::Element(Expression::Number(p.into()))).collect(),
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            mtls_port: 15006,
            tls_port: 15007,
            passthrough_ports: vec![80, 9000],
            tls_only_ports: vec![443],
            udp_ports: vec![53],
            mark: 1,
        }
    }

    #[test]
    fn every_tproxy_rule_is_followed_by_a_reject() {
        let r = rules(&spec());
        for (i, (stmts, _)) in r.iter().enumerate() {
            if stmts.iter().any(|s| matches!(s, Statement::TProxy(_))) {
                let next = &r[i + 1].0;
                assert!(next.iter().any(|s| matches!(s, Statement::Reject(_))), "rule {i} not followed by a reject");
            }
        }
    }

    #[test]
    fn batch_serializes_to_the_documented_ruleset() {
        let json = serde_json::to_string(&install_batch(&spec())).unwrap();
        for needle in [
            r#"{"tproxy":{"port":15006}}"#,
            r#"{"tproxy":{"port":15007}}"#,
            r#"{"mangle":{"key":{"meta":{"key":"mark"}},"value":1}}"#,
            r#"{"match":{"left":{"socket":{"key":"transparent"}},"right":1,"op":"=="}}"#,
            r#"{"match":{"left":{"ct":{"key":"direction"}},"right":"reply","op":"=="}}"#,
            r#""prio":-150"#,
            r#"{"reject":{"type":"tcp reset"}}"#,
            r#"{"match":{"left":{"fib":{"result":"type","flags":["daddr"]}},"right":"local","op":"!="}}"#,
            r#"{"match":{"left":{"&":[{"payload":{"protocol":"tcp","field":"flags"}},["syn","ack"]]},"right":"syn","op":"!="}}"#,
            r#""hook":"input""#,
            r#"{"match":{"left":{"payload":{"protocol":"udp","field":"dport"}},"right":{"set":[53]},"op":"=="}}"#,
        ] {
            assert!(json.contains(needle), "missing {needle} in {json}");
        }
    }

    #[test]
    fn input_chain_ends_in_a_drop_and_opens_udp_only_when_listed() {
        let r = input_rules(&spec());
        assert!(matches!(r.last().unwrap().0.last(), Some(Statement::Drop(_))));
        let json = serde_json::to_string(
            &input_rules(&Spec { udp_ports: vec![], ..spec() }).into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(!json.contains("udp"), "{json}");
    }

    #[test]
    fn not_local_destinations_are_dropped_before_any_return_or_tproxy_of_a_port() {
        let r = rules(&spec());
        let drop = r.iter().position(|(_, c)| *c == Some(NOT_LOCAL_COMMENT)).unwrap();
        let first_port = r.iter().position(|(st, _)| serde_json::to_string(st).unwrap().contains("dport")).unwrap();
        assert!(drop < first_port, "the fib check must come before any port decision");
    }

    #[test]
    fn no_passthrough_or_tls_only_rules_when_empty() {
        let s = Spec { passthrough_ports: vec![], tls_only_ports: vec![], ..spec() };
        let r = rules(&s);
        assert!(!r.iter().any(|(st, _)| st.iter().any(|s| matches!(s, Statement::TProxy(TProxy { port: 15007, .. })))));
        assert_eq!(r.iter().filter(|(st, _)| st.iter().any(|s| matches!(s, Statement::TProxy(_)))).count(), 1);
    }

    #[test]
    fn bad_specs_are_rejected_with_the_reason() {
        let cases = [
            (Spec { mark: 0, ..spec() }, "mark"),
            (Spec { tls_port: 15006, ..spec() }, "distinct"),
            (Spec { passthrough_ports: vec![15006], ..spec() }, "own listener"),
            (Spec { tls_only_ports: vec![80], ..spec() }, "both"),
            (Spec { passthrough_ports: vec![0], ..spec() }, "port 0"),
            (Spec { udp_ports: vec![53, 0], ..spec() }, "UDP port 0"),
        ];
        for (s, needle) in cases {
            let e = s.check().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
