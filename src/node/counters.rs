//! The node's counters: what the kernel counted for each peer, folded into totals that survive
//! a re-created interface, and written to the store when they moved.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use wireguard_control::Key;

use super::{Inner, Node, NodeError};
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
}

impl Node {
    /// Folds a reading of the kernel's counters into the totals and marks what moved.
    pub(super) fn fold(inner: &mut Inner, live: &[(Key, LiveStats)]) {
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
    pub(super) fn persist(inner: &mut Inner) -> Result<usize, NodeError> {
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

    /// Takes the kernel's per-quota counts as the peers' cap usage. Past the cap the kernel also
    /// counts what it dropped, so the figure is clamped to the cap.
    pub(super) fn fold_cap_usage(inner: &mut Inner, used: &BTreeMap<Ipv4Addr, u64>) {
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
}
