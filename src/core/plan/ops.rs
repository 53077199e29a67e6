//! One peer's change as a small batch that touches only that peer's objects: its quota, its map
//! entries, and per shaped direction one class, one leaf and one filter per address family. The
//! cost does not depend on how many peers exist.
use std::net::IpAddr;

use super::ids::{Layout, Slot, TABLE, UNLIMITED_QUOTA, quota_name};
use super::nft::{MAP4, MAP6};
use super::observed::ObservedQuota;
use super::tc::{Dir, TcDevPlan, class_line, has_v6_filter, leaf_line, shaping_v6};
use super::u32::{Family, filter_del_line};
use super::{PeerPolicy, PlanError, PlanInput, validate_peer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    Add(PeerPolicy),
    Remove(PeerPolicy),
    /// Same address; limits, cap or IPv6 address changed.
    Update {
        before: PeerPolicy,
        after: PeerPolicy,
    },
}

/// One change to a peer's nftables objects. Sent as netlink messages, or rendered as `nft`
/// commands for logs and dry runs; both mean the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftOp {
    /// Creates the quota with `used` already counted, or changes the limit of an existing one
    /// (the kernel then keeps its own count and ignores `used`).
    AddQuota {
        name: String,
        limit: u64,
        used: u64,
    },
    DelQuota {
        name: String,
    },
    /// An address → quota element of `map` (`peers4` or `peers6`).
    AddElem {
        map: &'static str,
        key: IpAddr,
        quota: String,
    },
    DelElem {
        map: &'static str,
        key: IpAddr,
    },
}

impl NftOp {
    pub fn render(&self) -> String {
        match self {
            NftOp::AddQuota { name, limit, used } => {
                format!("add quota inet {TABLE} {name} {{ until {limit} bytes used {used} bytes }}")
            }
            NftOp::DelQuota { name } => format!("delete quota inet {TABLE} {name}"),
            NftOp::AddElem { map, key, quota } => {
                format!("add element inet {TABLE} {map} {{ {key} : \"{quota}\" }}")
            }
            NftOp::DelElem { map, key } => format!("delete element inet {TABLE} {map} {{ {key} }}"),
        }
    }
}

/// The operations as an `nft -f` script, one line each.
pub fn render_ops(ops: &[NftOp]) -> String {
    ops.iter().map(|o| o.render() + "\n").collect()
}

/// nftables operations (one transaction) and `tc -batch` lines; either may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub nft: Vec<NftOp>,
    pub tc: Vec<String>,
}

impl Batch {
    /// Appends another peer's batch: a whole pass becomes one transaction and one tc batch.
    pub fn extend(&mut self, other: Batch) {
        self.nft.extend(other.nft);
        self.tc.extend(other.tc);
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.nft.is_empty() && self.tc.is_empty()
    }
}

/// `current`: the peer's quota as the kernel holds it, needed when a cap changes (a depleted
/// quota is re-created so the packets dropped while capped do not count against the new cap).
pub fn peer_batch(
    input: &PlanInput,
    change: &PeerChange,
    current: Option<&ObservedQuota>,
) -> Result<Batch, PlanError> {
    let mut b = Batch::default();
    let (before, after) = match change {
        PeerChange::Add(p) => (None, Some(p)),
        PeerChange::Remove(p) => (Some(p), None),
        PeerChange::Update { before, after } => (Some(before), Some(after)),
    };
    if let Some(p) = after {
        validate_peer(input, p)?;
    }
    let addr = after.or(before).map(|p| p.addr);
    if let (Some(a), Some(b)) = (before, after)
        && a.addr != b.addr
    {
        return Err(PlanError::AddressChanged(a.addr));
    }
    let Some(addr) = addr else {
        return Ok(b);
    };
    let name = quota_name(addr);
    let nft = &mut b.nft;
    let add_quota = |limit, used| NftOp::AddQuota {
        name: name.clone(),
        limit,
        used,
    };
    let del_quota = || NftOp::DelQuota { name: name.clone() };
    // Map entries go before the quota is deleted and after it is created.
    match (before, after) {
        (Some(_), None) => {
            map_del(nft, before);
            nft.push(del_quota());
        }
        (None, Some(p)) => {
            nft.push(add_quota(
                p.cap_bytes.unwrap_or(UNLIMITED_QUOTA),
                p.used_bytes,
            ));
            map_add(nft, after, &name);
        }
        (Some(a), Some(p)) => {
            let limit = p.cap_bytes.unwrap_or(UNLIMITED_QUOTA);
            let depleted = current.filter(|o| o.used >= o.bytes && o.bytes != limit);
            if let Some(o) = depleted {
                map_del(nft, before);
                nft.push(del_quota());
                nft.push(add_quota(limit, o.used));
                map_add(nft, after, &name);
            } else if a.cap_bytes != p.cap_bytes {
                // Changes the limit in place: the kernel keeps `used` and ignores the one given.
                nft.push(add_quota(limit, current.map(|o| o.used).unwrap_or(0)));
            }
            if depleted.is_none() && a.addr_v6 != p.addr_v6 {
                if let Some(v6) = a.addr_v6 {
                    nft.push(NftOp::DelElem {
                        map: MAP6,
                        key: v6.into(),
                    });
                }
                if let Some(v6) = p.addr_v6 {
                    nft.push(NftOp::AddElem {
                        map: MAP6,
                        key: v6.into(),
                        quota: name.clone(),
                    });
                }
            }
        }
        (None, None) => {}
    }
    if input.shaping {
        let layout = Layout::of(input.subnet);
        let dl = |p: &PeerPolicy| p.download_kbps;
        let ul = |p: &PeerPolicy| p.upload_kbps;
        for (dev, dir, get) in [
            (
                &input.iface,
                Dir::Down,
                &dl as &dyn Fn(&PeerPolicy) -> Option<u32>,
            ),
            (&input.ifb, Dir::Up, &ul),
        ] {
            let plan = TcDevPlan {
                dev: dev.to_string(),
                dir,
                enabled: true,
                layout: layout.clone(),
                v6: shaping_v6(input),
                classes: Default::default(),
                redirect_to: None,
            };
            shape_ops(&mut b.tc, &plan, input, addr, (before, after), get);
        }
    }
    Ok(b)
}

