//! Per-flow policy from inspection: a small table of its own, `inet waylume_flows`, whose sets
//! hold the 5-tuples of flows to drop (`block`) or to hold to a low rate (`throttle`). Its
//! elements expire by themselves, so the table is not part of the diffed plan: it is created
//! whole when missing and otherwise only gains elements.
//!
//! A flow found inside IP-in-IP (4in4, 6in4, 4in6, 6in6) has no ports the kernel can see: its
//! packets carry protocol 4 or 41 and the inner header where ports would be. Such a decision
//! keys on the tunnel instead, `outer source . outer protocol . outer destination`, in the
//! `tunnel_*` sets. The outer source is the address WireGuard verified, so only the deciding
//! peer's own tunnel to that one destination is affected.
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::core::classify::{Action, Endpoint};
use crate::core::packet::L4;

pub const FLOW_TABLE: &str = "waylume_flows";
/// How long a decision holds after the flow's last classification.
pub const FLOW_TIMEOUT: &str = "10m";
/// A throttled flow's rate (per flow, both directions counted separately).
pub const THROTTLE_RATE: &str = "32 kbytes/second";

/// The table as one `nft -f` script that creates it whole when missing and brings an existing
/// one up to date in the same transaction: sets are declared (kept, with their elements, when
/// already there), the chain's rules replaced. So a table made by an earlier version gains the
/// sets it lacks without losing the decisions it holds. Runs before the main table's forward
/// chain (priority -10), so a blocked flow's packets are never counted against a cap.
pub fn table() -> String {
    let mut s = format!("table inet {FLOW_TABLE} {{\n");
    for (fam, ty) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
        for (prefix, key) in [
            (
                "",
                format!("{ty} . inet_proto . {ty} . inet_service . inet_service"),
            ),
            ("tunnel_", format!("{ty} . inet_proto . {ty}")),
        ] {
            let _ = writeln!(
                s,
                "  set {prefix}block{fam} {{ type {key}; flags timeout; }}"
            );
            let _ = writeln!(
                s,
                "  set {prefix}throttle{fam} {{ type {key}; flags timeout; }}"
            );
            let _ = writeln!(
                s,
                "  set {prefix}rate{fam} {{ type {key}; flags dynamic,timeout; timeout {FLOW_TIMEOUT}; }}"
            );
        }
    }
    s.push_str(
        "  chain forward {\n    type filter hook forward priority -10; policy accept;\n  }\n}\n",
    );
    let _ = writeln!(s, "flush chain inet {FLOW_TABLE} forward");
    for (fam, ip) in [("4", "ip"), ("6", "ip6")] {
        for (prefix, key) in [
            (
                "",
                format!("{ip} saddr . meta l4proto . {ip} daddr . th sport . th dport"),
            ),
            ("tunnel_", format!("{ip} saddr . meta l4proto . {ip} daddr")),
        ] {
            let rule = |r: &str| format!("add rule inet {FLOW_TABLE} forward {key} {r}\n");
            s.push_str(&rule(&format!("@{prefix}block{fam} drop")));
            s.push_str(&rule(&format!(
                "@{prefix}throttle{fam} update @{prefix}rate{fam} {{ {key} limit rate over {THROTTLE_RATE} }} drop"
            )));
        }
    }
    s
}

/// Whether `nft list table` output shows the table with every kind of rule in place (a table
/// from an earlier version, without the tunnel rules, is not complete).
pub fn table_complete(listing: &str) -> bool {
    let words: Vec<&str> = listing.split_whitespace().collect();
    ["", "tunnel_"].iter().all(|prefix| {
        ["4", "6"].iter().all(|fam| {
            let has = |set: &str, then: Option<&str>| {
                words.windows(2).any(|w| {
                    w[0] == format!("@{prefix}{set}{fam}") && then.is_none_or(|t| w[1] == t)
                })
            };
            has("block", Some("drop")) && has("throttle", Some("update"))
        })
    })
}

