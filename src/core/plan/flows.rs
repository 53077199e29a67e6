//! Per-flow policy from inspection: a small table of its own, `inet waylume_flows`, whose sets
//! hold the 5-tuples of flows to drop (`block`) or to hold to a low rate (`throttle`). Its
//! elements expire by themselves, so the table is not part of the diffed plan: it is created
//! whole when missing and otherwise only gains elements.
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::core::classify::{Action, Endpoint};
use crate::core::packet::L4;

pub const FLOW_TABLE: &str = "waylume_flows";
/// How long a decision holds after the flow's last classification.
pub const FLOW_TIMEOUT: &str = "10m";
/// A throttled flow's rate (per flow, both directions counted separately).
pub const THROTTLE_RATE: &str = "32 kbytes/second";

/// The whole table as one `nft -f` script. Runs before the main table's forward chain
/// (priority -10), so a blocked flow's packets are never counted against a cap.
pub fn table() -> String {
    let mut s = format!("table inet {FLOW_TABLE} {{\n");
    for (fam, ty) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
        let key = format!("{ty} . inet_proto . {ty} . inet_service . inet_service");
        let _ = writeln!(s, "  set block{fam} {{ type {key}; flags timeout; }}");
        let _ = writeln!(s, "  set throttle{fam} {{ type {key}; flags timeout; }}");
        let _ = writeln!(
            s,
            "  set rate{fam} {{ type {key}; flags dynamic,timeout; timeout {FLOW_TIMEOUT}; }}"
        );
    }
    s.push_str("  chain forward {\n    type filter hook forward priority -10; policy accept;\n");
    for (fam, ip) in [("4", "ip"), ("6", "ip6")] {
        let tuple = format!("{ip} saddr . meta l4proto . {ip} daddr . th sport . th dport");
        let _ = writeln!(s, "    {tuple} @block{fam} drop");
        let _ = writeln!(
            s,
            "    {tuple} @throttle{fam} update @rate{fam} {{ {tuple} limit rate over {THROTTLE_RATE} }} drop"
        );
    }
    s.push_str("  }\n}\n");
    s
}

/// Whether `nft list table` output shows the table with both kinds of rules in place.
pub fn table_complete(listing: &str) -> bool {
    ["@block4 drop", "@block6 drop", "@throttle4", "@throttle6"]
        .iter()
        .all(|m| listing.contains(m))
}

/// The `add element` command for one decided flow, both directions; `None` for `report` or a
/// flow whose ends are of different families.
pub fn element(action: Action, l4: L4, a: &Endpoint, b: &Endpoint) -> Option<String> {
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
    let proto = match l4 {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
    };
    let one = |x: &Endpoint, y: &Endpoint| {
        format!(
            "{} . {proto} . {} . {} . {} timeout {FLOW_TIMEOUT}",
            x.ip, y.ip, x.port, y.port
        )
    };
    Some(format!(
        "add element inet {FLOW_TABLE} {set}{fam} {{ {}, {} }}\n",
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
                &ep("10.0.0.2", 1),
                &ep("1.1.1.1", 2)
            ),
            None
        );
        assert_eq!(
            element(
                Action::Block,
                L4::Tcp,
                &ep("10.0.0.2", 1),
                &ep("fd00::1", 2)
            ),
            None
        );
    }

    #[test]
    fn the_table_is_recognised_when_complete() {
        let t = table();
        assert!(t.contains("priority -10"));
        assert!(table_complete(&t));
        assert!(!table_complete("table inet waylume_flows {\n}\n"));
    }
}
