//! The node's peers as one unit: the registry, the store, WireGuard and the data plane kept in
//! step. Each change is applied to all of them or to none: a failure part-way undoes what was
//! done.
//!
//! `Node` is the one owner of this state. It runs on a thread of its own (`handle::spawn`) and
//! takes one job at a time, so no lock guards it and no change waits on a reader; after each
//! change and each reconcile pass it publishes an immutable `NodeView` that every reader uses.
//! Its methods block (SQLite, netlink, the wireguard-go socket, `nft`, `tc`) and are only ever
//! called on that thread, outside the async runtime.
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use imbl::OrdMap;
use tokio::sync::{Notify, watch};

use crate::core::clientconf::ServerSide;
use crate::core::lifetime::{self, PeerLifetimes};
use crate::core::peer::{Peer, PeerId, SpeedLimit};
use crate::core::plan::{self, PeerChange, PeerPolicy, PlanInput};
use crate::core::registry::{Fresh, NewPeer, Prepared, Registry, Selector};
use crate::store::{Store, StoreError, StoredPeer};
use crate::sys::policy::PeerEnforcer;
use crate::sys::wg::{PeerSpec, WireGuard};
use reading::{DeviceReader, Reading};

mod counters;
mod error;
mod handle;
pub mod reading;
pub mod reconcile;
pub mod removal;
mod view;

pub use crate::core::lifetime::Removal;
pub use counters::Counters;
pub use error::{Fault, NodeError};
pub use handle::NodeHandle;
pub use reconcile::Repairs;
pub use view::{Health, NodeView, PassCounts, PeerCounts, PeerStatus};

type RemovalHook = Box<dyn Fn(&PeerStatus, Removal) + Send + Sync>;
/// Builds what a removed peer still owes Supabase (its final usage row), stored with the removal.
type OwingHook = Box<dyn Fn(&PeerStatus, Removal) -> serde_json::Value + Send + Sync>;

/// What the node talks to: WireGuard and the data plane, real or in-memory.
pub struct Seams {
    pub wg: Arc<dyn WireGuard>,
    pub policy: Arc<dyn PeerEnforcer>,
    /// The data plane's settings (no peers): each peer's policy is checked against them before
    /// the kernel is touched.
    pub rules: PlanInput,
}

