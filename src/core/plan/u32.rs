//! The u32 filters that send a peer's packets to its class in two or three lookups, whatever
//! the number of peers: per address family one filter priority (tc keeps one protocol per
//! priority), a root filter that matches the tunnel prefix and hashes on the host part, hash
//! tables keyed on one byte of it, and per shaped peer one filter in its bucket. IPv4 and IPv6
//! filters of a peer name the same class, so both families share one limit.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::ids::{HT_L2_BASE, HT_TOP, HT6_L2_BASE, HT6_TOP, PRIO, PRIO6, ROOT, Slot, fh, v6_addr};
use super::tc::{Dir, TcDevPlan};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn prio(self) -> u16 {
        match self {
            Family::V4 => PRIO,
            Family::V6 => PRIO6,
        }
    }

    /// The protocol of the filters, as tc takes and prints it.
    pub fn proto(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ipv6",
        }
    }

    /// Where the address a device keys on starts in the IP header.
    pub fn offset(self, dir: Dir) -> i32 {
        match (self, dir) {
            (Family::V4, Dir::Down) => 16,
            (Family::V4, Dir::Up) => 12,
            (Family::V6, Dir::Down) => 24,
            (Family::V6, Dir::Up) => 8,
        }
    }

    /// Where the host part is hashed: the address's last 32-bit word.
    fn hash_off(self, dir: Dir) -> i32 {
        match self {
            Family::V4 => self.offset(dir),
            Family::V6 => self.offset(dir) + 12,
        }
    }
}

/// One u32 filter as the plan wants it; compared key by key with what tc reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// `(table, bucket, node)`; a table of [`ROOT`] is the priority's root table.
    pub handle: (u16, u8, u16),
    /// Matched on the device's address field (`match ip|ip6 dst|src NET`).
    pub net: IpNet,
    /// `(mask, off)` of the hash key when the filter links to another table.
    pub hash: Option<(u32, i32)>,
    pub link: Option<u16>,
    pub flowid: Option<String>,
}

/// One 32-bit match key as the kernel holds it: value, mask, offset.
pub type Key = (u32, u32, i32);

impl FilterSpec {
    fn new(handle: (u16, u8, u16), net: IpNet) -> FilterSpec {
        FilterSpec {
            handle,
            net,
            hash: None,
            link: None,
            flowid: None,
        }
    }

