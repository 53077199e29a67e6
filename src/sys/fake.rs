//! An in-memory WireGuard for in-process tests and benches: it keeps peers in a map and can be
//! told to fail, so callers' rollback paths can be exercised.
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use wireguard_control::Key;

use super::wg::{DeviceView, PeerSpec, WgError, WireGuard};
use crate::core::peer::LiveStats;

#[derive(Default)]
pub struct FakeWireGuard {
    peers: Mutex<HashMap<Key, (PeerSpec, LiveStats)>>,
    /// When set, the next peer change fails.
    pub fail_next: AtomicBool,
    /// Number of peer changes applied, to check that an operation did O(1) work.
    pub changes: AtomicUsize,
    pub up: AtomicBool,
}

impl FakeWireGuard {
    pub fn has_peer(&self, key: &Key) -> bool {
        self.lock().contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Sets a peer's counters as if traffic had passed.
    pub fn set_stats(&self, key: &Key, stats: LiveStats) {
        if let Some(e) = self.lock().get_mut(key) {
            e.1 = stats;
        }
    }

    /// Forgets every peer, like an interface deleted from outside.
    pub fn wipe(&self) {
        self.lock().clear();
        self.up.store(false, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (PeerSpec, LiveStats)>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn maybe_fail(&self) -> Result<(), WgError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(WgError::Device {
                iface: "fake0".into(),
                what: "injected failure",
                source: std::io::Error::other("injected"),
            });
        }
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl WireGuard for FakeWireGuard {
    fn ensure_interface(&self) -> Result<bool, WgError> {
        Ok(!self.up.swap(true, Ordering::SeqCst))
    }

    fn upsert_peer(&self, p: &PeerSpec) -> Result<(), WgError> {
        self.maybe_fail()?;
        let mut peers = self.lock();
        let stats = peers.get(&p.public_key).map(|e| e.1).unwrap_or_default();
        peers.insert(p.public_key.clone(), (p.clone(), stats));
        Ok(())
    }

    fn remove_peer(&self, key: &Key) -> Result<(), WgError> {
        self.maybe_fail()?;
        self.lock().remove(key);
        Ok(())
    }

    /// One change however many peers, as one device update is.
    fn remove_peers(&self, keys: &[Key]) -> Result<(), WgError> {
        self.maybe_fail()?;
        let mut peers = self.lock();
        for k in keys {
            peers.remove(k);
        }
        Ok(())
    }

    fn set_identity(&self) -> Result<(), WgError> {
        Ok(())
    }

    fn device(&self) -> Result<DeviceView, WgError> {
        let peers = self
            .lock()
            .iter()
            .map(|(k, (_, s))| (k.clone(), *s))
            .collect();
        Ok(DeviceView {
            identity_ok: true,
            peers,
        })
    }

    fn teardown(&self) -> Result<(), WgError> {
        self.wipe();
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "fake"
    }
}

/// A policy that only records: the changes asked for, a usage map tests set, and an optional
/// injected failure.
#[derive(Default)]
pub struct FakeEnforcer {
    pub changes: Mutex<Vec<crate::core::plan::PeerChange>>,
    /// Calls that carried many changes at once (one kernel batch each).
    pub batches: AtomicUsize,
    pub used: Mutex<std::collections::BTreeMap<std::net::Ipv4Addr, u64>>,
    pub fail_next: AtomicBool,
    /// The addresses of each `make_spares` call.
    pub spares: Mutex<Vec<Vec<std::net::Ipv4Addr>>>,
}

impl super::policy::PeerEnforcer for FakeEnforcer {
    fn change(
        &self,
        c: &crate::core::plan::PeerChange,
    ) -> Result<(), crate::sys::dataplane::DataplaneError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(crate::sys::dataplane::DataplaneError::NoDevice(
                "fake0".into(),
            ));
        }
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c.clone());
        Ok(())
    }

    fn change_many(
        &self,
        cs: &[crate::core::plan::PeerChange],
    ) -> Result<(), crate::sys::dataplane::DataplaneError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        cs.iter().try_for_each(|c| self.change(c))
    }

    fn make_spares(
        &self,
        addrs: &[std::net::Ipv4Addr],
    ) -> Result<usize, crate::sys::dataplane::DataplaneError> {
        self.spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(addrs.to_vec());
        Ok(0)
    }

    fn check(
        &self,
        _: Vec<crate::core::plan::PeerPolicy>,
    ) -> Result<Option<super::policy::Repair>, crate::sys::dataplane::DataplaneError> {
        Ok(None)
    }

    fn repair(
        &self,
        _: &super::policy::Repair,
    ) -> Result<(), crate::sys::dataplane::DataplaneError> {
        Ok(())
    }

    fn usage(
        &self,
    ) -> Result<
        std::collections::BTreeMap<std::net::Ipv4Addr, u64>,
        crate::sys::dataplane::DataplaneError,
    > {
        Ok(self.used.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn teardown(&self) -> Result<(), crate::sys::dataplane::DataplaneError> {
        Ok(())
    }
}
