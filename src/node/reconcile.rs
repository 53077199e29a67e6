//! Reconcile: every interval, after a change that failed part-way and after batched removals,
//! bring the interface, the peers and the data plane back to the node's state, fold the counters
//! in, and remove expired and idle peers. Quiet when nothing changed; each repair is logged and
//! counted, a failure is logged when it first appears and when it clears.
//!
//! Everything that reads O(peers) from the kernel runs off the owner's thread, against the view
//! the owner last published: WireGuard's peers and counters, the quota counts, the data plane's
//! `nft` and `tc` state. The owner gets back only what differs from that view (counters that
//! moved, peers missing or extra, the data plane's repair) and acts on it only if no change
//! touched the kernel since the view, so a change made meanwhile is never undone and a counter
//! is never folded out of order; a stale reading is dropped and the next pass reads again. Under
//! a steady stream of changes, one pass per two intervals runs entirely on the owner's thread,
//! so repairs are never put off for longer than that.
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use wireguard_control::Key;

use super::reading::DeviceReader;
use super::{Node, NodeError, NodeHandle, NodeView, policy_of, spec};
use crate::core::peer::{LiveStats, PeerId};
use crate::core::plan::PeerPolicy;
use crate::core::registry::Selector;
use crate::sys::clock::unix_now;
use crate::sys::inspection::Inspection;
use crate::sys::notify::{NotifyState, heartbeat};
use crate::sys::policy::{PeerEnforcer, Repair};

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

/// The peers' policies as of one generation, for the check made off the owner's thread.
pub struct Snapshot {
    generation: u64,
    peers: Vec<PeerPolicy>,
}

impl Snapshot {
    /// The policies as a published view has them (built off the owner's thread).
    fn of(view: &NodeView) -> Snapshot {
        Snapshot {
            generation: view.generation,
            peers: view
                .peers
                .values()
                .map(|s| policy_of(&s.peer, s.counters.cap_used))
                .collect(),
        }
    }
}

/// The check's findings: the kernel's quota counts and what the data plane lacks.
type Checked = (BTreeMap<Ipv4Addr, u64>, Option<Repair>);

/// A reading of WireGuard made off the owner's thread, reduced to where it differs from the
/// view published before it.
#[derive(Debug, Default)]
pub struct WgReading {
    /// The generation of the view it was compared with.
    generation: u64,
    /// The device read it came from.
    seq: u64,
    identity_ok: bool,
    /// Peers whose counters, handshake or endpoint the view does not have yet.
    moved: Vec<(Key, LiveStats)>,
    /// Peers of the view that WireGuard lacks.
    missing: Vec<PeerId>,
    /// Keys WireGuard carries that the view lacks.
    extra: Vec<Key>,
}

/// Reads the device and compares it with `view` (taken before the read, so every peer in it was
/// already in WireGuard unless something removed it since).
fn read_wireguard(reader: &DeviceReader, view: &NodeView) -> Result<WgReading, NodeError> {
    let reading = reader.read()?;
    let dev = &reading.dev;
    let present: HashSet<&Key> = dev.peers.iter().map(|(k, _)| k).collect();
    let mut known = HashSet::with_capacity(view.peers.len());
    let mut missing = Vec::new();
    for (id, s) in &view.peers {
        known.insert(&s.peer.public_key);
        if !present.contains(&s.peer.public_key) {
            missing.push(id.clone());
        }
    }
    let extra = present
        .iter()
        .filter(|k| !known.contains(*k))
        .map(|k| (*k).clone())
        .collect();
    let by_key: std::collections::HashMap<&Key, &super::PeerStatus> = view
        .peers
        .values()
        .map(|s| (&s.peer.public_key, s))
        .collect();
    let moved = dev
        .peers
        .iter()
        .filter(|(k, st)| {
            by_key.get(k).is_none_or(|s| {
                let c = &s.counters;
                c.accounting.seen.rx != st.rx
                    || c.accounting.seen.tx != st.tx
                    || st
                        .last_handshake
                        .is_some_and(|h| c.last_handshake != Some(h))
            })
        })
        .cloned()
        .collect();
    Ok(WgReading {
        generation: view.generation,
        seq: reading.seq,
        identity_ok: dev.identity_ok,
        moved,
        missing,
        extra,
    })
}

/// Quota counts that differ from the view's (clamping is the owner's: it knows the caps).
fn moved_usage(used: BTreeMap<Ipv4Addr, u64>, view: &NodeView) -> BTreeMap<Ipv4Addr, u64> {
    used.into_iter()
        .filter(|(addr, n)| {
            let held = view
                .holder(std::net::IpAddr::V4(*addr))
                .and_then(|id| view.get(id));
            held.is_none_or(|s| {
                let n = s.peer.data_cap.map_or(*n, |cap| (*n).min(cap));
                s.counters.cap_used != n
            })
        })
        .collect()
}

