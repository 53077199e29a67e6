//! The node's peers as one unit: the registry, the store and WireGuard kept in step. Each change
//! is applied to all three or to none: a failure part-way undoes what was done.
//!
//! Every method may block (SQLite, netlink, the wireguard-go socket): call them from
//! `spawn_blocking`, never from an async task directly.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use wireguard_control::Key;

use crate::config::PeerLifetimes;
use crate::core::clientconf::{self, ServerSide};
use crate::core::peer::LiveStats;
use crate::core::peer::{Accounting, Peer, PeerId, SpeedLimit, Usage};
use crate::core::plan::{PeerChange, PeerPolicy};
use crate::core::registry::{CreateError, Fresh, NewPeer, Prepared, Registry, Selector};
use crate::store::{Store, StoreError, StoredPeer, UsageRow};
use crate::sys::dataplane::DataplaneError;
use crate::sys::policy::Policy;
use crate::sys::wg::{PeerSpec, WgError, WireGuard};

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

/// What the node has counted for a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub accounting: Accounting,
    /// Bytes counted against the data cap.
    pub cap_used: u64,
    pub last_handshake: Option<u64>,
}

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

/// What one reconcile pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repairs {
    pub interface_created: bool,
    /// The interface's private key or listen port had been changed from outside.
    pub identity_reset: bool,
    pub peers_added: usize,
    pub peers_removed: usize,
    /// What the data plane lacked and was given back.
    pub dataplane: Vec<String>,
}

impl Repairs {
    pub fn any(&self) -> bool {
        self.interface_created
            || self.identity_reset
            || self.peers_added > 0
            || self.peers_removed > 0
            || !self.dataplane.is_empty()
    }
}

/// Why a peer went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    Expired,
    Idle,
}

