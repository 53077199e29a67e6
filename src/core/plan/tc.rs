//! The traffic-control half of the plan: per device an HTB root, a parent class, the u32 hash
//! tables that find a peer's class in two lookups, and per shaped peer a class, a pfifo leaf and
//! one bucket filter. Download is shaped on the WireGuard interface's egress (keyed on the
//! destination), upload on the IFB's egress (keyed on the source).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::PlanInput;
use super::ids::{HT_L2_BASE, HT_TOP, Layout, PRIO, Slot, fh};

/// Which address a device's filters key on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Towards peers: destination address, IPv4 header offset 16.
    Down,
    /// From peers: source address, offset 12.
    Up,
}

impl Dir {
    pub fn field(self) -> &'static str {
        match self {
            Dir::Down => "dst",
            Dir::Up => "src",
        }
    }
    pub fn offset(self) -> i32 {
        match self {
            Dir::Down => 16,
            Dir::Up => 12,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcDevPlan {
    pub dev: String,
    pub dir: Dir,
    /// `false`: the device should hold none of our qdiscs.
    pub enabled: bool,
    pub layout: Layout,
    /// Shaped peers by class minor: (slot, kbit/s).
    pub classes: BTreeMap<u16, (Slot, u32)>,
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
        let mut down = BTreeMap::new();
        let mut up = BTreeMap::new();
        for p in &input.peers {
            let Some(slot) = Slot::of(input.subnet, p.addr) else {
                continue;
            };
            if let Some(k) = p.download_kbps {
                down.insert(slot.minor, (slot, k));
            }
            if let Some(k) = p.upload_kbps {
                up.insert(slot.minor, (slot, k));
            }
        }
        let dev = |dev: &str, dir, classes, redirect_to| TcDevPlan {
            dev: dev.to_string(),
            dir,
            enabled: input.shaping,
            layout: layout.clone(),
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

/// One u32 filter as the plan wants it; compared field by field with what tc reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    pub handle: (u16, u8, u16),
    /// The match: value and mask of the 32-bit word at `off`.
    pub value: u32,
    pub mask: u32,
    pub off: i32,
    /// `(mask, off)` of the hash key when the filter links to another table.
    pub hash: Option<(u32, i32)>,
    pub link: Option<u16>,
    pub flowid: Option<String>,
}

impl FilterSpec {
    fn net(handle: (u16, u8, u16), net: Ipv4Net, dir: Dir) -> FilterSpec {
        FilterSpec {
            handle,
            value: u32::from(net.network()),
            mask: u32::from(net.netmask()),
            off: dir.offset(),
            hash: None,
            link: None,
            flowid: None,
        }
    }

    pub fn line(&self, dev: &str, dir: Dir) -> String {
        let (ht, bkt, _) = self.handle;
        let net = Ipv4Net::with_netmask(Ipv4Addr::from(self.value), Ipv4Addr::from(self.mask))
            .map(|n| n.to_string())
            .unwrap_or_default();
        let mut s = format!(
            "filter replace dev {dev} parent 1: prio {PRIO} handle {} protocol ip u32 ht {ht:x}:{bkt:x}: match ip {} {net}",
            fh(self.handle),
            dir.field()
        );
        if let Some((mask, off)) = self.hash {
            s.push_str(&format!(" hashkey mask 0x{mask:08x} at {off}"));
        }
        if let Some(l) = self.link {
            s.push_str(&format!(" link {l:x}:"));
        }
        if let Some(f) = &self.flowid {
            s.push_str(&format!(" flowid {f}"));
        }
        s
    }
}

impl TcDevPlan {
    /// The hash tables: the top one and, for large subnets, one per third byte.
    pub fn tables(&self) -> Vec<u16> {
        let mut t = vec![HT_TOP];
        t.extend(
            self.layout
                .third_bytes
                .iter()
                .map(|b| HT_L2_BASE + u16::from(*b)),
        );
        t
    }

    /// Filters that lead from the root table to the peers' tables; fixed for a subnet.
    pub fn link_filters(&self) -> Vec<FilterSpec> {
        let l = &self.layout;
        let shift = if l.two_level { 8 } else { 0 };
        let mut root = FilterSpec::net((0x800, 0, 1), l.net, self.dir);
        root.hash = Some((0xffu32 << shift, self.dir.offset()));
        root.link = Some(HT_TOP);
        let mut v = vec![root];
        let [a, b, _, _] = l.net.network().octets();
        for b3 in &l.third_bytes {
            let net = Ipv4Net::new(Ipv4Addr::new(a, b, *b3, 0), 24).unwrap_or(l.net);
            let mut f = FilterSpec::net((HT_TOP, *b3, 1), net, self.dir);
            f.hash = Some((0xff, self.dir.offset()));
            f.link = Some(HT_L2_BASE + u16::from(*b3));
            v.push(f);
        }
        v
    }

    pub fn peer_filter(&self, slot: &Slot, addr: Ipv4Addr) -> FilterSpec {
        let mut f = FilterSpec::net(slot.filter(&self.layout), Ipv4Net::from(addr), self.dir);
        f.flowid = Some(slot.classid());
        f
    }

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

    pub fn table_line(&self, ht: u16) -> String {
        format!(
            "filter add dev {} parent 1: prio {PRIO} handle {ht:x}: protocol ip u32 divisor 256",
            self.dev
        )
    }
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

/// `class add|change` for a peer.
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

pub fn filter_del_line(dev: &str, handle: (u16, u8, u16)) -> String {
    format!(
        "filter del dev {dev} parent 1: prio {PRIO} handle {} protocol ip u32",
        fh(handle)
    )
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