impl Node {
    /// The whole pass on the owner's thread (at start, in tests, and once per interval under a
    /// steady stream of changes). Writes nothing to the kernel when everything is in place.
    pub fn reconcile(&mut self, persist: bool) -> Result<Repairs, NodeError> {
        let mut r = self.reconcile_wireguard()?;
        let snap = Snapshot::of(&self.view());
        let checked = (self.policy.usage()?, self.policy.check(snap.peers)?);
        r.dataplane = self.finish(snap.generation, checked, persist)?;
        Ok(r)
    }

    /// The interface exists with our key and port and carries exactly our peers; the counters
    /// are folded in.
    pub fn reconcile_wireguard(&mut self) -> Result<Repairs, NodeError> {
        let created = self.ensure_interface()?;
        let reading = read_wireguard(&self.reader, &self.view())?;
        let mut r = self.apply_wireguard(reading)?;
        r.interface_created = created;
        Ok(r)
    }

    /// Creates the interface if it is missing; publishes, so the view a reading is compared
    /// with is the node as it is now.
    pub fn ensure_interface(&mut self) -> Result<bool, NodeError> {
        let created = self.wg.ensure_interface()?;
        self.publish();
        Ok(created)
    }

    /// Acts on a reading: folds what moved (each peer only if its counters are older than the
    /// read), gives WireGuard back the peers it lacks and takes away the keys it should not
    /// carry. The last two only if no change touched the kernel since the reading's view: a
    /// peer created and deleted meanwhile would look like a stray key. The next pass reads
    /// again.
    pub fn apply_wireguard(&mut self, reading: WgReading) -> Result<Repairs, NodeError> {
        let mut r = Repairs::default();
        if !reading.identity_ok {
            self.wg.set_identity()?;
            r.identity_reset = true;
        }
        self.fold(reading.seq, &reading.moved);
        if reading.generation != self.generation {
            self.publish();
            return Ok(r);
        }
        for id in &reading.missing {
            let Some(p) = self.registry.find(&Selector::Id(id.clone())) else {
                continue;
            };
            let mut s = spec(p);
            let keepalive = self.server.persistent_keepalive.max(1);
            s.resume = self.endpoints.get(&p.id).map(|e| (*e, keepalive));
            self.wg.upsert_peer(&s)?;
            r.peers_added += 1;
        }
        for key in &reading.extra {
            if self
                .registry
                .find(&Selector::PublicKey(key.clone()))
                .is_none()
            {
                self.wg.remove_peer(key)?;
                r.peers_removed += 1;
            }
        }
        self.publish();
        Ok(r)
    }

    /// Applies a check made against generation `seen`: the repair and the quota counts only if
    /// no change touched the kernel since. Returns what was repaired.
    fn finish(
        &mut self,
        seen: u64,
        (used, repair): Checked,
        persist: bool,
    ) -> Result<Vec<String>, NodeError> {
        let mut what = Vec::new();
        if seen == self.generation {
            if let Some(repair) = repair {
                self.policy.repair(&repair)?;
                what = repair.what;
            }
            self.fold_cap_usage(&used);
        }
        if persist {
            self.persist()?;
        }
        self.health.store_ok = self.store.check().is_ok();
        self.health.dataplane_ok = true;
        self.publish();
        Ok(what)
    }

    /// After a failed pass: `/health` reports the data plane down until a pass works.
    pub fn pass_failed(&mut self) {
        self.passes.runs += 1;
        self.passes.errors += 1;
        self.health.dataplane_ok = false;
        self.publish();
    }

    /// After a pass that worked: counts it.
    pub fn pass_done(&mut self, repaired: bool) {
        self.passes.runs += 1;
        self.passes.repairs += u64::from(repaired);
        self.publish();
    }
}

