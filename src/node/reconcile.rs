//! The reconcile loop: every interval, and right after each API change, bring the interface,
//! the peers and the data plane back to the stored state, fold the counters in, and remove
//! expired and idle peers. Quiet when nothing changed; each repair is logged and counted, a
//! failure is logged when it first appears and when it clears.
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use wireguard_control::Key;

use super::{Node, NodeError, policy_of, spec};
use crate::core::plan::PeerPolicy;
use crate::core::registry::Selector;
use crate::inspection::Inspection;
use crate::metrics::Metrics;
use crate::sys::clock::unix_now;
use crate::sys::notify::{NotifyState, notify};

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

impl Node {
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
}

/// Every interval: repair the interface and peers, fold counters, remove expired and idle
/// peers. Tells the watchdog only after a pass that worked.
pub async fn run(
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    inspection: Option<Arc<Inspection>>,
    every: Duration,
    trigger: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // Counters are folded every pass but written every sixth: a crash loses nothing the kernel
    // still counts (the next fold picks it up), and API calls rarely wait on the write.
    let mut pass_no = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = trigger.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let n = node.clone();
        pass_no += 1;
        let persist = pass_no.is_multiple_of(6);
        let pass = tokio::task::spawn_blocking(move || {
            let repairs = n.reconcile(persist)?;
            for (id, why) in n.due_for_removal(unix_now()) {
                if let Err(e) = n.delete(&Selector::Id(id), why) {
                    log::warn!("removing an {why:?} peer failed: {e}");
                }
            }
            Ok::<_, NodeError>(repairs)
        })
        .await;
        metrics.reconcile_runs.fetch_add(1, Ordering::Relaxed);
        match pass {
            Ok(Ok(repairs)) => {
                if failing {
                    log::info!("reconcile recovered");
                    failing = false;
                }
                if repairs.interface_created
                    && let Some(i) = &inspection
                {
                    i.restart();
                }
                if repairs.any() {
                    metrics.reconcile_repairs.fetch_add(1, Ordering::Relaxed);
                    log::warn!("reconcile repaired the data plane: {repairs:?}");
                }
                metrics.dataplane_ok.store(true, Ordering::Relaxed);
                let (peers, _) = node.count();
                notify(&[
                    NotifyState::Watchdog,
                    NotifyState::Status(&format!("{peers} peers")),
                ]);
            }
            Ok(Err(e)) => {
                metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
                metrics.dataplane_ok.store(false, Ordering::Relaxed);
                if !failing {
                    log::error!("reconcile failed: {e}");
                    failing = true;
                }
            }
            Err(e) => log::error!("reconcile task failed: {e}"),
        }
    }
}
