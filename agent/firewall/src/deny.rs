//! The default-deny ingress table `inet podmesh_deny`.
//!
//! Installed at boot before kata-agent starts containers, removed by the mesh proxy (or by
//! the attest daemon when no mesh is configured) once interception is in place. Ruleset:
//!
//! ```text
//! table inet podmesh_deny {
//!     chain input {
//!         type filter hook input priority filter; policy drop;
//!         iifname "lo" accept
//!         ct state established,related accept
//!         meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept
//!         tcp flags ack / syn,ack accept comment "podmesh: keep connections opened before ..."
//!         counter drop comment "podmesh: default deny until the mesh is ready"
//!     }
//! }
//! ```
//!
//! IPv6 neighbour discovery stays open: without it the pod's own outbound IPv6 (whose replies
//! are `established`) would stop working once neighbour entries expire.
//!
//! TCP segments with ACK and without SYN pass: conntrack only starts tracking in a namespace once a ruleset
//! needs it, so a connection opened before the first install is first seen mid-stream, as
//! `ct state new`. Such segments cannot open a connection (a listener answers them with RST;
//! SYN cookies are only honoured after a SYN-queue overflow, which needs SYNs to get through),
//! so letting them pass keeps established connections alive without opening any port.
//!
//! Every install
//! replaces the table in one transaction (see [`crate::nft::replace_table`]), so installing
//! twice leaves one table and a failed install leaves the previous state untouched.

use crate::nft::{self, TableOp};
use nftables::{
    batch::Batch,
    expr::{BinaryOperation, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem, CT},
    schema::Nftables,
    stmt::{AnonymousCounter, Counter, Match, Operator, Statement},
    types::{NfChainPolicy, NfFamily, NfHook},
};
use std::borrow::Cow;

/// Table family of the deny table.
pub const FAMILY: NfFamily = NfFamily::INet;
/// Table name of the deny table.
pub const TABLE: &str = "podmesh_deny";
/// Name of its base chain (input hook).
pub const CHAIN: &str = "input";
/// Comment on the final drop rule; visible in `nft list table inet podmesh_deny`.
pub const DROP_COMMENT: &str = "podmesh: default deny until the mesh is ready";

/// Comment on the rule that lets conntrack pick up connections that predate the table.
pub const MIDSTREAM_COMMENT: &str = "podmesh: keep connections opened before the table (no SYN, cannot open one)";

/// Errors of the deny table operations.
pub type DenyError = nft::TableError;

/// Installs (or atomically replaces) the deny table. Never leaves a partial ruleset.
pub fn install(netns: Option<&str>) -> Result<(), DenyError> {
    nft::on_table(TableOp::Install, TABLE, netns, |n| n.apply(&install_batch()))
}

/// Removes the deny table; `Ok(false)` when it was not installed (not an error).
pub fn remove(netns: Option<&str>) -> Result<bool, DenyError> {
    nft::on_table(TableOp::Remove, TABLE, netns, |n| n.delete_table(FAMILY, TABLE))
}

/// Whether the deny table exists.
pub fn is_installed(netns: Option<&str>) -> Result<bool, DenyError> {
    nft::on_table(TableOp::Inspect, TABLE, netns, |n| n.table_exists(FAMILY, TABLE))
}

/// The single transaction [`install`] applies: replace the table, add chain and rules.
pub fn install_batch() -> Nftables<'static> {
    let mut batch = Batch::new();
    nft::replace_table(&mut batch, FAMILY, TABLE);
    let chain = nft::BaseChain { name: CHAIN, hook: NfHook::Input, prio: 0, policy: NfChainPolicy::Drop };
    nft::add_base_chain(&mut batch, FAMILY, TABLE, chain, rules());
    batch.to_nftables()
}

fn rules() -> nft::Rules {
    let accept = Statement::Accept(None);
    vec![
        (vec![eq(meta(MetaKey::Iifname), Expression::String("lo".into())), accept.clone()], None),
        (
            vec![
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::CT(CT { key: "state".into(), family: None, dir: None })),
                    right: Expression::List(vec![str_expr("established"), str_expr("related")]),
                    op: Operator::IN,
                }),
                accept.clone(),
            ],
            None,
        ),
        (
            vec![
                eq(meta(MetaKey::L4proto), str_expr("ipv6-icmp")),
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                        protocol: "icmpv6".into(),
                        field: "type".into(),
                    }))),
                    right: Expression::Named(NamedExpression::Set(
                        ["nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert"]
                            .into_iter()
                            .map(|t| SetItem::Element(str_expr(t)))
                            .collect(),
                    )),
                    op: Operator::EQ,
                }),
                accept,
            ],
            None,
        ),
        (
            vec![
                eq(meta(MetaKey::L4proto), str_expr("tcp")),
                eq(
                    Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                        Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                            protocol: "tcp".into(),
                            field: "flags".into(),
                        }))),
                        Expression::List(vec![str_expr("syn"), str_expr("ack")]),
                    ))),
                    str_expr("ack"),
                ),
                Statement::Accept(None),
            ],
            Some(MIDSTREAM_COMMENT),
        ),
        (
            vec![Statement::Counter(Counter::Anonymous(Some(AnonymousCounter::default()))), Statement::Drop(None)],
            Some(DROP_COMMENT),
        ),
    ]
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn str_expr(s: &'static str) -> Expression<'static> {
    Expression::String(Cow::Borrowed(s))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op: Operator::EQ })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_starts_by_replacing_the_table_and_has_one_base_chain() {
        let json = serde_json::to_value(install_batch()).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        assert_eq!(cmds[0]["add"]["table"]["name"], TABLE);
        assert_eq!(cmds[1]["delete"]["table"]["name"], TABLE);
        assert_eq!(cmds[2]["add"]["table"]["name"], TABLE);
        assert_eq!(cmds[3]["add"]["chain"]["hook"], "input");
        assert_eq!(cmds[3]["add"]["chain"]["policy"], "drop");
        assert_eq!(cmds.len(), 4 + 5);
    }

    #[test]
    fn error_names_the_netns() {
        let err = install(Some("pmfw-nonexistent-ns")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("podmesh_deny") && msg.contains("pmfw-nonexistent-ns"), "{msg}");
    }
}
