//! Applies the data-plane plan: observe what the kernel holds, diff against the plan, run one
//! `nft -f` transaction and one `tc -batch`, then read back and verify. Also the host facts the
//! plan needs (default-route interface, private networks) and the per-peer fast path.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use crate::core::plan::{
    self, NftDiff, ObservedDev, ObservedNft, ObservedQuota, PeerChange, Plan, PlanError, PlanInput,
    TABLE, quota_name, quota_owner,
};
use crate::sys::nft::{NetlinkError, NftLink};
use crate::sys::runner::{Cmd, RunError, Runner};
use crate::sys::{nft, tc};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("data plane: {0}")]
    Plan(#[from] PlanError),
    #[error("data plane: {0}")]
    Run(#[from] RunError),
    #[error("data plane: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("data plane: reading nft: {0}")]
    Nft(#[from] nft::ParseError),
    #[error("data plane: reading tc: {0}")]
    Tc(#[from] tc::ParseError),
    #[error("data plane: reading tc: {0}")]
    TcNetlink(#[from] tc::TcNetlinkError),
    #[error("data plane: reading ip: {0}")]
    Ip(#[from] serde_json::Error),
    #[error("data plane: device {0} does not exist")]
    NoDevice(String),
    #[error("data plane: after applying, still different from the plan: {0}")]
    Verify(String),
}

type Result<T> = std::result::Result<T, DataplaneError>;

/// What the kernel holds: the table (`None`: absent) and each planned device (`None`: absent).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub nft: Option<ObservedNft>,
    pub devs: Vec<(String, Option<ObservedDev>)>,
}

/// The changes one apply made; empty when the kernel already matched the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub changes: Vec<String>,
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

pub struct Dataplane {
    runner: Arc<dyn Runner>,
    /// Per-peer changes and quota reads, without a process per change.
    link: Arc<dyn NftLink>,
    /// Reads each device's tc state over netlink; without one, `tc -j` is run.
    tc_read: Option<Arc<dyn tc::TcRead>>,
    /// The last `used` read per quota: restores a deleted quota from the newest count.
    remembered: Mutex<BTreeMap<String, u64>>,
}

fn remember(m: &Mutex<BTreeMap<String, u64>>) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dataplane {
    pub fn new(runner: Arc<dyn Runner>, link: Arc<dyn NftLink>) -> Dataplane {
        Dataplane {
            runner,
            link,
            tc_read: None,
            remembered: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reads tc state through `r` (netlink) instead of running `tc -j`.
    pub fn with_tc_read(self, r: Arc<dyn tc::TcRead>) -> Dataplane {
        Dataplane {
            tc_read: Some(r),
            ..self
        }
    }

    pub fn runner(&self) -> &Arc<dyn Runner> {
        &self.runner
    }

    fn run(&self, argv: &[&str]) -> std::result::Result<String, RunError> {
        self.runner.run(&Cmd::new(argv.iter().copied()))
    }

    /// Forwarding on, and the IFB present and up when shaping is on.
    pub fn prepare(&self, input: &PlanInput) -> Result<()> {
        // Written only when off: under a hardened unit /proc/sys is read-only and the system
        // configuration has turned forwarding on already.
        let mut knobs = vec!["net.ipv4.ip_forward"];
        if input.subnet_v6.is_some() {
            knobs.push("net.ipv6.conf.all.forwarding");
        }
        for knob in knobs {
            if self.run(&["sysctl", "-n", knob])?.trim() != "1" {
                self.run(&["sysctl", "-qw", &format!("{knob}=1")])?;
            }
        }
        if input.shaping
            && self
                .run(&["ip", "link", "show", "dev", &input.ifb])
                .is_err()
        {
            log::info!(target: "dataplane", "creating {}", input.ifb);
            self.run(&[
                "ip",
                "link",
                "add",
                &input.ifb,
                "txqueuelen",
                "1000",
                "type",
                "ifb",
            ])?;
        }
        if input.shaping {
            self.run(&["ip", "link", "set", "dev", &input.ifb, "up"])?;
        }
        Ok(())
    }

    pub fn observe(&self, plan: &Plan) -> Result<Observed> {
        let nft = match self.run(&["nft", "-j", "list", "table", "inet", TABLE]) {
            Ok(out) => Some(nft::parse_table(&out)?),
            Err(e) if nft::is_missing_table(e.stderr()) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(n) = &nft {
            let mut r = remember(&self.remembered);
            for (name, q) in &n.quotas {
                r.insert(name.clone(), q.used);
            }
        }
        let mut devs = Vec::new();
        for d in &plan.tc.devs {
            devs.push((d.dev.clone(), self.observe_dev(&d.dev)?));
        }
        Ok(Observed { nft, devs })
    }

    /// One device's tc state; `None` when the device does not exist.
    pub fn observe_dev(&self, dev: &str) -> Result<Option<ObservedDev>> {
        if let Some(r) = &self.tc_read {
            return Ok(r.observe_dev(dev)?);
        }
        let mut o = ObservedDev::default();
        match self.run(&["tc", "-j", "qdisc", "show", "dev", dev]) {
            Ok(out) => tc::parse_qdiscs(&out, &mut o)?,
            Err(e) if e.stderr().contains("Cannot find device") => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        if o.root_htb {
            tc::parse_classes(
                &self.run(&["tc", "-j", "class", "show", "dev", dev])?,
                &mut o,
            )?;
            let f = self.run(&["tc", "-j", "filter", "show", "dev", dev, "parent", "1:"])?;
            tc::parse_filters(&f, &mut o)?;
        }
        if o.ingress {
            let f = self.run(&["tc", "-j", "filter", "show", "dev", dev, "parent", "ffff:"])?;
            tc::parse_ingress_filters(&f, &mut o)?;
        }
        Ok(Some(o))
    }

    /// The minimal change from `obs` to `plan`: an nft script and tc lines (both may be empty).
    /// A missing device is reported, not planned for.
    pub fn diff(&self, plan: &Plan, obs: &Observed) -> (NftDiff, Vec<String>, Vec<String>) {
        let remembered = remember(&self.remembered).clone();
        let nft = plan::diff_nft(&plan.nft, obs.nft.as_ref(), &remembered);
        let mut lines = Vec::new();
        let mut missing = Vec::new();
        for (d, (_, o)) in plan.tc.devs.iter().zip(&obs.devs) {
            match o {
                Some(o) => lines.extend(plan::diff_tc(d, o)),
                None if d.enabled => missing.push(d.dev.clone()),
                None => {}
            }
        }
        (nft, lines, missing)
    }

    pub fn apply_nft(&self, script: &str) -> Result<()> {
        if !script.is_empty() {
            self.runner
                .run(&Cmd::new(["nft", "-f", "-"]).stdin(script))?;
        }
        Ok(())
    }

    pub fn apply_tc(&self, lines: &[String]) -> Result<()> {
        self.tc_batch(&["tc", "-batch", "-"], lines)
    }

    /// Lines that may fail one by one without stopping the rest (`tc -force`); the error says
    /// that some did.
    pub fn apply_tc_forced(&self, lines: &[String]) -> Result<()> {
        self.tc_batch(&["tc", "-force", "-batch", "-"], lines)
    }

    fn tc_batch(&self, argv: &[&str], lines: &[String]) -> Result<()> {
        if !lines.is_empty() {
            let mut batch = lines.join("\n");
            batch.push('\n');
            self.runner
                .run(&Cmd::new(argv.iter().copied()).stdin(batch))?;
        }
        Ok(())
    }

    /// Observe → plan → apply → verify. Writes nothing when the kernel already matches.
    pub fn apply(&self, input: &PlanInput) -> Result<Applied> {
        let plan = Plan::build(input)?;
        self.prepare(input)?;
        let obs = self.observe(&plan)?;
        let (nft, lines, missing) = self.diff(&plan, &obs);
        let mut applied = Applied::default();
        if !nft.is_empty() {
            self.apply_nft(&nft.script)?;
            applied
                .changes
                .extend(nft.changes.iter().map(|c| format!("nft: {c}")));
        }
        if !lines.is_empty() {
            self.apply_tc(&lines)?;
            applied
                .changes
                .push(format!("tc: {} objects set", lines.len()));
        }
        if let Some(dev) = missing.first() {
            return Err(DataplaneError::NoDevice(dev.clone()));
        }
        if !applied.is_empty() {
            let again = self.observe(&plan)?;
            let (nft, lines, _) = self.diff(&plan, &again);
            if !nft.is_empty() || !lines.is_empty() {
                let mut what = nft.changes;
                what.extend(lines);
                return Err(DataplaneError::Verify(what.join("; ")));
            }
        }
        Ok(applied)
    }

    /// One peer's change in O(1) kernel work; `input` needs the node's settings, not its peers.
    /// If it fails (the kernel was not in the state the change assumes), the error goes back to
    /// the caller, whose full reconcile (`apply` with every peer) repairs the rest.
    pub fn apply_change(&self, input: &PlanInput, change: &PeerChange) -> Result<Applied> {
        self.apply_changes(input, std::slice::from_ref(change))
    }

    /// Many peers' changes as one nftables batch (netlink, split only by the socket's size
    /// limit) and one `tc -batch`: a pass that removes thousands of peers spawns one process.
    pub fn apply_changes(&self, input: &PlanInput, changes: &[PeerChange]) -> Result<Applied> {
        let mut batch = plan::Batch::default();
        for change in changes {
            let current = match change {
                PeerChange::Update { before, after } if before.cap_bytes != after.cap_bytes => {
                    self.peer_quota(after.addr)?
                }
                _ => None,
            };
            batch.extend(plan::peer_batch(input, change, current.as_ref())?);
            if let PeerChange::Remove(p) = change {
                remember(&self.remembered).remove(&quota_name(p.addr));
            }
        }
        self.link.apply(&batch.nft)?;
        self.apply_tc(&batch.tc)?;
        Ok(Applied {
            changes: vec![format!(
                "{} nft operations, {} tc lines",
                batch.nft.len(),
                batch.tc.len()
            )],
        })
    }

    /// Bytes used per peer (rx + tx since creation) as the kernel counts them. After a cap is
    /// reached the kernel also counts the packets it drops; report `min(used, cap)`.
    pub fn usage(&self) -> Result<BTreeMap<Ipv4Addr, u64>> {
        let quotas = self.link.quotas()?;
        let mut r = remember(&self.remembered);
        let mut usage = BTreeMap::new();
        for (name, q) in &quotas {
            r.insert(name.clone(), q.used);
            if let Some(addr) = quota_owner(name) {
                usage.insert(addr, q.used);
            }
        }
        Ok(usage)
    }

    /// One peer's bytes used, reading only its own quota (e.g. final usage before a delete).
    pub fn peer_usage(&self, addr: Ipv4Addr) -> Result<Option<u64>> {
        Ok(self.peer_quota(addr)?.map(|q| q.used))
    }

    fn peer_quota(&self, addr: Ipv4Addr) -> Result<Option<ObservedQuota>> {
        Ok(self.link.quota(&quota_name(addr))?)
    }

    /// Removes the table, the qdiscs and the IFB (`teardown_on_stop = true`). Best effort: every
    /// step runs, the first error is returned.
    pub fn teardown(&self, input: &PlanInput) -> Result<()> {
        let steps: [&[&str]; 5] = [
            &["nft", "delete", "table", "inet", TABLE],
            &["tc", "qdisc", "del", "dev", &input.iface, "root"],
            &["tc", "qdisc", "del", "dev", &input.iface, "ingress"],
            &["tc", "qdisc", "del", "dev", &input.ifb, "root"],
            &["ip", "link", "del", "dev", &input.ifb],
        ];
        let mut first = None;
        for s in steps {
            if let Err(e) = self.run(s) {
                let absent = e.stderr().contains("No such file")
                    || e.stderr().contains("Cannot find device")
                    || e.stderr()
                        .contains("Cannot delete qdisc with handle of zero")
                    || e.stderr().contains("Invalid handle");
                if !absent && first.is_none() {
                    first = Some(e);
                }
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

mod host;
pub use host::{default_route_interface, fenced_networks};

#[cfg(test)]
pub(crate) mod tests;
