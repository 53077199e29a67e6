//! Reads of WireGuard's peers and counters, one at a time and numbered.
//!
//! WireGuard has no per-peer read: the kernel's netlink dump and wireguard-go's `get=1` both
//! return every peer, tens of milliseconds at 10,000 peers. So a delete's final counters, a
//! pass's fold and a batch of expiries all read the whole device, and most of them do it off the
//! node's thread. Two rules keep that exact:
//! - Reads are serialised and numbered in the order they were made, and callers that ask while a
//!   read they can use is being made share it (a read counts for a caller if it started after
//!   the caller asked, so it includes every byte moved before that).
//! - A peer's counters are folded only from a read newer than the one they were last folded
//!   from: a read that arrives late is never taken for a counter reset.
//!
//! The mutex is held across the read on purpose: it is what serialises reads, and it guards
//! nothing else.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wireguard_control::Key;

use crate::core::peer::LiveStats;
use crate::sys::wg::{DeviceView, WgError, WireGuard};

/// One read of the device.
#[derive(Debug)]
pub struct Reading {
    /// Larger for every later read.
    pub seq: u64,
    pub dev: DeviceView,
    by_key: HashMap<Key, usize>,
}

impl Reading {
    fn new(seq: u64, dev: DeviceView) -> Reading {
        let by_key = dev
            .peers
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        Reading { seq, dev, by_key }
    }

    /// One peer's counters, if WireGuard carried it.
    pub fn stats(&self, key: &Key) -> Option<&LiveStats> {
        self.by_key.get(key).map(|i| &self.dev.peers[*i].1)
    }
}

pub struct DeviceReader {
    wg: Arc<dyn WireGuard>,
    /// Reads started so far.
    started: AtomicU64,
    /// Callers between asking and getting the lock (they will share the next read).
    waiting: AtomicU64,
    last: Mutex<Option<Arc<Reading>>>,
}

impl DeviceReader {
    pub fn new(wg: Arc<dyn WireGuard>) -> DeviceReader {
        DeviceReader {
            wg,
            started: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// A read made after this call began; blocks for at most two reads.
    pub fn read(&self) -> Result<Arc<Reading>, WgError> {
        // Any read numbered `want` or later starts after this point.
        let want = self.started.load(Ordering::SeqCst) + 1;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if let Some(r) = last.as_ref().filter(|r| r.seq >= want) {
            return Ok(r.clone());
        }
        let seq = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let r = Arc::new(Reading::new(seq, self.wg.device()?));
        *last = Some(r.clone());
        Ok(r)
    }
}

#[cfg(test)]
mod tests;
