//! What readers see of the node: peers with their counters.
use super::{Counters, Inner, Node};
use crate::core::peer::{Peer, Usage};
use crate::core::registry::Selector;

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

impl Node {
    pub(super) fn status(inner: &Inner, peer: &Peer) -> PeerStatus {
        PeerStatus {
            peer: peer.clone(),
            counters: inner.counters.get(&peer.id).copied().unwrap_or_default(),
        }
    }

    pub fn get(&self, sel: &Selector) -> Option<PeerStatus> {
        let inner = self.lock();
        inner.registry.find(sel).map(|p| Self::status(&inner, p))
    }

    pub fn list(&self) -> Vec<PeerStatus> {
        let inner = self.lock();
        let mut all: Vec<_> = inner
            .registry
            .iter()
            .map(|p| Self::status(&inner, p))
            .collect();
        all.sort_by(|a, b| (a.peer.created_at, &a.peer.id).cmp(&(b.peer.created_at, &b.peer.id)));
        all
    }

    pub fn store_ok(&self) -> bool {
        self.lock().store.check().is_ok()
    }

    pub fn count(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.registry.len(), inner.registry.free_addresses())
    }
}