pub struct Node {
    server: Arc<ServerSide>,
    wg: Arc<dyn WireGuard>,
    /// Every read of WireGuard's peers goes through it (see `reading.rs`).
    reader: Arc<DeviceReader>,
    policy: Arc<dyn PeerEnforcer>,
    rules: PlanInput,
    lifetimes: PeerLifetimes,
    registry: Registry,
    store: Store,
    counters: HashMap<PeerId, Counters>,
    /// Peers whose counters moved since they were last written to the store.
    dirty: HashSet<PeerId>,
    /// Bumped before every change that touches the kernel, so that a data-plane check made
    /// off this thread is only applied if nothing changed meanwhile.
    generation: u64,
    /// Where each peer was last seen, to resume its session on a re-created interface.
    endpoints: HashMap<PeerId, SocketAddr>,
    health: Health,
    passes: PassCounts,
    /// The peers as readers see them, kept in step entry by entry (see `view.rs`).
    view_peers: OrdMap<PeerId, PeerStatus>,
    view_addresses: OrdMap<std::net::IpAddr, PeerId>,
    view: watch::Sender<Arc<NodeView>>,
    removal_hook: Arc<OnceLock<RemovalHook>>,
    owing_hook: Arc<OnceLock<OwingHook>>,
    /// Wakes the reconcile loop after each change, so a repair never waits a whole interval.
    trigger: Arc<Notify>,
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
        seams: Seams,
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
                    read: 0,
                },
            );
            let id = peer.id.clone();
            if let Err(e) = registry.restore(peer) {
                // A row that clashes with another cannot be served; keep it stored, say so.
                log::error!("stored peer {id} not restored: {e}");
                counters.remove(&id);
            }
        }
        let health = Health {
            dataplane_ok: false,
            store_ok: true,
        };
        let (view, _) = watch::channel(Arc::new(NodeView {
            peers: OrdMap::new(),
            addresses: OrdMap::new(),
            free_addresses: registry.free_addresses(),
            health,
            backend: seams.wg.backend_name(),
            passes: PassCounts::default(),
            generation: 0,
        }));
        let mut node = Node {
            server: Arc::new(server),
            reader: Arc::new(DeviceReader::new(seams.wg.clone())),
            wg: seams.wg,
            policy: seams.policy,
            rules: seams.rules,
            lifetimes,
            registry,
            store,
            counters,
            dirty: HashSet::new(),
            generation: 0,
            endpoints: HashMap::new(),
            health,
            passes: PassCounts::default(),
            view_peers: OrdMap::new(),
            view_addresses: OrdMap::new(),
            view,
            removal_hook: Arc::default(),
            owing_hook: Arc::default(),
            trigger: Arc::new(Notify::new()),
        };
        let ids: Vec<PeerId> = node.registry.iter().map(|p| p.id.clone()).collect();
        for id in &ids {
            node.touch(id);
        }
        node.publish();
        Ok(node)
    }

    /// The latest published view (the owner's own reads go to its state directly).
    pub fn view(&self) -> Arc<NodeView> {
        self.view.borrow().clone()
    }

    /// Checks a peer's policy against the data plane's rules: refused before any kernel call.
    fn validate(&self, p: &PeerPolicy) -> Result<(), NodeError> {
        Ok(plan::validate_peer(&self.rules, p)?)
    }

    /// After a change: readers see it now. A change that went through leaves nothing to repair,
    /// so it does not wake the reconcile loop: a pass reads O(peers) from the kernel, and one
    /// after every change would keep a busy node reading all the time at 10,000 peers. A change
    /// that failed part-way wakes it.
    fn changed(&mut self, id: &PeerId) {
        self.touch(id);
        self.publish();
    }

    /// A store failure is the node's health too: `/health` says so until a pass finds it back.
    fn store_failed(&mut self, e: StoreError) -> NodeError {
        self.health.store_ok = false;
        self.publish();
        e.into()
    }

    /// Returns the peer and whether it was made now (false: an earlier create with the same
    /// `session_id`).
    pub fn create(
        &mut self,
        req: &NewPeer,
        fresh: Fresh,
        now: u64,
    ) -> Result<(PeerStatus, bool), NodeError> {
        let peer = match self.registry.prepare(req, fresh, now)? {
            Prepared::Existing(p) => return Ok((self.status(&p), false)),
            Prepared::New(p) => p,
        };
        if let Err(e) = self.validate(&policy_of(&peer, 0)) {
            self.registry.abort(&peer);
            return Err(e);
        }
        if let Err(e) = self.store.insert_peer(&peer) {
            self.registry.abort(&peer);
            return Err(self.store_failed(e));
        }
        self.generation += 1;
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
            self.registry.abort(&peer);
            if let Err(undo) = self.store.delete_peer(&peer.id) {
                log::error!("peer {}: could not undo the stored row: {undo}", peer.id);
            }
            self.trigger.notify_one();
            return Err(e);
        }
        self.registry.commit(peer.clone());
        self.counters.insert(peer.id.clone(), Counters::default());
        self.changed(&peer.id);
        log::info!(target: "peer", "peer {} created at {}", peer.id, peer.address);
        Ok((self.status(&peer), true))
    }

    /// Removes a peer and returns it with its final counters, reading the device here (the
    /// handle's `delete` reads it off this thread).
    pub fn delete(&mut self, sel: &Selector, why: Removal) -> Result<PeerStatus, NodeError> {
        let reading = self.reader.read()?;
        self.delete_after(sel, why, &reading)
    }

    /// Removes a peer with its final counters from `reading`, a read made after the delete was
    /// asked for: it holds every byte the peer moved until then.
    pub fn delete_after(
        &mut self,
        sel: &Selector,
        why: Removal,
        reading: &Reading,
    ) -> Result<PeerStatus, NodeError> {
        let peer = self
            .registry
            .find(sel)
            .cloned()
            .ok_or(NodeError::NotFound)?;
        if let Some(stats) = reading.stats(&peer.public_key) {
            self.fold(reading.seq, &[(peer.public_key.clone(), *stats)]);
        }
        let used = self.counters.get(&peer.id).map_or(0, |c| c.cap_used);
        // What the peer owes Supabase is stored in the same transaction that removes it.
        let owed = self.owing_hook.get().map(|f| f(&self.status(&peer), why));
        let now = crate::sys::clock::unix_now();
        self.generation += 1;
        if let Err(e) = self.wg.remove_peer(&peer.public_key) {
            self.trigger.notify_one();
            return Err(e.into());
        }
        let removed = self
            .policy
            .change(&PeerChange::Remove(policy_of(&peer, used)))
            .map_err(NodeError::from)
            .and_then(|()| {
                self.store
                    .delete_peer_owing(&peer.id, owed.as_ref(), now)
                    .map_err(|e| {
                        self.undo_policy(&PeerChange::Add(policy_of(&peer, used)), &peer.id);
                        NodeError::from(e)
                    })
            });
        if let Err(e) = removed {
            self.trigger.notify_one();
            // Put it back in WireGuard so that nothing changed.
            if let Err(undo) = self.wg.upsert_peer(&spec(&peer)) {
                log::error!(
                    "peer {}: could not restore after a failed delete: {undo}",
                    peer.id
                );
            }
            return Err(e);
        }
        let status = self.status(&peer);
        self.registry.remove(&peer.id);
        self.counters.remove(&peer.id);
        self.dirty.remove(&peer.id);
        self.endpoints.remove(&peer.id);
        self.changed(&peer.id);
        log::info!(target: "peer", "peer {} removed ({why:?})", peer.id);
        if let Some(f) = self.removal_hook.get() {
            f(&status, why);
        }
        Ok(status)
    }

    /// Outbox entries with an id above `after`, oldest first.
    pub fn owed(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::store::OutboxRow>, NodeError> {
        Ok(self.store.owed(after, limit)?)
    }

    /// Deletes acknowledged outbox entries (id, revision).
    pub fn ack_owed(&mut self, done: &[(i64, i64)]) -> Result<usize, NodeError> {
        Ok(self.store.ack_owed(done)?)
    }

    pub fn set_limit(&mut self, id: &PeerId, limit: SpeedLimit) -> Result<PeerStatus, NodeError> {
        self.update(id, |p| p.limit = limit, |store| store.set_limit(id, limit))
    }

    /// A cap below what is already used takes effect at once: the peer is capped.
    pub fn set_cap(&mut self, id: &PeerId, cap: Option<u64>) -> Result<PeerStatus, NodeError> {
        self.update(id, |p| p.data_cap = cap, |store| store.set_cap(id, cap))
    }

    /// Changes one peer's policy: kernel first, then the store; undone in the kernel if the
    /// store refuses. The peer keeps its WireGuard session throughout.
    fn update(
        &mut self,
        id: &PeerId,
        edit: impl FnOnce(&mut Peer),
        save: impl FnOnce(&mut Store) -> Result<(), StoreError>,
    ) -> Result<PeerStatus, NodeError> {
        let before = self
            .registry
            .find(&Selector::Id(id.clone()))
            .cloned()
            .ok_or(NodeError::NotFound)?;
        let mut after = before.clone();
        edit(&mut after);
        let used = self.counters.get(id).map_or(0, |c| c.cap_used);
        self.validate(&policy_of(&after, used))?;
        let change = PeerChange::Update {
            before: policy_of(&before, used),
            after: policy_of(&after, used),
        };
        self.generation += 1;
        if let Err(e) = self.policy.change(&change) {
            self.trigger.notify_one();
            return Err(e.into());
        }
        if let Err(e) = save(&mut self.store) {
            self.trigger.notify_one();
            let back = PeerChange::Update {
                before: policy_of(&after, used),
                after: policy_of(&before, used),
            };
            self.undo_policy(&back, id);
            return Err(self.store_failed(e));
        }
        let peer = self.registry.get_mut(id).ok_or(NodeError::NotFound)?;
        *peer = after.clone();
        self.changed(id);
        Ok(self.status(&after))
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
        self.registry
            .iter()
            .filter_map(|p| {
                let hs = self.counters.get(&p.id).and_then(|c| c.last_handshake);
                lifetime::due_for_removal(p, hs, &self.lifetimes, now)
                    .map(|why| (p.id.clone(), why))
            })
            .collect()
    }

    pub fn teardown(&mut self) -> Result<(), NodeError> {
        self.policy.teardown()?;
        Ok(self.wg.teardown()?)
    }
}
