//! The nftables half of the plan: chains with their rules, the blocked-destination sets, one named
//! quota per peer and the address → quota maps that find it in one lookup per packet.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::PlanInput;
use super::ids::{TABLE, UNLIMITED_QUOTA, fingerprint, quota_name};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    pub name: &'static str,
    pub kind: &'static str,
    pub hook: &'static str,
    pub prio: i32,
    pub rules: Vec<Rule>,
}

/// A rule and the comment that identifies it on read-back: `wl:<key>:<fingerprint of text>`.
/// Comparing comments is exact and does not depend on how nft prints expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub text: String,
    pub comment: String,
}

impl Rule {
    fn new(key: &str, text: String) -> Rule {
        let comment = format!("wl:{key}:{:08x}", fingerprint(&text));
        Rule { text, comment }
    }

    pub fn render(&self) -> String {
        format!("{} comment \"{}\"", self.text, self.comment)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub name: &'static str,
    pub ty: &'static str,
    /// Normalised `addr/len` strings, overlapping prefixes already merged.
    pub elems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSpec {
    pub limit: u64,
    /// Written only when the quota is created.
    pub used: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftPlan {
    pub chains: Vec<ChainSpec>,
    pub sets: Vec<SetSpec>,
    pub quotas: BTreeMap<String, QuotaSpec>,
    pub peers4: BTreeMap<Ipv4Addr, String>,
    pub peers6: BTreeMap<Ipv6Addr, String>,
}

pub const MAP4: &str = "peers4";
pub const MAP6: &str = "peers6";

impl NftPlan {
    pub fn build(input: &PlanInput) -> NftPlan {
        let mut quotas = BTreeMap::new();
        let mut peers4 = BTreeMap::new();
        let mut peers6 = BTreeMap::new();
        for p in &input.peers {
            let name = quota_name(p.addr);
            quotas.insert(
                name.clone(),
                QuotaSpec {
                    limit: p.cap_bytes.unwrap_or(UNLIMITED_QUOTA),
                    used: p.used_bytes,
                },
            );
            if let Some(v6) = p.addr_v6 {
                peers6.insert(v6, name.clone());
            }
            peers4.insert(p.addr, name);
        }
        let blocked4 = Ipv4Net::aggregate(&input.blocked_v4);
        let blocked6 = Ipv6Net::aggregate(&input.blocked_v6);
        NftPlan {
            chains: chains(input),
            sets: vec![
                SetSpec {
                    name: "blocked4",
                    ty: "ipv4_addr",
                    elems: blocked4.iter().map(|n| n.to_string()).collect(),
                },
                SetSpec {
                    name: "blocked6",
                    ty: "ipv6_addr",
                    elems: blocked6.iter().map(|n| n.to_string()).collect(),
                },
            ],
            quotas,
            peers4,
            peers6,
        }
    }
}

fn chains(input: &PlanInput) -> Vec<ChainSpec> {
    let wg = &input.iface;
    let mut fwd = Vec::new();
    if input.isolate {
        fwd.push(Rule::new(
            "iso-peers",
            format!("iifname \"{wg}\" oifname \"{wg}\" drop"),
        ));
    }
    for (key, fam, set) in [("block4", "ip", "blocked4"), ("block6", "ip6", "blocked6")] {
        let text = format!(
            "iifname \"{wg}\" {fam} daddr @{set} ct state != {{ established, related }} drop"
        );
        fwd.push(Rule::new(key, text));
    }
    // Quotas come last among the tunnel's rules so that isolated traffic is never charged.
    // Under its quota a packet is accepted; over it, or with no quota at all, it is dropped.
    for (dir, io, field) in [("up", "iifname", "saddr"), ("down", "oifname", "daddr")] {
        for (fam, map) in [("ip", MAP4), ("ip6", MAP6)] {
            let text = format!("{io} \"{wg}\" quota name {fam} {field} map @{map} accept");
            fwd.push(Rule::new(&format!("quota-{dir}-{fam}"), text));
        }
        fwd.push(Rule::new(
            &format!("unknown-{dir}"),
            format!("{io} \"{wg}\" drop"),
        ));
    }
    let mut inp = Vec::new();
    if input.isolate {
        // Default deny from the tunnel to the node itself: API, metrics, SSH and anything else
        // listening, on any of the node's addresses. WireGuard's own UDP port is reached from
        // outside the tunnel and never passes here.
        let rules = [
            ("node-est", "ct state { established, related } accept"),
            ("node-ping", "icmp type echo-request accept"),
            ("node-ping6", "icmpv6 type echo-request accept"),
            ("node-deny", "drop"),
        ];
        for (key, tail) in rules {
            inp.push(Rule::new(key, format!("iifname \"{wg}\" {tail}")));
        }
    }
    let out = match &input.outward {
        Some(o) => format!("oifname \"{o}\""),
        None => format!("oifname != \"{wg}\""),
    };
    let mut nat = vec![Rule::new(
        "masq4",
        format!("{out} ip saddr {} masquerade", input.subnet.trunc()),
    )];
    if let Some(v6) = input.subnet_v6 {
        nat.push(Rule::new(
            "masq6",
            format!("{out} ip6 saddr {} masquerade", v6.trunc()),
        ));
    }
    vec![
        chain("forward", "filter", "forward", 0, fwd),
        chain("input", "filter", "input", 0, inp),
        chain("postrouting", "nat", "postrouting", 100, nat),
    ]
}

fn chain(
    name: &'static str,
    kind: &'static str,
    hook: &'static str,
    prio: i32,
    rules: Vec<Rule>,
) -> ChainSpec {
    ChainSpec {
        name,
        kind,
        hook,
        prio,
        rules,
    }
}

impl ChainSpec {
    /// `add chain …` with its hook, for a batch.
    pub fn add_line(&self) -> String {
        format!(
            "add chain inet {TABLE} {} {{ type {} hook {} priority {}; policy accept; }}",
            self.name, self.kind, self.hook, self.prio
        )
    }

    pub fn rule_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.rules
            .iter()
            .map(|r| format!("add rule inet {TABLE} {} {}", self.name, r.render()))
    }
}

pub fn quota_line(name: &str, q: &QuotaSpec) -> String {
    format!(
        "add quota inet {TABLE} {name} {{ until {} bytes used {} bytes }}",
        q.limit, q.used
    )
}

/// `{ k : "v", … }` for a map, or `None` when there is nothing to add.
pub fn map_elems<K: std::fmt::Display>(m: &BTreeMap<K, String>) -> Option<String> {
    if m.is_empty() {
        return None;
    }
    let body: Vec<String> = m.iter().map(|(k, v)| format!("{k} : \"{v}\"")).collect();
    Some(format!("{{ {} }}", body.join(", ")))
}

pub fn set_line(s: &SetSpec) -> String {
    format!(
        "add set inet {TABLE} {} {{ type {}; flags interval; }}",
        s.name, s.ty
    )
}

pub fn map_line(name: &str, ty: &str) -> String {
    format!("add map inet {TABLE} {name} {{ type {ty} : quota; }}")
}

/// The whole table as one `nft -f` script: create (or replace) it in one transaction.
/// `exists` deletes the old table first, inside the same transaction.
pub fn render_table(plan: &NftPlan, exists: bool) -> String {
    let mut s = String::new();
    if exists {
        let _ = writeln!(s, "delete table inet {TABLE}");
    }
    let _ = writeln!(s, "add table inet {TABLE}");
    for (name, q) in &plan.quotas {
        let _ = writeln!(s, "{}", quota_line(name, q));
    }
    for (name, ty) in [(MAP4, "ipv4_addr"), (MAP6, "ipv6_addr")] {
        let _ = writeln!(s, "{}", map_line(name, ty));
    }
    if let Some(e) = map_elems(&plan.peers4) {
        let _ = writeln!(s, "add element inet {TABLE} {MAP4} {e}");
    }
    if let Some(e) = map_elems(&plan.peers6) {
        let _ = writeln!(s, "add element inet {TABLE} {MAP6} {e}");
    }
    for set in &plan.sets {
        let _ = writeln!(s, "{}", set_line(set));
        if !set.elems.is_empty() {
            let _ = writeln!(
                s,
                "add element inet {TABLE} {} {{ {} }}",
                set.name,
                set.elems.join(", ")
            );
        }
    }
    for c in &plan.chains {
        let _ = writeln!(s, "{}", c.add_line());
        for r in c.rule_lines() {
            let _ = writeln!(s, "{r}");
        }
    }
    s
}
