//! What readers see of the node: an immutable snapshot the owner publishes after every change
//! and every reconcile pass. The API's reads, `/health`, `/metrics` and the control feed use
//! it and never wait for a change in progress.
//!
//! The peers are a persistent map: publishing after a change copies O(log n) of it, not the
//! whole table, so a change costs the same with 10 or 10,000 peers.
use std::net::IpAddr;

use imbl::OrdMap;

use super::{Counters, Node};
use crate::core::lifetime;
use crate::core::peer::{Peer, PeerId, Usage};

/// A peer with its counters, as the API shows it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub peer: Peer,
    pub counters: Counters,
}

impl PeerStatus {
    pub fn capped(&self) -> bool {
        self.peer
            .data_cap
            .is_some_and(|cap| self.counters.cap_used >= cap)
    }
    pub fn usage(&self) -> Usage {
        self.counters.accounting.total
    }
}

/// How the node's own parts are doing, as of the last change or reconcile pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The last reconcile pass left the interface, peers and data plane in place.
    pub dataplane_ok: bool,
    /// The store answered at the last pass and took the last write.
    pub store_ok: bool,
}

/// Reconcile passes since start, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassCounts {
    pub runs: u64,
    /// Passes that had to repair something.
    pub repairs: u64,
    pub errors: u64,
}

/// Peers by state, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerCounts {
    pub total: usize,
    /// Handshake within `core::lifetime::ACTIVE_SECS`.
    pub active: usize,
    pub capped: usize,
}

#[derive(Debug, Clone)]
pub struct NodeView {
    pub peers: OrdMap<PeerId, PeerStatus>,
    /// Which peer holds each tunnel address (v4 and v6), so a lookup by address is O(log n).
    pub addresses: OrdMap<IpAddr, PeerId>,
    pub free_addresses: u64,
    pub health: Health,
    /// `kernel` or `userspace`, as the interface runs now.
    pub backend: &'static str,
    pub passes: PassCounts,
    /// Counts the changes that touched the kernel; a data-plane check made against an older
    /// generation is not applied.
    pub generation: u64,
}

impl NodeView {
    pub fn get(&self, id: &PeerId) -> Option<&PeerStatus> {
        self.peers.get(id)
    }

    /// The peer that holds a tunnel address now.
    pub fn holder(&self, ip: IpAddr) -> Option<&PeerId> {
        self.addresses.get(&ip)
    }

    /// Every peer, oldest first.
    pub fn list(&self) -> Vec<&PeerStatus> {
        let mut all: Vec<_> = self.peers.values().collect();
        all.sort_by(|a, b| (a.peer.created_at, &a.peer.id).cmp(&(b.peer.created_at, &b.peer.id)));
        all
    }

    /// At most `limit` peers whose id sorts after `after`, in id order: O(limit + log n).
    pub fn page(&self, after: Option<&PeerId>, limit: usize) -> Vec<&PeerStatus> {
        use std::ops::Bound;
        let from: Bound<&PeerId> = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.peers
            .range::<_, PeerId>((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, s)| s)
            .collect()
    }

    pub fn counts(&self, now: u64) -> PeerCounts {
        PeerCounts {
            total: self.peers.len(),
            active: self
                .peers
                .values()
                .filter(|s| lifetime::is_active(s.counters.last_handshake, now))
                .count(),
            capped: self.peers.values().filter(|s| s.capped()).count(),
        }
    }

    pub fn at_capacity(&self, max: u16) -> bool {
        lifetime::at_capacity(self.peers.len(), max, self.free_addresses)
    }
}

impl Node {
    pub(super) fn status(&self, peer: &Peer) -> PeerStatus {
        PeerStatus {
            peer: peer.clone(),
            counters: self.counters.get(&peer.id).copied().unwrap_or_default(),
        }
    }

    /// Brings the view's entry for `id` in line with the registry and counters.
    pub(super) fn touch(&mut self, id: &PeerId) {
        let status = self
            .registry
            .find(&crate::core::registry::Selector::Id(id.clone()))
            .map(|p| self.status(p));
        let ips =
            |p: &Peer| std::iter::once(IpAddr::V4(p.address)).chain(p.address_v6.map(IpAddr::V6));
        if let Some(old) = self.view_peers.get(id) {
            for ip in ips(&old.peer) {
                self.view_addresses.remove(&ip);
            }
        }
        match status {
            Some(s) => {
                for ip in ips(&s.peer) {
                    self.view_addresses.insert(ip, id.clone());
                }
                self.view_peers.insert(id.clone(), s);
            }
            None => {
                self.view_peers.remove(id);
            }
        }
    }

    /// Publishes the current state to readers.
    pub(super) fn publish(&self) {
        let view = NodeView {
            peers: self.view_peers.clone(),
            addresses: self.view_addresses.clone(),
            free_addresses: self.registry.free_addresses(),
            health: self.health,
            backend: self.wg.backend_name(),
            passes: self.passes,
            generation: self.generation,
        };
        self.view.send_replace(std::sync::Arc::new(view));
    }
}
