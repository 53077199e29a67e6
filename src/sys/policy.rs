//! The seam between the node and its per-peer policy in the kernel (isolation, speed limits,
//! data caps), and the real implementation over `nft` and `tc`.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::core::plan::{PeerChange, PeerPolicy, Plan, PlanInput, spare_tc};
use crate::sys::dataplane::{Dataplane, DataplaneError};
use crate::sys::runner::Cmd;

/// What a full check found different from the plan: one `nft -f` script and `tc -batch` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    pub nft: String,
    pub tc: Vec<String>,
    /// One line per change, for the log.
    pub what: Vec<String>,
}

/// Puts each peer's `PeerPolicy` into the kernel (as `FlowEnforcer` does a flow's decision).
/// `Policy` alone names one thing in this code: inspection's per-protocol actions.
pub trait PeerEnforcer: Send + Sync + 'static {
    /// One peer's change, in O(1) kernel work.
    fn change(&self, change: &PeerChange) -> Result<(), DataplaneError>;
    /// Many peers' changes as one nftables batch and one tc batch (a pass's removals).
    fn change_many(&self, changes: &[PeerChange]) -> Result<(), DataplaneError> {
        changes.iter().try_for_each(|c| self.change(c))
    }
    /// Makes HTB classes ahead for `addrs` (the addresses the next peers will get) where the
    /// last `check` saw none; returns how many lines it wrote. Off the owner's thread only: at
    /// 10,000 classes each new one costs the kernel about 1 ms.
    fn make_spares(&self, _addrs: &[Ipv4Addr]) -> Result<usize, DataplaneError> {
        Ok(0)
    }
    /// Compares the kernel with the plan for `peers`; writes nothing.
    fn check(&self, peers: Vec<PeerPolicy>) -> Result<Option<Repair>, DataplaneError>;
    fn repair(&self, repair: &Repair) -> Result<(), DataplaneError>;
    /// Bytes each peer has used of its cap, as the kernel counts them.
    fn usage(&self) -> Result<BTreeMap<Ipv4Addr, u64>, DataplaneError>;
    /// Removes everything the node put into the kernel (`teardown_on_stop`).
    fn teardown(&self) -> Result<(), DataplaneError>;
}

/// `nft` and `tc` through the data plane's renderer; `base` is the node's settings (no peers).
pub struct KernelEnforcer {
    dp: Dataplane,
    base: Mutex<PlanInput>,
    /// The class minors each shaped device held at the last check, plus the spares made since.
    classes: Mutex<BTreeMap<String, BTreeSet<u16>>>,
}

impl KernelEnforcer {
    pub fn new(dp: Dataplane, base: PlanInput) -> KernelEnforcer {
        KernelEnforcer {
            dp,
            base: Mutex::new(base),
            classes: Mutex::default(),
        }
    }

    fn base(&self) -> PlanInput {
        self.base.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the fenced networks (the host's addresses changed); `true` when they differ
    /// from before. The next full check writes them.
    pub fn set_fence(&self, v4: Vec<Ipv4Net>, v6: Vec<Ipv6Net>) -> bool {
        let mut base = self.base.lock().unwrap_or_else(|e| e.into_inner());
        if base.blocked_v4 == v4 && base.blocked_v6 == v6 {
            return false;
        }
        base.blocked_v4 = v4;
        base.blocked_v6 = v6;
        true
    }
}

impl PeerEnforcer for KernelEnforcer {
    fn change(&self, change: &PeerChange) -> Result<(), DataplaneError> {
        self.dp.apply_change(&self.base(), change).map(|_| ())
    }

    fn change_many(&self, changes: &[PeerChange]) -> Result<(), DataplaneError> {
        self.dp.apply_changes(&self.base(), changes).map(|_| ())
    }

    fn make_spares(&self, addrs: &[Ipv4Addr]) -> Result<usize, DataplaneError> {
        let base = self.base();
        let lines = spare_tc(
            &base,
            addrs,
            &mut self.classes.lock().unwrap_or_else(|e| e.into_inner()),
        );
        // Lines fail only where a peer took the address meanwhile (its class exists): the
        // rest are made all the same, and the next check sees every class as it is.
        self.dp.apply_tc_forced(&lines)?;
        Ok(lines.len())
    }

    fn check(&self, peers: Vec<PeerPolicy>) -> Result<Option<Repair>, DataplaneError> {
        let input = PlanInput {
            peers,
            ..self.base()
        };
        let plan = Plan::build(&input)?;
        self.dp.prepare(&input)?;
        let observed = self.dp.observe(&plan)?;
        *self.classes.lock().unwrap_or_else(|e| e.into_inner()) = observed
            .devs
            .iter()
            .filter_map(|(dev, o)| {
                Some((dev.clone(), o.as_ref()?.classes.keys().copied().collect()))
            })
            .collect();
        let (nft, tc, missing) = self.dp.diff(&plan, &observed);
        if let Some(dev) = missing.first() {
            return Err(DataplaneError::NoDevice(dev.clone()));
        }
        if nft.is_empty() && tc.is_empty() {
            return Ok(None);
        }
        let mut what: Vec<String> = nft.changes.iter().map(|c| format!("nft: {c}")).collect();
        if !tc.is_empty() {
            what.push(format!("tc: {} objects", tc.len()));
        }
        Ok(Some(Repair {
            nft: nft.script,
            tc,
            what,
        }))
    }

    fn repair(&self, r: &Repair) -> Result<(), DataplaneError> {
        self.dp.apply_nft(&r.nft)?;
        self.dp.apply_tc(&r.tc)
    }

    fn usage(&self) -> Result<BTreeMap<Ipv4Addr, u64>, DataplaneError> {
        self.dp.usage()
    }

    fn teardown(&self) -> Result<(), DataplaneError> {
        // The per-flow table (inspection's block/throttle) goes too; absent is fine.
        let flows = Cmd::new([
            "nft",
            "delete",
            "table",
            "inet",
            crate::core::plan::flows::FLOW_TABLE,
        ]);
        let _ = self.dp.runner().run(&flows);
        self.dp.teardown(&self.base())
    }
}
