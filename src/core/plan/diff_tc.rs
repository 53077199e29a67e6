//! Desired vs observed traffic control for one device: the `tc -batch` lines that make the kernel
//! match the plan, in an order that is safe if the batch stops half-way (filters point only at
//! classes that exist). Nothing when they already match.
use std::collections::BTreeMap;

use super::ids::PRIO;
use super::observed::{ObservedDev, ObservedFilter};
use super::tc::{
    FilterSpec, TcDevPlan, class_del_line, class_line, filter_del_line, ingress_lines, leaf_line,
    shape,
};

impl ObservedFilter {
    fn matches(&self, f: &FilterSpec) -> bool {
        self.value == Some(f.value)
            && self.mask == Some(f.mask)
            && self.off == Some(f.off)
            && self.hash == f.hash
            && self.link == f.link
            && self.flowid == f.flowid
    }
}

/// The lines for one device. `obs` is what the device holds now.
pub fn diff_tc(plan: &TcDevPlan, obs: &ObservedDev) -> Vec<String> {
    let dev = &plan.dev;
    if !plan.enabled {
        let mut v = Vec::new();
        if obs.root_htb {
            v.push(format!("qdisc del dev {dev} root"));
        }
        if obs.ingress && plan.redirect_to.is_some() {
            v.push(format!("qdisc del dev {dev} ingress"));
        }
        return v;
    }
    // A missing or foreign root: replacing it drops every class and filter below, so rebuild
    // the device from an empty observation.
    let real = obs;
    let empty = ObservedDev::default();
    let (obs, mut out) = if obs.root_htb {
        (obs, Vec::new())
    } else {
        (&empty, vec![plan.root_line()])
    };
    let mut filters: BTreeMap<(u16, u8, u16), FilterSpec> = plan
        .link_filters()
        .into_iter()
        .map(|f| (f.handle, f))
        .collect();
    for (slot, _) in plan.classes.values() {
        let f = plan.peer_filter(slot, plan.addr_of(slot.minor));
        filters.insert(f.handle, f);
    }
    let tables = plan.tables();

    // Removals first: stray filters, then stray classes, then stray tables.
    for h in obs.filters.keys().filter(|h| !filters.contains_key(h)) {
        out.push(filter_del_line(dev, *h));
    }
    for m in obs.classes.keys().filter(|m| **m != 1) {
        if !plan.classes.contains_key(m) {
            out.push(class_del_line(dev, *m));
        }
    }
    for t in obs
        .tables
        .keys()
        .filter(|t| **t != 0x800 && !tables.contains(t))
    {
        out.push(format!(
            "filter del dev {dev} parent 1: prio {PRIO} handle {t:x}: protocol ip u32"
        ));
    }

    let parent_ok = obs.classes.get(&1).is_some_and(|c| {
        c.rate.matches(u64::from(super::tc::PARENT_KBPS) * 125)
            && c.ceil.matches(u64::from(super::tc::PARENT_KBPS) * 125)
    });
    if !parent_ok {
        out.push(plan.parent_line());
    }
    for t in &tables {
        if obs.tables.get(t) != Some(&256) {
            if obs.tables.contains_key(t) {
                out.push(format!(
                    "filter del dev {dev} parent 1: prio {PRIO} handle {t:x}: protocol ip u32"
                ));
            }
            out.push(plan.table_line(*t));
        }
    }
    for (minor, (slot, kbps)) in &plan.classes {
        let bps = u64::from(*kbps) * 125;
        match obs.classes.get(minor) {
            None => out.push(class_line("add", dev, slot, *kbps)),
            Some(c) if !(c.rate.matches(bps) && c.ceil.matches(bps)) => {
                out.push(class_line("change", dev, slot, *kbps))
            }
            Some(_) => {}
        }
        let (_, _, limit) = shape(*kbps);
        if obs.leaves.get(minor) != Some(&("pfifo".to_string(), Some(limit))) {
            out.push(leaf_line(dev, slot, *kbps));
        }
    }
    // Links before peer filters so a peer filter's table is reachable once it exists; all of
    // this comes after the classes it points at.
    for (h, f) in &filters {
        if !obs.filters.get(h).is_some_and(|o| o.matches(f)) {
            out.push(f.line(dev, plan.dir));
        }
    }
    if let Some(ifb) = &plan.redirect_to {
        let ok = real.ingress && real.redirects.len() == 1 && real.redirects[0] == *ifb;
        if !ok {
            if real.ingress {
                out.push(format!("qdisc del dev {dev} ingress"));
            }
            out.extend(ingress_lines(dev, ifb));
        }
    }
    out
}
