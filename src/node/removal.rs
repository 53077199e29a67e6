//! Removing the peers a pass finds due (expired, idle) together: one read of the device and of
//! the quotas for their final counters, one WireGuard update, one nftables batch and one
//! `tc -batch`, one store transaction that also keeps each peer's final usage row for the
//! outbox. At most `CHUNK` per job, so the reconcile loop tells the watchdog between chunks
//! and API changes get their turn.
use wireguard_control::Key;

use super::{Node, NodeError, PeerStatus, Reading, Removal, policy_of, spec};
use crate::core::peer::{Peer, PeerId};
use crate::core::plan::PeerChange;
use crate::core::registry::Selector;

/// Peers removed per job.
pub const CHUNK: usize = 1000;

impl Node {
    /// Removes the first `CHUNK` peers due at `now`; returns whether more are due.
    pub fn remove_due(&mut self, now: u64) -> bool {
        match self.reader.read() {
            Ok(reading) => self.remove_due_after(now, &reading),
            Err(e) => {
                log::warn!("removing expired or idle peers: {e}");
                false
            }
        }
    }

    /// `remove_due` with the final counters from `reading`, made off this thread after `now`.
    pub fn remove_due_after(&mut self, now: u64, reading: &Reading) -> bool {
        let due = self.due_for_removal(now);
        let take = due.len().min(CHUNK);
        if take > 0
            && let Err(e) = self.delete_many(&due[..take], reading)
        {
            log::warn!("removing {take} expired or idle peers failed: {e}");
            return false;
        }
        due.len() > take
    }

    /// Removes `due` and returns them with their final counters. All or nothing: on a failure
    /// the peers stay (WireGuard and the store as before; the next pass repairs the data plane).
    pub fn delete_many(
        &mut self,
        due: &[(PeerId, Removal)],
        reading: &Reading,
    ) -> Result<Vec<PeerStatus>, NodeError> {
        let peers: Vec<(Peer, Removal)> = due
            .iter()
            .filter_map(|(id, why)| {
                let p = self.registry.find(&Selector::Id(id.clone()))?;
                Some((p.clone(), *why))
            })
            .collect();
        if peers.is_empty() {
            return Ok(Vec::new());
        }
        // Final counters: the last bytes WireGuard and the quotas counted.
        let last: Vec<_> = peers
            .iter()
            .filter_map(|(p, _)| Some((p.public_key.clone(), *reading.stats(&p.public_key)?)))
            .collect();
        self.fold(reading.seq, &last);
        let used = self.policy.usage()?;
        self.fold_cap_usage(&used);
        let used_of = |n: &Node, p: &Peer| n.counters.get(&p.id).map_or(0, |c| c.cap_used);
        // What each still owes Supabase (its final usage row), stored in the transaction that
        // removes it.
        let owed: Vec<Option<serde_json::Value>> = peers
            .iter()
            .map(|(p, why)| self.owing_hook.get().map(|f| f(&self.status(p), *why)))
            .collect();
        let now = crate::sys::clock::unix_now();
        let changes: Vec<PeerChange> = peers
            .iter()
            .map(|(p, _)| PeerChange::Remove(policy_of(p, used_of(self, p))))
            .collect();
        self.generation += 1;
        self.trigger.notify_one();
        let keys: Vec<Key> = peers.iter().map(|(p, _)| p.public_key.clone()).collect();
        self.wg.remove_peers(&keys)?;
        let gone: Vec<(&PeerId, Option<&serde_json::Value>)> = peers
            .iter()
            .zip(&owed)
            .map(|((p, _), o)| (&p.id, o.as_ref()))
            .collect();
        let removed = match self.policy.change_many(&changes) {
            Err(e) => Err(NodeError::from(e)),
            Ok(()) => self.store.delete_peers_owing(&gone, now).map_err(|e| {
                let back: Vec<PeerChange> = peers
                    .iter()
                    .map(|(p, _)| PeerChange::Add(policy_of(p, used_of(self, p))))
                    .collect();
                if let Err(undo) = self.policy.change_many(&back) {
                    log::error!("could not undo a removal's policy ({undo}); reconcile repairs");
                }
                NodeError::from(e)
            }),
        };
        if let Err(e) = removed {
            for (p, _) in &peers {
                if let Err(undo) = self.wg.upsert_peer(&spec(p)) {
                    log::error!(
                        "peer {}: could not restore after a failed removal: {undo}",
                        p.id
                    );
                }
            }
            return Err(e);
        }
        let mut out = Vec::with_capacity(peers.len());
        for (p, why) in &peers {
            let status = self.status(p);
            self.registry.remove(&p.id);
            self.counters.remove(&p.id);
            self.dirty.remove(&p.id);
            self.endpoints.remove(&p.id);
            self.touch(&p.id);
            log::info!(target: "peer", "peer {} removed ({why:?})", p.id);
            if let Some(f) = self.removal_hook.get() {
                f(&status, *why);
            }
            out.push(status);
        }
        self.publish();
        Ok(out)
    }
}
