//! The traffic-control half of the plan: per device an HTB root, a parent class, the u32 hash
//! tables that find a peer's class (see `u32`), and per shaped peer a class, a pfifo leaf and
//! one bucket filter per address family. Download is shaped on the WireGuard interface's egress
//! (keyed on the destination), upload on the IFB's egress (keyed on the source).
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv6Net;

use super::PlanInput;
use super::ids::{Layout, PRIO, Slot, shapable_v6, v6_addr};

/// Which address a device's filters key on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Towards peers: the destination address.
    Down,
    /// From peers: the source address.
    Up,
}

impl Dir {
    pub fn field(self) -> &'static str {
        match self {
            Dir::Down => "dst",
            Dir::Up => "src",
        }
    }
}

/// One shaped peer on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerClass {
    pub slot: Slot,
    pub kbps: u32,
    /// Its IPv6 address is the prefix's host at the same offset, so an IPv6 filter leads to
    /// the class too.
    pub v6: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcDevPlan {
    pub dev: String,
    pub dir: Dir,
    /// `false`: the device should hold none of our qdiscs.
    pub enabled: bool,
    pub layout: Layout,
    /// The IPv6 prefix whose hosts are shaped too.
    pub v6: Option<Ipv6Net>,
    /// Shaped peers by class minor.
    pub classes: BTreeMap<u16, PeerClass>,
    /// On the WireGuard interface: the IFB its ingress is redirected to.
    pub redirect_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcPlan {
    /// The WireGuard interface first, then the IFB.
    pub devs: Vec<TcDevPlan>,
}

impl TcPlan {
    pub fn build(input: &PlanInput) -> TcPlan {
        let layout = Layout::of(input.subnet);
        let v6 = shaping_v6(input);
        let mut down = BTreeMap::new();
        let mut up = BTreeMap::new();
        for p in &input.peers {
            let Some(slot) = Slot::of(input.subnet, p.addr) else {
                continue;
            };
            let v6 = has_v6_filter(v6, &slot, p);
            if let Some(kbps) = p.download_kbps {
                down.insert(slot.minor, PeerClass { slot, kbps, v6 });
            }
            if let Some(kbps) = p.upload_kbps {
                up.insert(slot.minor, PeerClass { slot, kbps, v6 });
            }
        }
        let dev = |dev: &str, dir, classes, redirect_to| TcDevPlan {
            dev: dev.to_string(),
            dir,
            enabled: input.shaping,
            layout: layout.clone(),
            v6,
            classes,
            redirect_to,
        };
        TcPlan {
            devs: vec![
                dev(&input.iface, Dir::Down, down, Some(input.ifb.clone())),
                dev(&input.ifb, Dir::Up, up, None),
            ],
        }
    }
}

impl TcDevPlan {
    /// The peer address behind a class minor.
    pub fn addr_of(&self, minor: u16) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.layout.net.network()) + u32::from(minor))
    }

    pub fn root_line(&self) -> String {
        format!(
            "qdisc replace dev {} root handle 1: htb default 0 r2q 10",
            self.dev
        )
    }

    /// The parent of every peer class; never limits (peer classes have rate = ceil), so its
    /// rate is the top of what a limit may be. Burst is explicit: tc computes 0 at such rates.
    pub fn parent_line(&self) -> String {
        format!(
            "class replace dev {} parent 1: classid 1:1 htb rate {PARENT_KBPS}kbit ceil {PARENT_KBPS}kbit burst 1000000 cburst 1000000 quantum 60000",
            self.dev
        )
    }
}

/// The node's IPv6 prefix, when its hosts can be shaped (see `ids::shapable_v6`).
pub fn shaping_v6(input: &PlanInput) -> Option<Ipv6Net> {
    input.subnet_v6.filter(|n| shapable_v6(*n))
}

/// A peer's IPv6 traffic is classified when its address is the prefix's host at its offset:
/// what the address pool hands out. An address from another prefix (one configured before)
/// is not in the hash tables' reach; its traffic stays unclassified, as before IPv6 shaping.
pub fn has_v6_filter(v6: Option<Ipv6Net>, slot: &Slot, p: &super::PeerPolicy) -> bool {
    v6.is_some_and(|net| p.addr_v6 == Some(v6_addr(net, slot.minor)))
}

pub const PARENT_KBPS: u32 = super::MAX_KBPS;

/// Shaping parameters for a rate: burst ≈ 10 ms, quantum ≈ rate / 10, leaf queue ≈ 100 ms.
pub fn shape(kbps: u32) -> (u64, u64, u64) {
    let bps = u64::from(kbps) * 125;
    let burst = (bps / 100).clamp(4000, 1 << 30);
    let quantum = (bps / 10).clamp(1600, 200_000);
    let limit = (bps / 10 / 1500).clamp(32, 1000);
    (burst, quantum, limit)
}

/// `class add|replace|change` for a peer.
pub fn class_line(verb: &str, dev: &str, slot: &Slot, kbps: u32) -> String {
    let (burst, quantum, _) = shape(kbps);
    format!(
        "class {verb} dev {dev} parent 1:1 classid {} htb rate {kbps}kbit ceil {kbps}kbit burst {burst} cburst {burst} quantum {quantum}",
        slot.classid()
    )
}

pub fn leaf_line(dev: &str, slot: &Slot, kbps: u32) -> String {
    let (_, _, limit) = shape(kbps);
    format!(
        "qdisc replace dev {dev} parent {} handle {} pfifo limit {limit}",
        slot.classid(),
        slot.leaf()
    )
}

/// A class and its queue made ahead for an address no peer holds yet, so the peer that gets it
/// changes a class rather than creating one (see `ops::shape_ops`). `add`, not `replace`: if a
/// peer got the address meanwhile, these fail and leave its class as it is. At the parent's
/// rate, a spare limits nothing.
pub fn spare_lines(dev: &str, slot: &Slot) -> [String; 2] {
    let (_, _, limit) = shape(PARENT_KBPS);
    [
        class_line("add", dev, slot, PARENT_KBPS),
        format!(
            "qdisc add dev {dev} parent {} handle {} pfifo limit {limit}",
            slot.classid(),
            slot.leaf()
        ),
    ]
}

/// The spare lines for `addrs` on each shaped device whose classes are known (`have`: the
/// minors each device holds, which the spares join); addresses that have a class are skipped.
pub fn spare_tc(
    input: &PlanInput,
    addrs: &[Ipv4Addr],
    have: &mut BTreeMap<String, BTreeSet<u16>>,
) -> Vec<String> {
    let mut out = Vec::new();
    if !input.shaping {
        return out;
    }
    for dev in [&input.iface, &input.ifb] {
        let Some(known) = have.get_mut(dev.as_str()) else {
            continue;
        };
        for slot in addrs.iter().filter_map(|a| Slot::of(input.subnet, *a)) {
            if known.insert(slot.minor) {
                out.extend(spare_lines(dev, &slot));
            }
        }
    }
    out
}

pub fn class_del_line(dev: &str, minor: u16) -> String {
    format!("class del dev {dev} classid 1:{minor:x}")
}

/// Redirect everything arriving on the interface to the IFB, whose egress is shaped.
/// `u32 match u32 0 0` because matchall is not available on every kernel.
pub fn ingress_lines(dev: &str, ifb: &str) -> [String; 2] {
    [
        format!("qdisc add dev {dev} handle ffff: ingress"),
        format!(
            "filter add dev {dev} parent ffff: prio {PRIO} protocol all u32 match u32 0 0 action mirred egress redirect dev {ifb}"
        ),
    ]
}