type RemovalHook = Box<dyn Fn(&PeerStatus, Removal) + Send + Sync>;
/// Builds what a removed peer still owes Supabase (its final usage row), stored with the removal.
type OwingHook = Box<dyn Fn(&PeerStatus, Removal) -> serde_json::Value + Send + Sync>;

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
    owing_hook: OnceLock<OwingHook>,
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
            owing_hook: OnceLock::new(),
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

    fn status(inner: &Inner, peer: &Peer) -> PeerStatus {
        PeerStatus {
            peer: peer.clone(),
            counters: inner.counters.get(&peer.id).copied().unwrap_or_default(),
        }
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

    /// Makes every removal write `f`'s row into the store's outbox in the removal's own
    /// transaction (only with a control plane: nothing else would ever drain it).
    pub fn owe_on_removal(
        &self,
        f: impl Fn(&PeerStatus, Removal) -> serde_json::Value + Send + Sync + 'static,
    ) {
        if self.owing_hook.set(Box::new(f)).is_err() {
            log::warn!("an owing hook was already set");
        }
    }

    /// Outbox entries with an id above `after`, oldest first.
    pub fn owed(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::store::OutboxRow>, NodeError> {
        Ok(self.lock().store.owed(after, limit)?)
    }

    /// Deletes acknowledged outbox entries (id, revision).
    pub fn ack_owed(&self, done: &[(i64, i64)]) -> Result<usize, NodeError> {
        Ok(self.lock().store.ack_owed(done)?)
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
        let owed = self
            .owing_hook
            .get()
            .map(|f| f(&Self::status(&inner, &peer), why));
        self.wg.remove_peer(&peer.public_key)?;
        let now = crate::app::unix_now();
        let removed = self
            .policy
            .change(&PeerChange::Remove(policy_of(&peer, used)))
            .map_err(NodeError::from)
            .and_then(|()| {
                inner
                    .store
                    .delete_peer_owing(&peer.id, owed.as_ref(), now)
                    .map_err(|e| {
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

    /// Folds a reading of the kernel's counters into the totals and marks what moved.
    fn fold(inner: &mut Inner, live: &[(Key, LiveStats)]) {
        for (key, stats) in live {
            let Some(id) = inner
                .registry
                .find(&Selector::PublicKey(key.clone()))
                .map(|p| p.id.clone())
            else {
                continue;
            };
            let c = inner.counters.entry(id.clone()).or_default();
            let before = *c;
            c.accounting.fold(Usage {
                rx: stats.rx,
                tx: stats.tx,
            });
            c.last_handshake = stats.last_handshake.or(c.last_handshake);
            if *c != before {
                inner.dirty.insert(id.clone());
            }
            if let Some(e) = stats.endpoint {
                inner.endpoints.insert(id, e);
            }
        }
    }

    /// Writes the counters that moved since the last write.
    fn persist(inner: &mut Inner) -> Result<usize, NodeError> {
        let Inner {
            store,
            counters,
            dirty,
            ..
        } = inner;
        let rows: Vec<UsageRow> = dirty
            .iter()
            .filter_map(|id| {
                let c = counters.get(id)?;
                Some(UsageRow {
                    id,
                    accounting: c.accounting,
                    cap_used: c.cap_used,
                    last_handshake: c.last_handshake,
                })
            })
            .collect();
        let n = rows.len();
        if n > 0 {
            store.save_usage(&rows)?;
        }
        dirty.clear();
        Ok(n)
    }

    /// Brings WireGuard to the stored state: the interface exists with our key and port and
    /// carries exactly our peers; folds the counters in, and with `persist` writes those that
    /// moved. The device is read before the lock is taken, so API calls wait only for the
    /// (usually empty) repairs. Writes nothing to the kernel when everything is in place.
    pub fn reconcile(&self, persist: bool) -> Result<Repairs, NodeError> {
        let mut r = Repairs {
            interface_created: self.wg.ensure_interface()?,
            ..Repairs::default()
        };
        let dev = self.wg.device()?;
        if !dev.identity_ok {
            self.wg.set_identity()?;
            r.identity_reset = true;
        }
        let mut inner = self.lock();
        Self::fold(&mut inner, &dev.peers);
        let present: HashSet<&Key> = dev.peers.iter().map(|(k, _)| k).collect();
        for p in inner.registry.iter() {
            if !present.contains(&p.public_key) {
                let mut s = spec(p);
                let keepalive = self.server.persistent_keepalive.max(1);
                s.resume = inner.endpoints.get(&p.id).map(|e| (*e, keepalive));
                self.wg.upsert_peer(&s)?;
                r.peers_added += 1;
            }
        }
        for key in present {
            if inner
                .registry
                .find(&Selector::PublicKey(key.clone()))
                .is_none()
            {
                self.wg.remove_peer(key)?;
                r.peers_removed += 1;
            }
        }
        let generation = inner.generation;
        let peers: Vec<PeerPolicy> = inner
            .registry
            .iter()
            .map(|p| policy_of(p, inner.counters.get(&p.id).map_or(0, |c| c.cap_used)))
            .collect();
        drop(inner);

        // The data plane: read and compared outside the lock (O(peers)); a repair is written
        // only if no API change came in between, else the next pass redoes the check.
        let used = self.policy.usage()?;
        if let Some(repair) = self.policy.check(peers)? {
            let inner = self.lock();
            if inner.generation == generation {
                self.policy.repair(&repair)?;
                r.dataplane = repair.what;
            }
        }
        let mut inner = self.lock();
        Self::fold_cap_usage(&mut inner, &used);
        if persist {
            Self::persist(&mut inner)?;
        }
        Ok(r)
    }

    /// Takes the kernel's per-quota counts as the peers' cap usage. Past the cap the kernel also
    /// counts what it dropped, so the figure is clamped to the cap.
    fn fold_cap_usage(
        inner: &mut Inner,
        used: &std::collections::BTreeMap<std::net::Ipv4Addr, u64>,
    ) {
        let Inner {
            registry,
            counters,
            dirty,
            ..
        } = inner;
        for p in registry.iter() {
            let Some(&n) = used.get(&p.address) else {
                continue;
            };
            let n = p.data_cap.map_or(n, |cap| n.min(cap));
            let c = counters.entry(p.id.clone()).or_default();
            if c.cap_used != n {
                c.cap_used = n;
                dirty.insert(p.id.clone());
            }
        }
    }

    /// Peers past `expires_at`, idle past the idle timeout, or never seen within the grace period.
    pub fn due_for_removal(&self, now: u64) -> Vec<(PeerId, Removal)> {
        let inner = self.lock();
        let idle = self.lifetimes.idle_timeout.map(|d| d.as_secs());
        let grace = self.lifetimes.handshake_grace.as_secs();
        inner
            .registry
            .iter()
            .filter_map(|p| {
                let expired = p.expires_at.is_some_and(|e| e <= now);
                let hs = inner.counters.get(&p.id).and_then(|c| c.last_handshake);
                let idle = idle.is_some_and(|t| match hs {
                    Some(h) => now.saturating_sub(h) > t,
                    None => now.saturating_sub(p.created_at) > grace,
                });
                let why = if expired {
                    Removal::Expired
                } else if idle {
                    Removal::Idle
                } else {
                    return None;
                };
                Some((p.id.clone(), why))
            })
            .collect()
    }

    /// Persists every peer's counters, e.g. before exit.
    pub fn flush(&self) -> Result<(), NodeError> {
        let live = self.wg.device().map(|d| d.peers);
        let mut inner = self.lock();
        match live {
            Ok(live) => Self::fold(&mut inner, &live),
            Err(e) => log::warn!("final counter read failed: {e}"),
        }
        let Inner {
            store,
            counters,
            dirty,
            ..
        } = &mut *inner;
        dirty.clear();
        let rows: Vec<UsageRow> = counters
            .iter()
            .map(|(id, c)| UsageRow {
                id,
                accounting: c.accounting,
                cap_used: c.cap_used,
                last_handshake: c.last_handshake,
            })
            .collect();
        store.save_usage(&rows)?;
        Ok(())
    }

    pub fn teardown(&self) -> Result<(), NodeError> {
        self.policy.teardown()?;
        Ok(self.wg.teardown()?)
    }
}
