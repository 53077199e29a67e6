//! The node's peers as one unit: the registry, the store and WireGuard kept in step. Each change
//! is applied to all three or to none: a failure part-way undoes what was done.
//!
//! Every method may block (SQLite, netlink, the wireguard-go socket): call them from
//! `spawn_blocking`, never from an async task directly.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::core::clientconf::{self, ServerSide};
use crate::core::lifetime::{self, PeerLifetimes};
use crate::core::peer::{Peer, PeerId, SpeedLimit};
use crate::core::plan::{PeerChange, PeerPolicy};
use crate::core::registry::{CreateError, Fresh, NewPeer, Prepared, Registry, Selector};
use crate::store::{Store, StoreError, StoredPeer};
use crate::sys::dataplane::DataplaneError;
use crate::sys::policy::Policy;
use crate::sys::wg::{PeerSpec, WgError, WireGuard};

mod counters;
pub mod reconcile;
mod view;

pub use crate::core::lifetime::Removal;
pub use counters::Counters;
pub use reconcile::Repairs;
pub use view::PeerStatus;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("peer not found")]
    NotFound,
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    WireGuard(#[from] WgError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

type RemovalHook = Box<dyn Fn(&PeerStatus, Removal) + Send + Sync>;

struct Inner {
    registry: Registry,
    store: Store,
    counters: HashMap<PeerId, Counters>,
    /// Peers whose counters moved since they were last written to the store.
    dirty: HashSet<PeerId>,
    /// Bumped by every change to the peer set or a peer's policy, so that a full data-plane
    /// check made outside the lock is only applied if nothing changed meanwhile.
    generation: u64,
    /// Where each peer was last seen, to resume its session on a re-created interface.
    endpoints: HashMap<PeerId, std::net::SocketAddr>,
}

pub struct Node {
    server: ServerSide,
    wg: Arc<dyn WireGuard>,
    policy: Arc<dyn Policy>,
    lifetimes: PeerLifetimes,
    inner: Mutex<Inner>,
    removal_hook: OnceLock<RemovalHook>,
    /// Wakes the reconcile loop after each change, so a repair never waits a whole interval.
    trigger: Arc<tokio::sync::Notify>,
}

/// A peer's policy for the data plane; `used` only matters when its quota is (re)created.
fn policy_of(p: &Peer, used: u64) -> PeerPolicy {
    PeerPolicy {
        addr: p.address,
        addr_v6: p.address_v6,
        download_kbps: p.limit.download_kbps,
        upload_kbps: p.limit.upload_kbps,
        cap_bytes: p.data_cap,
        used_bytes: used,
    }
}

fn spec(p: &Peer) -> PeerSpec {
    let mut allowed = vec![(IpAddr::V4(p.address), 32)];
    allowed.extend(p.address_v6.map(|a| (IpAddr::V6(a), 128)));
    PeerSpec {
        public_key: p.public_key.clone(),
        preshared_key: p.preshared_key.clone(),
        allowed_ips: allowed,
        resume: None,
    }
}

impl Node {
    /// Loads the stored peers. Nothing touches WireGuard until `reconcile`.
    pub fn open(
        mut registry: Registry,
        store: Store,
        server: ServerSide,
        wg: Arc<dyn WireGuard>,
        policy: Arc<dyn Policy>,
        lifetimes: PeerLifetimes,
    ) -> Result<Node, NodeError> {
        let mut counters = HashMap::new();
        for StoredPeer {
            peer,
            accounting,
            cap_used,
            last_handshake,
        } in store.load_peers()?
        {
            counters.insert(
                peer.id.clone(),
                Counters {
                    accounting,
                    cap_used,
                    last_handshake,
                },
            );
            let id = peer.id.clone();
            if let Err(e) = registry.restore(peer) {
                // A row that clashes with another cannot be served; keep it stored, say so.
                log::error!("stored peer {id} not restored: {e}");
                counters.remove(&id);
            }
        }
        Ok(Node {
            server,
            wg,
            policy,
            lifetimes,
            inner: Mutex::new(Inner {
                registry,
                store,
                counters,
                dirty: HashSet::new(),
                generation: 0,
                endpoints: HashMap::new(),
            }),
            removal_hook: OnceLock::new(),
            trigger: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notified after every change to a peer; the reconcile loop waits on it.
    pub fn trigger(&self) -> Arc<tokio::sync::Notify> {
        self.trigger.clone()
    }

    pub fn server(&self) -> &ServerSide {
        &self.server
    }

    pub fn backend_name(&self) -> &'static str {
        self.wg.backend_name()
    }

    pub fn client_config(&self, peer: &Peer) -> String {
        clientconf::render(peer, &self.server)
    }

    /// Returns the peer and whether it was made now (false: an earlier create with the same
    /// `session_id`).
    pub fn create(
        &self,
        req: &NewPeer,
        fresh: Fresh,
        now: u64,
    ) -> Result<(PeerStatus, bool), NodeError> {
        let mut inner = self.lock();
        let peer = match inner.registry.prepare(req, fresh, now)? {
            Prepared::Existing(p) => return Ok((Self::status(&inner, &p), false)),
            Prepared::New(p) => p,
        };
        if let Err(e) = inner.store.insert_peer(&peer) {
            inner.registry.abort(&peer);
            return Err(e.into());
        }
        // Policy first: the peer's quota and map entries exist before its first packet.
        let added = self
            .policy
            .change(&PeerChange::Add(policy_of(&peer, 0)))
            .map_err(NodeError::from)
            .and_then(|()| {
                self.wg.upsert_peer(&spec(&peer)).map_err(|e| {
                    self.undo_policy(&PeerChange::Remove(policy_of(&peer, 0)), &peer.id);
                    NodeError::from(e)
                })
            });
        if let Err(e) = added {
            inner.registry.abort(&peer);
            if let Err(undo) = inner.store.delete_peer(&peer.id) {
                log::error!("peer {}: could not undo the stored row: {undo}", peer.id);
            }
            return Err(e);
        }
        inner.generation += 1;
        self.trigger.notify_one();
        inner.registry.commit(peer.clone());
        inner.counters.insert(peer.id.clone(), Counters::default());
        log::info!(target: "peer", "peer {} created at {}", peer.id, peer.address);
        Ok((Self::status(&inner, &peer), true))
    }

    /// Removes a peer and returns it with its final counters.
    /// Tells `f` about every peer removed, with its final counters, after the removal.
    pub fn on_removed(&self, f: impl Fn(&PeerStatus, Removal) + Send + Sync + 'static) {
        if self.removal_hook.set(Box::new(f)).is_err() {
            log::warn!("a removal hook was already set");
        }
    }

    pub fn delete(&self, sel: &Selector, why: Removal) -> Result<PeerStatus, NodeError> {
        // Read the counters first, outside the lock: the final usage includes the last bytes.
        let live = self.wg.device()?.peers;
        let mut inner = self.lock();
        let peer = inner
            .registry
            .find(sel)
            .cloned()
            .ok_or(NodeError::NotFound)?;
        Self::fold(&mut inner, &live);
        let used = inner.counters.get(&peer.id).map_or(0, |c| c.cap_used);
        self.wg.remove_peer(&peer.public_key)?;
        let removed = self
            .policy
            .change(&PeerChange::Remove(policy_of(&peer, used)))
            .map_err(NodeError::from)
            .and_then(|()| {
                inner.store.delete_peer(&peer.id).map_err(|e| {
                    self.undo_policy(&PeerChange::Add(policy_of(&peer, used)), &peer.id);
                    NodeError::from(e)
                })
            });
        if let Err(e) = removed {
            // Put it back in WireGuard so that nothing changed.
            if let Err(undo) = self.wg.upsert_peer(&spec(&peer)) {
                log::error!(
                    "peer {}: could not restore after a failed delete: {undo}",
                    peer.id
                );
            }
            return Err(e);
        }
        inner.generation += 1;
        self.trigger.notify_one();
        let status = Self::status(&inner, &peer);
        inner.registry.remove(&peer.id);
        inner.counters.remove(&peer.id);
        inner.dirty.remove(&peer.id);
        inner.endpoints.remove(&peer.id);
        drop(inner);
        log::info!(target: "peer", "peer {} removed ({why:?})", peer.id);
        if let Some(f) = self.removal_hook.get() {
            f(&status, why);
        }
        Ok(status)
    }

    pub fn set_limit(&self, id: &PeerId, limit: SpeedLimit) -> Result<PeerStatus, NodeError> {
        self.update(id, |p| p.limit = limit, |store| store.set_limit(id, limit))
    }

    /// A cap below what is already used takes effect at once: the peer is capped.
    pub fn set_cap(&self, id: &PeerId, cap: Option<u64>) -> Result<PeerStatus, NodeError> {
        self.update(id, |p| p.data_cap = cap, |store| store.set_cap(id, cap))
    }

    /// Changes one peer's policy: kernel first, then the store; undone in the kernel if the
    /// store refuses. The peer keeps its WireGuard session throughout.
    fn update(
        &self,
        id: &PeerId,
        edit: impl FnOnce(&mut Peer),
        save: impl FnOnce(&mut Store) -> Result<(), StoreError>,
    ) -> Result<PeerStatus, NodeError> {
        let mut inner = self.lock();
        let before = inner
            .registry
            .find(&Selector::Id(id.clone()))
            .cloned()
            .ok_or(NodeError::NotFound)?;
        let mut after = before.clone();
        edit(&mut after);
        let used = inner.counters.get(id).map_or(0, |c| c.cap_used);
        let change = PeerChange::Update {
            before: policy_of(&before, used),
            after: policy_of(&after, used),
        };
        self.policy.change(&change)?;
        if let Err(e) = save(&mut inner.store) {
            let back = PeerChange::Update {
                before: policy_of(&after, used),
                after: policy_of(&before, used),
            };
            self.undo_policy(&back, id);
            return Err(e.into());
        }
        inner.generation += 1;
        self.trigger.notify_one();
        let peer = inner.registry.get_mut(id).ok_or(NodeError::NotFound)?;
        *peer = after.clone();
        Ok(Self::status(&inner, &after))
    }

    /// Reverts a policy change after a later step failed; the full reconcile repairs whatever
    /// this cannot.
    fn undo_policy(&self, change: &PeerChange, id: &PeerId) {
        if let Err(e) = self.policy.change(change) {
            log::error!(
                "peer {id}: could not undo a policy change ({e}); the next reconcile repairs it"
            );
        }
    }

    /// Peers past `expires_at`, idle past the idle timeout, or never seen within the grace period.
    pub fn due_for_removal(&self, now: u64) -> Vec<(PeerId, Removal)> {
        let inner = self.lock();
        inner
            .registry
            .iter()
            .filter_map(|p| {
                let hs = inner.counters.get(&p.id).and_then(|c| c.last_handshake);
                lifetime::due_for_removal(p, hs, &self.lifetimes, now)
                    .map(|why| (p.id.clone(), why))
            })
            .collect()
    }

    pub fn teardown(&self) -> Result<(), NodeError> {
        self.policy.teardown()?;
        Ok(self.wg.teardown()?)
    }
}
