//! Who the capture's flows belong to, and the per-peer counters they add up to.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use super::FlowDecision;
use crate::core::classify::{Classifier, FlowRecord, Policy, Protocol};
use crate::core::packet;
use crate::core::peer::PeerId;

/// Bytes and flows of one peer, per protocol (indexed by [`Protocol::index`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    pub bytes: [u64; Protocol::ALL.len()],
    pub flows: [u64; Protocol::ALL.len()],
}

impl PeerTraffic {
    pub fn bytes_of(&self, p: Protocol) -> u64 {
        self.bytes[p.index()]
    }
    pub fn flows_of(&self, p: Protocol) -> u64 {
        self.flows[p.index()]
    }

    /// `(protocol, bytes, flows)` for every protocol, in [`Protocol::ALL`] order.
    pub fn by_protocol(&self) -> impl Iterator<Item = (Protocol, u64, u64)> + '_ {
        Protocol::ALL
            .into_iter()
            .map(|p| (p, self.bytes_of(p), self.flows_of(p)))
    }
}

/// Counters the daemon reads, and the peers they belong to. Lives across capture restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// By peer id: a removed peer's counters go with it, and a peer that gets its address
    /// later starts from zero.
    pub peers: HashMap<PeerId, PeerTraffic>,
    pub packets: u64,
    /// Packets the kernel dropped because the capture buffer was full.
    pub kernel_dropped: u64,
    /// Packets the interface or driver dropped.
    pub interface_dropped: u64,
    /// Flows that made room for newer ones in a full table or a peer's full share of it.
    pub evicted: u64,
    /// Addresses of removed peers whose flows the capture thread has yet to forget.
    pub(super) released: Vec<PeerId>,
}

impl CaptureStats {
    /// Forgets a removed peer: its counters now, its flows and address at the next packet.
    pub fn remove_peer(&mut self, id: &PeerId) {
        self.peers.remove(id);
        self.released.push(id.clone());
    }
}

/// Finds the peer that holds a tunnel address (asks the node).
pub type Resolve = Arc<dyn Fn(IpAddr) -> Option<PeerId> + Send + Sync>;

pub type SharedStats = Arc<Mutex<CaptureStats>>;

/// Forgets the addresses and flows of peers removed since the last call.
pub(super) fn forget(g: &mut CaptureStats, peers: &mut Peers, classifier: &mut Classifier) {
    for id in std::mem::take(&mut g.released) {
        for addr in peers.forget(&id) {
            classifier.forget_owner(addr);
        }
    }
}

/// Moves the bytes counted as unknown so far to the flow's protocol, counts the flow, and
/// states the policy's decision.
pub(super) fn classified(
    s: &mut CaptureStats,
    id: &PeerId,
    r: &FlowRecord,
    bytes: u64,
    policy: &Policy,
) -> FlowDecision {
    let t = s.peers.entry(id.clone()).or_default();
    let earlier = r.bytes.saturating_sub(bytes);
    let unknown = &mut t.bytes[Protocol::Unknown.index()];
    *unknown = unknown.saturating_sub(earlier);
    t.bytes[r.protocol.index()] += r.bytes;
    t.flows[r.protocol.index()] += 1;
    FlowDecision {
        peer: r.owner.unwrap_or(r.a.ip),
        l4: r.l4,
        a: r.a,
        b: r.b,
        protocol: r.protocol,
        tracker: r.tracker,
        action: policy.decide(r.protocol, r.tracker),
        hostname: None,
        tunnel: None,
    }
}

/// Which peer a flow belongs to: the one holding one of the addresses WireGuard verified.
/// Only addresses that are a peer's are ever remembered, so nothing here grows with what peers
/// send; a removed peer's addresses are forgotten with it.
pub(super) struct Peers {
    pub(super) nets: Vec<IpNet>,
    pub(super) known: HashMap<IpAddr, PeerId>,
    pub(super) resolve: Resolve,
}

impl Peers {
    /// The tunnel-side address of a new flow that belongs to a peer, asking the node about
    /// addresses not seen before.
    pub(super) fn owner(&mut self, p: &packet::Packet<'_>) -> Option<IpAddr> {
        if let Some(ip) = [p.src, p.dst]
            .into_iter()
            .find(|ip| self.known.contains_key(ip))
        {
            return Some(ip);
        }
        for ip in [p.src, p.dst] {
            if self.nets.iter().any(|n| n.contains(&ip))
                && let Some(id) = (self.resolve)(ip)
            {
                self.known.insert(ip, id);
                return Some(ip);
            }
        }
        None
    }

    /// Forgets a removed peer's addresses and returns them.
    pub(super) fn forget(&mut self, id: &PeerId) -> Vec<IpAddr> {
        let gone: Vec<IpAddr> = self
            .known
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| *k)
            .collect();
        for ip in &gone {
            self.known.remove(ip);
        }
        gone
    }
}
