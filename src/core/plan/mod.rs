//! The data plane as a value: from the node's settings and its peers, the nftables table and the
//! traffic-control objects the kernel should hold. Rendering, the diff against what the kernel
//! holds, and the per-peer incremental operations all live here; nothing here runs a command.
mod diff_nft;
mod diff_tc;
pub mod fence;
pub mod flows;
mod ids;
mod names;
mod nft;
mod observed;
mod ops;
mod tc;
mod u32;

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

pub use diff_nft::{NftDiff, diff_nft};
pub use diff_tc::diff_tc;
pub use ids::{TABLE, UNLIMITED_QUOTA, quota_name, quota_owner};
pub use names::ifb_name;
pub use nft::{NftPlan, render_table};
pub use observed::{
    ObservedChain, ObservedClass, ObservedDev, ObservedFilter, ObservedNft, ObservedPrio,
    ObservedQuota, Rate, rate_text,
};
pub use ops::{Batch, NftOp, PeerChange, peer_batch, render_ops};
pub use tc::{Dir, PeerClass, TcDevPlan, TcPlan, spare_tc};
pub use u32::Family;

/// Highest limit the API accepts: 100 Gbit/s.
pub const MAX_KBPS: u32 = 100_000_000;

/// What one peer is allowed: its tunnel addresses, its speed limits and its data cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub addr: Ipv4Addr,
    pub addr_v6: Option<Ipv6Addr>,
    /// Traffic towards the peer (egress of the WireGuard interface); `None` is unlimited.
    pub download_kbps: Option<u32>,
    /// Traffic from the peer (egress of the IFB fed from the interface's ingress).
    pub upload_kbps: Option<u32>,
    /// Bytes forwarded in both directions since creation; `None` is unlimited.
    pub cap_bytes: Option<u64>,
    /// Bytes already used: written into the quota only when the quota is created, so a quota
    /// that survived a daemon restart keeps the kernel's (newer) count.
    pub used_bytes: u64,
}

/// Everything the plan is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// The WireGuard interface.
    pub iface: String,
    /// The IFB device that carries upload traffic redirected from the interface's ingress.
    pub ifb: String,
    pub subnet: Ipv4Net,
    pub subnet_v6: Option<Ipv6Net>,
    /// The node's own tunnel address (never a peer's).
    pub server_addr: Ipv4Addr,
    /// The interface of the default route: tunnel traffic is masqueraded out of it. `None`
    /// masquerades out of every interface but the tunnel.
    pub outward: Option<String>,
    /// Drop peer → peer and peer → node services (everything but ICMP echo and replies).
    pub isolate: bool,
    /// Destinations peers may not reach (see `fence`).
    pub blocked_v4: Vec<Ipv4Net>,
    pub blocked_v6: Vec<Ipv6Net>,
    /// Per-peer HTB shaping; `false` removes the qdiscs this plan owns.
    pub shaping: bool,
    pub peers: Vec<PeerPolicy>,
}

/// A plan that cannot be built from its input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("peer {0} is outside the tunnel subnet")]
    OutsideSubnet(Ipv4Addr),
    #[error("peer {0} is the server's own address")]
    ServerAddress(Ipv4Addr),
    #[error("peer {0} appears twice")]
    Duplicate(Ipv4Addr),
    #[error("peer {0}: speed limits are possible for the first 65,533 hosts of the subnet only")]
    Unshapable(Ipv4Addr),
    #[error("peer {addr}: limit {kbps} kbit/s is outside 1..={max}", max = MAX_KBPS)]
    BadLimit { addr: Ipv4Addr, kbps: u32 },
    #[error("peer {0}: an update cannot change the address")]
    AddressChanged(Ipv4Addr),
    #[error("{0:?} is not a valid interface name")]
    BadInterface(String),
}

/// The desired state: one nftables table and the tc objects of two devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub nft: NftPlan,
    pub tc: TcPlan,
}

impl Plan {
    pub fn build(input: &PlanInput) -> Result<Plan, PlanError> {
        validate(input)?;
        Ok(Plan {
            nft: NftPlan::build(input),
            tc: TcPlan::build(input),
        })
    }
}

fn validate(input: &PlanInput) -> Result<(), PlanError> {
    for name in [&input.iface, &input.ifb]
        .into_iter()
        .chain(input.outward.as_ref())
    {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.@".contains(c);
        if name.is_empty() || name.len() > 15 || !name.chars().all(ok) {
            return Err(PlanError::BadInterface(name.clone()));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &input.peers {
        validate_peer(input, p)?;
        if !seen.insert(p.addr) {
            return Err(PlanError::Duplicate(p.addr));
        }
    }
    Ok(())
}

/// Checks one peer against the node's settings; also used before an incremental change.
pub fn validate_peer(input: &PlanInput, p: &PeerPolicy) -> Result<(), PlanError> {
    if !input.subnet.contains(&p.addr) {
        return Err(PlanError::OutsideSubnet(p.addr));
    }
    if p.addr == input.server_addr {
        return Err(PlanError::ServerAddress(p.addr));
    }
    for kbps in [p.download_kbps, p.upload_kbps].into_iter().flatten() {
        if kbps == 0 || kbps > MAX_KBPS {
            return Err(PlanError::BadLimit { addr: p.addr, kbps });
        }
        if ids::Slot::of(input.subnet, p.addr).is_none() {
            return Err(PlanError::Unshapable(p.addr));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_u32;