/// The `add element` command for one decided flow, both directions; `None` for `report` or a
/// flow whose ends are of different families. With `tunnel` (the outer protocol, 4 or 41) the
/// ends are the tunnel's and the element goes to the tunnel sets, without ports.
pub fn element(
    action: Action,
    l4: L4,
    tunnel: Option<u8>,
    a: &Endpoint,
    b: &Endpoint,
) -> Option<String> {
    let set = match action {
        Action::Report => return None,
        Action::Block => "block",
        Action::Throttle => "throttle",
    };
    let fam = match (a.ip, b.ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => "4",
        (IpAddr::V6(_), IpAddr::V6(_)) => "6",
        _ => return None,
    };
    let one = |x: &Endpoint, y: &Endpoint| match tunnel {
        Some(proto) => format!("{} . {proto} . {} timeout {FLOW_TIMEOUT}", x.ip, y.ip),
        None => format!(
            "{} . {} . {} . {} . {} timeout {FLOW_TIMEOUT}",
            x.ip,
            l4.as_str(),
            y.ip,
            x.port,
            y.port
        ),
    };
    let prefix = if tunnel.is_some() { "tunnel_" } else { "" };
    Some(format!(
        "add element inet {FLOW_TABLE} {prefix}{set}{fam} {{ {}, {} }}\n",
        one(a, b),
        one(b, a)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str, port: u16) -> Endpoint {
        Endpoint {
            ip: s.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn elements_name_both_directions() {
        let e = element(
            Action::Block,
            L4::Tcp,
            None,
            &ep("10.0.0.2", 40000),
            &ep("198.18.2.2", 6881),
        )
        .unwrap();
        assert_eq!(
            e,
            "add element inet waylume_flows block4 { 10.0.0.2 . tcp . 198.18.2.2 . 40000 . 6881 timeout 10m, \
             198.18.2.2 . tcp . 10.0.0.2 . 6881 . 40000 timeout 10m }\n"
        );
        let t = element(
            Action::Throttle,
            L4::Udp,
            None,
            &ep("fd00::2", 5),
            &ep("2001:db8::1", 6),
        )
        .unwrap();
        assert!(t.starts_with(
            "add element inet waylume_flows throttle6 { fd00::2 . udp . 2001:db8::1 . 5 . 6 "
        ));
        assert_eq!(
            element(
                Action::Report,
                L4::Tcp,
                None,
                &ep("10.0.0.2", 1),
                &ep("1.1.1.1", 2)
            ),
            None
        );
        assert_eq!(
            element(
                Action::Block,
                L4::Tcp,
                None,
                &ep("10.0.0.2", 1),
                &ep("fd00::1", 2)
            ),
            None
        );
    }

    /// A flow inside a tunnel keys on the tunnel: outer source, outer protocol, outer
    /// destination, both directions, no ports; 6in4 goes to the IPv4 set, 4in6 to the IPv6 one.
    #[test]
    fn tunnelled_flows_key_on_the_tunnel() {
        let (peer, dest) = (ep("10.0.0.2", 40000), ep("198.18.2.2", 6881));
        assert_eq!(
            element(Action::Block, L4::Tcp, Some(4), &peer, &dest).unwrap(),
            "add element inet waylume_flows tunnel_block4 { 10.0.0.2 . 4 . 198.18.2.2 timeout 10m, \
             198.18.2.2 . 4 . 10.0.0.2 timeout 10m }\n"
        );
        let t = element(Action::Throttle, L4::Udp, Some(41), &peer, &dest).unwrap();
        assert!(t.starts_with(
            "add element inet waylume_flows tunnel_throttle4 { 10.0.0.2 . 41 . 198.18.2.2 timeout"
        ));
        let v6 = element(
            Action::Block,
            L4::Tcp,
            Some(4),
            &ep("fd00::2", 1),
            &ep("2001:db8::9", 2),
        )
        .unwrap();
        assert!(v6.starts_with(
            "add element inet waylume_flows tunnel_block6 { fd00::2 . 4 . 2001:db8::9 timeout"
        ));
        assert_eq!(
            element(Action::Report, L4::Tcp, Some(4), &peer, &dest),
            None
        );
        assert_eq!(
            element(Action::Block, L4::Tcp, Some(41), &peer, &ep("fd00::1", 2)),
            None
        );
    }

    #[test]
    fn the_table_is_recognised_when_complete() {
        let t = table();
        assert!(t.contains("priority -10"));
        assert!(t.contains("flush chain inet waylume_flows forward\n"));
        // As `nft list table` shows it: the rules inside the chain.
        let listed = t.replace("add rule inet waylume_flows forward ", "");
        assert!(table_complete(&listed));
        assert!(!table_complete("table inet waylume_flows {\n}\n"));
        // A table from before the tunnel sets: the 5-tuple rules alone are not enough.
        let old: String = listed
            .lines()
            .filter(|l| !l.contains("@tunnel_"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(old.contains(" @block4 drop"));
        assert!(!table_complete(&old));
        // Nor are the tunnel rules alone, though `@tunnel_block4 drop` ends in `block4 drop`.
        let only_tunnel: String = listed
            .lines()
            .filter(|l| !l.contains(" @block") && !l.contains(" @throttle"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(only_tunnel.contains("@tunnel_block4 drop"));
        assert!(!table_complete(&only_tunnel));
    }
}
