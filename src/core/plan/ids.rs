//! Names and numbers derived from a peer's address, so that everything the kernel reports maps
//! back to one peer without a lookup table of our own.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The nftables table the daemon owns (family `inet`).
pub const TABLE: &str = "waylume";

/// The limit of an uncapped peer's quota. Every peer has a quota so that usage is counted for
/// all of them and a peer missing from the map is dropped rather than passed uncounted.
pub const UNLIMITED_QUOTA: u64 = 1 << 62;

/// The u32 hash table keyed on the last address byte (single level) or on the third (two levels).
pub const HT_TOP: u16 = 0x10;
/// Two-level layouts: the table for third byte `b` is `HT_L2_BASE + b`.
pub const HT_L2_BASE: u16 = 0x100;
/// Filter priority of the IPv4 u32 filters (and of the ingress redirect).
pub const PRIO: u16 = 1;
/// The IPv6 counterparts: tc keeps one protocol per priority, and hash-table ids are shared by
/// every priority of a qdisc, so IPv6 has its own priority and its own table ids. Table ids
/// below 0x800 are never taken by the kernel, which numbers each priority's root 0x800 and up.
pub const PRIO6: u16 = 2;
pub const HT6_TOP: u16 = 0x20;
pub const HT6_L2_BASE: u16 = 0x200;
/// Stands for a priority's root table, whose id the kernel chooses (`fff:` is also what the
/// kernel calls the root of the filter being changed). Never sent as a table id.
pub const ROOT: u16 = 0xfff;

/// `p10_0_0_2` for 10.0.0.2.
pub fn quota_name(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("p{a}_{b}_{c}_{d}")
}

/// The peer address a quota name was derived from; `None` for names the plan never makes.
pub fn quota_owner(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_prefix('p')?;
    let parts: Vec<u8> = rest
        .split('_')
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d] = <[u8; 4]>::try_from(parts).ok()?;
    let addr = Ipv4Addr::new(a, b, c, d);
    (quota_name(addr) == name).then_some(addr)
}

/// Where a shaped peer lives in tc: class `1:minor`, leaf qdisc `minor:`, and its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    /// The host offset in the subnet; 1 is the server, which names the parent class `1:1`.
    pub minor: u16,
    pub b3: u8,
    pub b4: u8,
}

impl Slot {
    /// Class minors are 16 bits, so only the first 65,533 hosts can be shaped; the address pool
    /// hands out the lowest free host and capacity is at most 32,767, so peers stay inside.
    pub fn of(subnet: Ipv4Net, addr: Ipv4Addr) -> Option<Slot> {
        let off = u32::from(addr).checked_sub(u32::from(subnet.network()))?;
        let minor = u16::try_from(off)
            .ok()
            .filter(|m| (2..=0xfffe).contains(m))?;
        let [_, _, b3, b4] = addr.octets();
        subnet.contains(&addr).then_some(Slot { minor, b3, b4 })
    }

    pub fn classid(&self) -> String {
        format!("1:{:x}", self.minor)
    }

    pub fn leaf(&self) -> String {
        format!("{:x}:", self.minor)
    }

    /// The u32 filter handle `(table, bucket, node)` that classifies this peer.
    pub fn filter(&self, layout: &Layout) -> (u16, u8, u16) {
        if layout.two_level {
            (HT_L2_BASE + u16::from(self.b3), self.b4, 1)
        } else {
            (HT_TOP, self.b4, 1)
        }
    }

    /// The same for the peer's IPv6 address, keyed on the host offset itself: the prefix is
    /// /112 or larger and aligned, so the low 16 bits of the address are the offset.
    pub fn filter6(&self, layout: &Layout) -> (u16, u8, u16) {
        let [hi, lo] = self.minor.to_be_bytes();
        if layout.two_level {
            (HT6_L2_BASE + u16::from(hi), lo, 1)
        } else {
            (HT6_TOP, lo, 1)
        }
    }
}

/// The IPv6 address with host offset `minor` in `net`: how the address pool derives a peer's
/// IPv6 address from its IPv4 one.
pub fn v6_addr(net: Ipv6Net, minor: u16) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + u128::from(minor))
}

/// Whether IPv6 traffic can be shaped in `net`: the host offsets hash on the low 16 bits, so
/// the prefix must leave them to the hosts (config accepts /112 or larger, network-aligned).
pub fn shapable_v6(net: Ipv6Net) -> bool {
    (1..=112).contains(&net.prefix_len()) && net == net.trunc()
}

/// The hash-table layout for a subnet: one level keyed on the last byte for /24 and smaller,
/// two levels (third byte, then last byte) for larger subnets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// What the root filter matches before hashing: the part of the subnet shaping can reach.
    pub net: Ipv4Net,
    pub two_level: bool,
    /// Third-byte values that get a second-level table.
    pub third_bytes: Vec<u8>,
}

impl Layout {
    pub fn of(subnet: Ipv4Net) -> Layout {
        let prefix = subnet.prefix_len().max(16);
        let net = Ipv4Net::new(subnet.network(), prefix)
            .map(|n| n.trunc())
            .unwrap_or(subnet);
        if prefix >= 24 {
            return Layout {
                net,
                two_level: false,
                third_bytes: Vec::new(),
            };
        }
        let first = net.network().octets()[2];
        let count = 1u16 << (24 - prefix);
        let third_bytes = (0..count)
            .filter_map(|i| u8::try_from(u16::from(first) + i).ok())
            .collect();
        Layout {
            net,
            two_level: true,
            third_bytes,
        }
    }
}

/// `10a:5:1`: a u32 filter handle as tc accepts it (tc prints a zero bucket as empty).
pub fn fh(h: (u16, u8, u16)) -> String {
    format!("{:x}:{:x}:{:x}", h.0, h.1, h.2)
}

/// 32-bit FNV-1a: a stable fingerprint of a rule's text, stored in its comment.
pub fn fingerprint(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
