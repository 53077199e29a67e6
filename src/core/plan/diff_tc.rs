//! Desired vs observed traffic control for one device: the `tc -batch` lines that make the kernel
//! match the plan, in an order that is safe if the batch stops half-way (filters point only at
//! classes that exist). Nothing when they already match.
use std::collections::BTreeMap;

use super::ids::ROOT;
use super::observed::{ObservedDev, ObservedFilter, ObservedPrio};
use super::tc::{Dir, TcDevPlan, class_del_line, class_line, ingress_lines, leaf_line, shape};
use super::u32::{FilterSpec, U32Set, filter_del_line, table_del_line, table_line};

impl ObservedFilter {
    fn matches(&self, f: &FilterSpec, dir: Dir) -> bool {
        let mut keys = self.keys.clone();
        keys.sort_by_key(|k| k.2);
        keys == f.keys(dir) && self.hash == f.hash && self.link == f.link && self.flowid == f.flowid
    }
}

/// A u32 filter handle: `(table, bucket, node)`.
type Handle = (u16, u8, u16);

/// One family's filters as observed, with the root's filters under [`ROOT`] like the plan's,
/// each with its real handle.
fn by_plan_handle(prio: &ObservedPrio) -> BTreeMap<Handle, (&ObservedFilter, Handle)> {
    prio.filters
        .iter()
        .map(|(h, f)| {
            let key = if Some(h.0) == prio.root {
                (ROOT, h.1, h.2)
            } else {
                *h
            };
            (key, (f, *h))
        })
        .collect()
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
    let sets = plan.u32_sets();
    let empty_prio = ObservedPrio::default();
    // Hash tables belong to every u32 priority of the qdisc together and outlive the priority
    // that made them while another one exists: a priority deleted from outside leaves its
    // tables behind, unlisted, and re-adding them fails. So unless the priorities are exactly
    // the plan's (classifier, protocol), every filter goes and all are built again.
    let exact = obs.prios.len() == sets.len()
        && sets.iter().all(|s| {
            obs.prios
                .get(&s.family.prio())
                .is_some_and(|o| o.kind == "u32" && o.protocol == s.family.proto())
        });
    if !exact && !obs.prios.is_empty() {
        out.push(format!("filter del dev {dev} parent 1:"));
    }
    let fams: Vec<(&U32Set, &ObservedPrio)> = sets
        .iter()
        .map(|set| {
            let o = obs.prios.get(&set.family.prio()).filter(|_| exact);
            (set, o.unwrap_or(&empty_prio))
        })
        .collect();

    // Removals first: stray filters, then stray classes, then stray tables.
    for (set, o) in &fams {
        for (h, (_, real)) in by_plan_handle(o) {
            if !set.filters.contains_key(&h) {
                out.push(filter_del_line(dev, set.family, real));
            }
        }
    }
    // A peer's class outlives its peer (see `ops::shape_ops`): only classes that are not ours,
    // hung anywhere but under `1:1`, go.
    for (m, c) in obs.classes.iter().filter(|(m, _)| **m != 1) {
        if !plan.classes.contains_key(m) && c.parent.as_deref() != Some("1:1") {
            out.push(class_del_line(dev, *m));
        }
    }
    for (set, o) in &fams {
        for t in o.tables.keys().filter(|t| !set.tables.contains(t)) {
            out.push(table_del_line(dev, set.family, *t));
        }
    }

    let parent_ok = obs.classes.get(&1).is_some_and(|c| {
        c.rate.matches(u64::from(super::tc::PARENT_KBPS) * 125)
            && c.ceil.matches(u64::from(super::tc::PARENT_KBPS) * 125)
    });
    if !parent_ok {
        out.push(plan.parent_line());
    }
    for (set, o) in &fams {
        for t in &set.tables {
            if o.tables.get(t) != Some(&256) {
                if o.tables.contains_key(t) {
                    out.push(table_del_line(dev, set.family, *t));
                }
                out.push(table_line(dev, set.family, *t));
            }
        }
    }
    for (minor, c) in &plan.classes {
        let bps = u64::from(c.kbps) * 125;
        match obs.classes.get(minor) {
            None => out.push(class_line("add", dev, &c.slot, c.kbps)),
            Some(o) if !(o.rate.matches(bps) && o.ceil.matches(bps)) => {
                out.push(class_line("change", dev, &c.slot, c.kbps))
            }
            Some(_) => {}
        }
        let (_, _, limit) = shape(c.kbps);
        if obs.leaves.get(minor) != Some(&("pfifo".to_string(), Some(limit))) {
            out.push(leaf_line(dev, &c.slot, c.kbps));
        }
    }
    // By handle: links, then peer filters, then the root, so the root leads only to tables
    // that are complete; all of this comes after the classes the filters point at.
    for (set, o) in &fams {
        let seen = by_plan_handle(o);
        for (h, f) in &set.filters {
            if !seen.get(h).is_some_and(|(o, _)| o.matches(f, plan.dir)) {
                out.push(f.line(dev, plan.dir, o.root));
            }
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