fn map_add(nft: &mut Vec<NftOp>, p: Option<&PeerPolicy>, name: &str) {
    if let Some(p) = p {
        let keys = [
            (MAP4, Some(IpAddr::V4(p.addr))),
            (MAP6, p.addr_v6.map(IpAddr::V6)),
        ];
        for (map, key) in keys {
            if let Some(key) = key {
                nft.push(NftOp::AddElem {
                    map,
                    key,
                    quota: name.to_string(),
                });
            }
        }
    }
}

fn map_del(nft: &mut Vec<NftOp>, p: Option<&PeerPolicy>) {
    if let Some(p) = p {
        let keys = [
            (MAP4, Some(IpAddr::V4(p.addr))),
            (MAP6, p.addr_v6.map(IpAddr::V6)),
        ];
        for (map, key) in keys {
            if let Some(key) = key {
                nft.push(NftOp::DelElem { map, key });
            }
        }
    }
}

/// One device's lines for one peer: its class and leaf, and a filter per family that leads to
/// the class. Filters go before the class they name is deleted and after it is created.
fn shape_ops(
    tc: &mut Vec<String>,
    plan: &TcDevPlan,
    input: &PlanInput,
    addr: std::net::Ipv4Addr,
    (before, after): (Option<&PeerPolicy>, Option<&PeerPolicy>),
    get: &dyn Fn(&PeerPolicy) -> Option<u32>,
) {
    let Some(slot) = Slot::of(input.subnet, addr) else {
        return;
    };
    let dev = plan.dev.as_str();
    let old = before.and_then(get);
    let new = after.and_then(get);
    // Which families lead to the class before and after: IPv6 also follows the peer's address.
    let fams = |p: Option<&PeerPolicy>, limit: Option<u32>| {
        let v6 = p.is_some_and(|p| has_v6_filter(plan.v6, &slot, p));
        [
            (Family::V4, limit.is_some()),
            (Family::V6, limit.is_some() && v6),
        ]
    };
    let (was, will) = (fams(before, old), fams(after, new));
    for ((fam, had), (_, has)) in was.into_iter().zip(will) {
        if had && !has {
            let f = plan.peer_filter(fam, &slot, slot.minor);
            tc.push(filter_del_line(dev, fam, f.handle));
        }
    }
    // The kernel walks every class of the qdisc when a class is created or deleted
    // (`tc_bind_tclass`, about 1 ms per class at 10,000 classes on Linux 6.18), but not when
    // one is changed. So a class outlives its peer: once no filter leads to it, it costs
    // nothing per packet, and the next peer at that address changes it in place.
    match (old, new) {
        (None, Some(k)) => {
            tc.push(class_line("replace", dev, &slot, k));
            tc.push(leaf_line(dev, &slot, k));
        }
        (Some(o), Some(k)) if o != k => {
            // Live: the class keeps its queue and the peer's flows; only the rate changes.
            tc.push(class_line("change", dev, &slot, k));
            tc.push(leaf_line(dev, &slot, k));
        }
        _ => {}
    }
    for ((fam, had), (_, has)) in was.into_iter().zip(will) {
        if has && !had {
            let f = plan.peer_filter(fam, &slot, slot.minor);
            tc.push(f.line(dev, plan.dir, None));
        }
    }
}
