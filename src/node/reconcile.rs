//! Reconcile: every interval, and after a failed change, a delete or a policy update, bring the
//! interface, the peers and the data plane back to the node's state, fold the counters in, and
//! remove expired and idle peers. Quiet when nothing changed; each repair is logged and counted,
//! a failure is logged when it first appears and when it clears.
//!
//! WireGuard is read and repaired on the owner's thread, between changes, so a change can never
//! land between the reading and the comparison. The data plane's full check reads O(peers) of
//! `nft` and `tc` output, so it runs off that thread against a snapshot; its repair is applied
//! only if no change touched the kernel since the snapshot (the change's own trigger brings the
//! next pass). Under a steady stream of changes, one pass per interval runs entirely on the
//! owner's thread, so the check is never put off for longer than that.
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use wireguard_control::Key;

use super::{Node, NodeError, NodeHandle, policy_of, spec};
use crate::core::plan::PeerPolicy;
use crate::core::registry::Selector;
use crate::sys::clock::unix_now;
use crate::sys::inspection::Inspection;
use crate::sys::notify::{NotifyState, heartbeat};
use crate::sys::policy::Repair;

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

/// The check's findings: the kernel's quota counts and what the data plane lacks.
type Checked = (BTreeMap<Ipv4Addr, u64>, Option<Repair>);

impl Node {
    /// The whole pass on the owner's thread (at start, in tests, and once per interval under a
    /// steady stream of changes). Writes nothing to the kernel when everything is in place.
    pub fn reconcile(&mut self, persist: bool) -> Result<Repairs, NodeError> {
        let mut r = self.reconcile_wireguard()?;
        let snap = self.snapshot();
        let checked = (self.policy.usage()?, self.policy.check(snap.peers)?);
        r.dataplane = self.finish(snap.generation, checked, persist)?;
        Ok(r)
    }

    /// The interface exists with our key and port and carries exactly our peers; the counters
    /// are folded in.
    pub fn reconcile_wireguard(&mut self) -> Result<Repairs, NodeError> {
        let mut r = Repairs {
            interface_created: self.wg.ensure_interface()?,
            ..Repairs::default()
        };
        let dev = self.wg.device()?;
        if !dev.identity_ok {
            self.wg.set_identity()?;
            r.identity_reset = true;
        }
        self.fold(&dev.peers);
        let present: HashSet<&Key> = dev.peers.iter().map(|(k, _)| k).collect();
        for p in self.registry.iter() {
            if !present.contains(&p.public_key) {
                let mut s = spec(p);
                let keepalive = self.server.persistent_keepalive.max(1);
                s.resume = self.endpoints.get(&p.id).map(|e| (*e, keepalive));
                self.wg.upsert_peer(&s)?;
                r.peers_added += 1;
            }
        }
        for key in present {
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

    pub fn snapshot(&self) -> Snapshot {
        let peers = self
            .registry
            .iter()
            .map(|p| policy_of(p, self.counters.get(&p.id).map_or(0, |c| c.cap_used)))
            .collect();
        Snapshot {
            generation: self.generation,
            peers,
        }
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

/// One pass through the handle. `whole`: everything on the owner's thread. Returns the repairs
/// and whether the data-plane check went stale (a change came in while it ran).
async fn pass(node: &NodeHandle, persist: bool, whole: bool) -> Result<(Repairs, bool), NodeError> {
    if whole {
        return node
            .call(move |n| n.reconcile(persist))
            .await?
            .map(|r| (r, false));
    }
    let (mut r, snap) = node
        .call(|n| n.reconcile_wireguard().map(|r| (r, n.snapshot())))
        .await??;
    let policy = node.policy();
    let generation = snap.generation;
    let checked = tokio::task::spawn_blocking(move || -> Result<Checked, NodeError> {
        Ok((policy.usage()?, policy.check(snap.peers)?))
    })
    .await
    .map_err(|_| NodeError::Unavailable(super::Fault::Stopped))??;
    let (stale, what) = node
        .call(move |n| {
            let stale = generation != n.generation;
            n.finish(generation, checked, persist).map(|w| (stale, w))
        })
        .await??;
    r.dataplane = what;
    Ok((r, stale))
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
                    let more = node.call(|n| n.remove_due(unix_now())).await;
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