    pub fn family(&self) -> Family {
        match self.net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The keys tc makes of the match: one per 32-bit word the prefix reaches, the last one
    /// masked to the prefix, values masked (iproute2's `parse_ip6_addr`/`pack_key`).
    pub fn keys(&self, dir: Dir) -> Vec<Key> {
        let off = self.family().offset(dir);
        let (bits, len, words): (u128, u8, u8) = match self.net {
            IpNet::V4(n) => (u128::from(u32::from(n.network())), n.prefix_len(), 1),
            IpNet::V6(n) => (u128::from(n.network()), n.prefix_len(), 4),
        };
        (0..words)
            .filter(|i| u16::from(*i) * 32 < u16::from(len))
            .map(|i| {
                let shift = 32 * u32::from(words - 1 - i);
                let word = (bits >> shift) as u32;
                let covered = (u32::from(len) - 32 * u32::from(i)).min(32);
                let mask = u32::MAX.checked_shl(32 - covered).unwrap_or(0);
                (word & mask, mask, off + 4 * i32::from(i))
            })
            .collect()
    }

    /// `filter replace` of this filter. A filter in the root table is addressed through the
    /// root's id when it is known (`root`), else added to whatever root the priority has.
    pub fn line(&self, dev: &str, dir: Dir, root: Option<u16>) -> String {
        let fam = self.family();
        let (ht, bkt, node) = self.handle;
        let (handle, table) = match (ht, root) {
            (ROOT, None) => (format!("::{node:x}"), String::new()),
            (ROOT, Some(r)) => (fh((r, bkt, node)), format!(" ht {r:x}:{bkt:x}:")),
            _ => (fh(self.handle), format!(" ht {ht:x}:{bkt:x}:")),
        };
        let ip = match fam {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        };
        let mut s = format!(
            "filter replace dev {dev} parent 1: prio {} handle {handle} protocol {} u32{table} match {ip} {} {}",
            fam.prio(),
            fam.proto(),
            dir.field(),
            self.net
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

/// `filter del` of one filter, by its real handle (a root filter under the root's own id).
pub fn filter_del_line(dev: &str, fam: Family, handle: (u16, u8, u16)) -> String {
    format!(
        "filter del dev {dev} parent 1: prio {} handle {} protocol {} u32",
        fam.prio(),
        fh(handle),
        fam.proto()
    )
}

/// `filter del` of a hash table and whatever it still holds.
pub fn table_del_line(dev: &str, fam: Family, ht: u16) -> String {
    format!(
        "filter del dev {dev} parent 1: prio {} handle {ht:x}: protocol {} u32",
        fam.prio(),
        fam.proto()
    )
}

pub fn table_line(dev: &str, fam: Family, ht: u16) -> String {
    format!(
        "filter add dev {dev} parent 1: prio {} handle {ht:x}: protocol {} u32 divisor 256",
        fam.prio(),
        fam.proto()
    )
}

/// Everything one family needs on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct U32Set {
    pub family: Family,
    /// Hash tables (divisor 256): the top one, then the second level.
    pub tables: Vec<u16>,
    /// By handle, which is also a safe order to add them in: links (in the top table), peer
    /// filters, then the root filter ([`ROOT`] sorts last).
    pub filters: BTreeMap<(u16, u8, u16), FilterSpec>,
}

impl TcDevPlan {
    /// The filter sets of the device: IPv4 always, IPv6 when the node has a shapable prefix.
    pub fn u32_sets(&self) -> Vec<U32Set> {
        let mut sets = vec![self.set(Family::V4)];
        if self.v6.is_some() {
            sets.push(self.set(Family::V6));
        }
        sets
    }

    fn set(&self, fam: Family) -> U32Set {
        let (tables, links) = self.links(fam);
        let mut filters: BTreeMap<_, _> = links.into_iter().map(|f| (f.handle, f)).collect();
        for (minor, c) in &self.classes {
            if fam == Family::V4 || c.v6 {
                let f = self.peer_filter(fam, &c.slot, *minor);
                filters.insert(f.handle, f);
            }
        }
        U32Set {
            family: fam,
            tables,
            filters,
        }
    }

    /// The hash tables and the filters that lead from the root to them; fixed for a prefix.
    /// One level hashes the last byte of the host part; two levels (more than 256 hosts) hash
    /// the byte before it first, each value getting its own table of 256 buckets.
    fn links(&self, fam: Family) -> (Vec<u16>, Vec<FilterSpec>) {
        let l = &self.layout;
        let off = fam.hash_off(self.dir);
        let shift = if l.two_level { 8 } else { 0 };
        // IPv4 second levels are named by the address's third byte, IPv6 ones by the high byte
        // of the host offset (the prefix leaves the low 16 bits to hosts).
        let (top, base, net, seconds): (u16, u16, IpNet, Vec<(u8, IpNet)>) = match (fam, self.v6) {
            (Family::V6, Some(v6)) => {
                let seconds = (0..l.third_bytes.len())
                    .filter_map(|i| u8::try_from(i).ok())
                    .map(|hi| {
                        let sub = Ipv6Net::new(v6_addr(v6, u16::from(hi) << 8), 120).unwrap_or(v6);
                        (hi, IpNet::V6(sub))
                    })
                    .collect();
                (HT6_TOP, HT6_L2_BASE, IpNet::V6(v6), seconds)
            }
            _ => {
                let [a, b, _, _] = l.net.network().octets();
                let seconds = l
                    .third_bytes
                    .iter()
                    .map(|b3| {
                        let sub = Ipv4Net::new(Ipv4Addr::new(a, b, *b3, 0), 24).unwrap_or(l.net);
                        (*b3, IpNet::V4(sub))
                    })
                    .collect();
                (HT_TOP, HT_L2_BASE, IpNet::V4(l.net), seconds)
            }
        };
        let mut root = FilterSpec::new((ROOT, 0, 1), net);
        root.hash = Some((0xffu32 << shift, off));
        root.link = Some(top);
        let mut tables = vec![top];
        let mut filters = vec![root];
        for (b, sub) in seconds {
            let mut f = FilterSpec::new((top, b, 1), sub);
            f.hash = Some((0xff, off));
            f.link = Some(base + u16::from(b));
            tables.push(base + u16::from(b));
            filters.push(f);
        }
        (tables, filters)
    }

    /// The filter that sends a peer's packets of one family to its class `1:minor`.
    pub fn peer_filter(&self, fam: Family, slot: &Slot, minor: u16) -> FilterSpec {
        let (handle, addr) = match (fam, self.v6) {
            (Family::V6, Some(v6)) => (slot.filter6(&self.layout), IpAddr::V6(v6_addr(v6, minor))),
            _ => (slot.filter(&self.layout), IpAddr::V4(self.addr_of(minor))),
        };
        let mut f = FilterSpec::new(handle, IpNet::from(addr));
        f.flowid = Some(slot.classid());
        f
    }
}