/// One pass through the handle. `whole`: everything on the owner's thread. Otherwise the owner
/// only makes sure the interface exists and then acts on what the reads off its thread found.
/// Returns the repairs and whether the data-plane check went stale (a change came in while it
/// ran).
async fn pass(node: &NodeHandle, persist: bool, whole: bool) -> Result<(Repairs, bool), NodeError> {
    if whole {
        return node
            .call(move |n| n.reconcile(persist))
            .await?
            .map(|r| (r, false));
    }
    let (created, spares) = node
        .call(|n| {
            let created = n.ensure_interface()?;
            Ok::<_, NodeError>((created, n.registry.upcoming_addresses(SPARE_CLASSES)))
        })
        .await??;
    let view = node.view();
    let seen = view.generation;
    let (reader, policy) = (node.reader(), node.policy());
    let read = tokio::task::spawn_blocking(move || {
        read_off_thread(&reader, policy.as_ref(), &view, &spares)
    })
    .await
    .map_err(|_| NodeError::Unavailable(super::Fault::Stopped))?;
    let (reading, checked, generation) = match read {
        Ok(r) => r,
        // `nft list` starts over whenever the ruleset changes under it, so a steady stream of
        // changes at 10,000 peers can keep it from finishing in time. A read that failed while
        // changes came in is a stale pass, not a broken data plane: the whole pass on the
        // owner's thread (two intervals on) reads without changes in between and reports a
        // fault that is real.
        Err(e) if node.view().generation != seen => {
            log::debug!("reconcile read failed while peers changed ({e}); read again later");
            let r = Repairs {
                interface_created: created,
                ..Repairs::default()
            };
            return Ok((r, true));
        }
        Err(e) => return Err(e),
    };
    node.call(move |n| {
        let mut r = n.apply_wireguard(reading)?;
        r.interface_created = created;
        let stale = generation != n.generation;
        r.dataplane = n.finish(generation, checked, persist)?;
        Ok((r, stale))
    })
    .await?
}

/// How many of the next addresses get a class ahead (see `PeerEnforcer::make_spares`) on a
/// node where some peer has a speed limit: peers created faster than this per interval make
/// their own, at the kernel's O(classes) cost. A node without limits makes none.
const SPARE_CLASSES: usize = 256;

/// The pass's reads: WireGuard, the quota counts and the data-plane check, against `view`;
/// then classes made ahead for the addresses in `spares`.
fn read_off_thread(
    reader: &DeviceReader,
    policy: &dyn PeerEnforcer,
    view: &NodeView,
    spares: &[Ipv4Addr],
) -> Result<(WgReading, Checked, u64), NodeError> {
    let reading = read_wireguard(reader, view)?;
    let snap = Snapshot::of(view);
    let used = moved_usage(policy.usage()?, view);
    let limits = snap
        .peers
        .iter()
        .any(|p| p.download_kbps.is_some() || p.upload_kbps.is_some());
    let repair = policy.check(snap.peers)?;
    match limits.then(|| policy.make_spares(spares)) {
        None | Some(Ok(0)) => {}
        Some(Ok(n)) => log::debug!("made {n} tc lines of spare classes ahead of new peers"),
        // Some addresses were taken meanwhile; their peers' classes stand.
        Some(Err(e)) => log::debug!("spare classes: {e}"),
    }
    Ok((reading, (used, repair), snap.generation))
}

/// Every interval and on every trigger: one pass, then the removals that are due. Tells the
/// watchdog only after a pass that worked.
pub async fn run(
    node: NodeHandle,
    inspection: Option<Arc<Inspection>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let trigger = node.trigger();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // When the data-plane check last saw a quiet node; past two intervals, the next pass runs
    // whole on the owner's thread.
    let mut last_current = Instant::now();
    // Counters are folded every pass but written every sixth: a crash loses nothing the kernel
    // still counts (the next fold picks it up), and changes rarely wait on the write.
    let mut pass_no = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = trigger.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        pass_no += 1;
        let whole = last_current.elapsed() >= every * 2;
        match pass(&node, pass_no.is_multiple_of(6), whole).await {
            Ok((repairs, stale)) => {
                if !stale {
                    last_current = Instant::now();
                }
                if failing {
                    log::info!("reconcile recovered");
                    failing = false;
                }
                if repairs.interface_created
                    && let Some(i) = &inspection
                {
                    i.restart();
                }
                let repaired = repairs.any();
                if repaired {
                    log::warn!("reconcile repaired the data plane: {repairs:?}");
                }
                let _ = node.call(move |n| n.pass_done(repaired)).await;
                // Removals in chunks, the watchdog told after each: thousands of peers expiring
                // together never look like a hung node.
                loop {
                    let more = remove_due(&node).await;
                    let peers = node.view().peers.len();
                    heartbeat(&[
                        NotifyState::Watchdog,
                        NotifyState::Status(&format!("{peers} peers")),
                    ]);
                    if !matches!(more, Ok(true)) {
                        break;
                    }
                }
            }
            Err(e) => {
                let _ = node.call(Node::pass_failed).await;
                if !failing {
                    log::error!("reconcile failed: {e}");
                    failing = true;
                }
            }
        }
    }
}

/// One removal job: when peers are due, the device is read off the owner's thread for their
/// final counters. Returns whether more are due.
async fn remove_due(node: &NodeHandle) -> Result<bool, NodeError> {
    let now = unix_now();
    if node.view().peers.is_empty() {
        return Ok(false);
    }
    let due = node
        .call(move |n| !n.due_for_removal(now).is_empty())
        .await?;
    if !due {
        return Ok(false);
    }
    let reading = node.read_device().await?;
    node.call(move |n| n.remove_due_after(now, &reading)).await
}
