//! What the kernel reported, as plain data: filled by the read-back parsers, compared by the diff.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// `nft -j list table inet waylume`, or `None` in the callers when the table does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNft {
    pub chains: BTreeMap<String, ObservedChain>,
    /// Interval sets: name → (element type, `addr/len` elements).
    pub sets: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Maps of the type `ipv4_addr : quota` / `ipv6_addr : quota`.
    pub maps4: BTreeMap<String, BTreeMap<Ipv4Addr, String>>,
    pub maps6: BTreeMap<String, BTreeMap<Ipv6Addr, String>>,
    /// Maps of any other type (a name clash to repair).
    pub other_maps: BTreeSet<String>,
    pub quotas: BTreeMap<String, ObservedQuota>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedChain {
    pub kind: Option<String>,
    pub hook: Option<String>,
    pub prio: Option<i32>,
    pub policy: Option<String>,
    /// Each rule's comment, in order (`None` for a rule without one).
    pub comments: Vec<Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedQuota {
    pub bytes: u64,
    pub used: u64,
    /// `over` instead of `until`.
    pub inv: bool,
}

/// A rate as tc reported it: exact bytes/s from JSON, or the rounded text (`2Mbit`) that
/// iproute2 6.1 prints for HTB classes even with `-j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rate {
    Bytes(u64),
    Text(String),
}

impl Rate {
    /// Whether this is what tc shows for `bytes_per_sec`.
    pub fn matches(&self, bytes_per_sec: u64) -> bool {
        match self {
            Rate::Bytes(b) => *b == bytes_per_sec,
            Rate::Text(t) => *t == rate_text(bytes_per_sec),
        }
    }
}

/// iproute2's `sprint_rate`: divide by 1000 while the value is a multiple of 1000 or at least a
/// million of the current unit; the rest is truncated.
pub fn rate_text(bytes_per_sec: u64) -> String {
    let mut r = bytes_per_sec.saturating_mul(8);
    let units = ["", "K", "M", "G", "T"];
    let mut i = 0;
    while i < units.len() - 1 {
        if r < 1000 || (!r.is_multiple_of(1000) && r < 1_000_000) {
            break;
        }
        r /= 1000;
        i += 1;
    }
    format!("{r}{}bit", units[i])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedClass {
    pub parent: Option<String>,
    pub rate: Rate,
    pub ceil: Rate,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedFilter {
    /// Match keys `(value, mask, offset)`, in the order tc printed them.
    pub keys: Vec<(u32, u32, i32)>,
    pub hash: Option<(u32, i32)>,
    pub link: Option<u16>,
    pub flowid: Option<String>,
}

/// The filters of one priority under `1:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPrio {
    /// The classifier (`u32`) and protocol (`ip`, `ipv6`) of the priority.
    pub kind: String,
    pub protocol: String,
    /// The id the kernel gave the priority's root table (`800:` for the first, then `801:`…).
    pub root: Option<u16>,
    /// Hash tables other than the root, by id, with their divisor.
    pub tables: BTreeMap<u16, u32>,
    /// Filters by handle `(table, bucket, node)`, root filters under the root's real id.
    pub filters: BTreeMap<(u16, u8, u16), ObservedFilter>,
}

/// One device's qdiscs, classes and u32 filters under `1:` and `ffff:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedDev {
    /// An HTB qdisc with handle `1:` at the root.
    pub root_htb: bool,
    /// Some other root qdisc that is not the kernel default (to be replaced).
    pub root_other: bool,
    pub ingress: bool,
    pub classes: BTreeMap<u16, ObservedClass>,
    /// Leaf qdiscs by the minor of their parent class: (kind, packet limit).
    pub leaves: BTreeMap<u16, (String, Option<u64>)>,
    /// Filters under `1:` by priority.
    pub prios: BTreeMap<u16, ObservedPrio>,
    /// Devices the ingress filters redirect to.
    pub redirects: Vec<String>,
}
