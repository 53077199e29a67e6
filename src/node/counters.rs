//! The node's counters: what the kernel counted for each peer, folded into totals that survive
//! a re-created interface, and written to the store when they moved.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use wireguard_control::Key;

use super::{Node, NodeError};
use crate::core::peer::{Accounting, LiveStats, Usage};
use crate::core::registry::Selector;
use crate::store::UsageRow;

/// What the node has counted for a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub accounting: Accounting,
    /// Bytes counted against the data cap.
    pub cap_used: u64,
    pub last_handshake: Option<u64>,
    /// The device read these counters were last folded from (`Reading::seq`; not stored).
    pub read: u64,
}

impl Node {
    /// Folds counters from device read `seq` into the totals and marks what moved (for the
    /// store and for the view). A peer whose counters came from a later read keeps them.
    pub(super) fn fold(&mut self, seq: u64, live: &[(Key, LiveStats)]) {
        for (key, stats) in live {
            let Some(id) = self
                .registry
                .find(&Selector::PublicKey(key.clone()))
                .map(|p| p.id.clone())
            else {
                continue;
            };
            let c = self.counters.entry(id.clone()).or_default();
            if c.read >= seq {
                continue;
            }
            let before = *c;
            c.accounting.fold(Usage {
                rx: stats.rx,
                tx: stats.tx,
            });
            c.last_handshake = stats.last_handshake.or(c.last_handshake);
            c.read = seq;
            if (c.accounting, c.last_handshake) != (before.accounting, before.last_handshake) {
                self.dirty.insert(id.clone());
                self.touch(&id);
            }
            if let Some(e) = stats.endpoint {
                self.endpoints.insert(id, e);
            }
        }
    }

    /// Writes the counters that moved since the last write.
    pub(super) fn persist(&mut self) -> Result<usize, NodeError> {
        let rows: Vec<UsageRow> = self
            .dirty
            .iter()
            .filter_map(|id| {
                let c = self.counters.get(id)?;
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
            self.store.save_usage(&rows)?;
        }
        self.dirty.clear();
        Ok(n)
    }

    /// Takes the kernel's per-quota counts as the peers' cap usage. Past the cap the kernel also
    /// counts what it dropped, so the figure is clamped to the cap. O(counts), each peer found
    /// through the address index: a pass hands over only the counts that moved.
    pub(super) fn fold_cap_usage(&mut self, used: &BTreeMap<Ipv4Addr, u64>) {
        let mut moved = Vec::new();
        for (addr, &n) in used {
            let Some(id) = self.view_addresses.get(&IpAddr::V4(*addr)) else {
                continue;
            };
            let Some(p) = self.registry.find(&Selector::Id(id.clone())) else {
                continue;
            };
            let n = p.data_cap.map_or(n, |cap| n.min(cap));
            let c = self.counters.entry(p.id.clone()).or_default();
            if c.cap_used != n {
                c.cap_used = n;
                moved.push(p.id.clone());
            }
        }
        for id in moved {
            self.touch(&id);
            self.dirty.insert(id);
        }
    }

    /// Persists every peer's counters, e.g. before exit.
    pub fn flush(&mut self) -> Result<(), NodeError> {
        match self.reader.read() {
            Ok(r) => self.fold(r.seq, &r.dev.peers),
            Err(e) => log::warn!("final counter read failed: {e}"),
        }
        self.dirty.clear();
        let rows: Vec<UsageRow> = self
            .counters
            .iter()
            .map(|(id, c)| UsageRow {
                id,
                accounting: c.accounting,
                cap_used: c.cap_used,
                last_handshake: c.last_handshake,
            })
            .collect();
        self.store.save_usage(&rows)?;
        self.publish();
        Ok(())
    }
}
