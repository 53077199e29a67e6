//! Desired vs observed nftables table: one `nft -f` script (one transaction) that makes the table
//! match the plan, or an empty script when it already does. Per-peer objects are diffed one by
//! one; the few fixed chains are rewritten whole when any rule differs.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::ids::TABLE;
use super::nft::{
    ChainSpec, MAP4, MAP6, NftPlan, QuotaSpec, map_elems, quota_line, render_table, set_line,
};
use super::observed::{ObservedChain, ObservedNft};

/// The script and a short account of what it repairs (for the log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftDiff {
    pub script: String,
    pub changes: Vec<String>,
}

impl NftDiff {
    pub fn is_empty(&self) -> bool {
        self.script.is_empty()
    }
}

/// `remembered`: the last `used` read from the kernel per quota, so a quota re-created after
/// someone deleted it resumes from there rather than from the (older) stored value.
pub fn diff_nft(
    plan: &NftPlan,
    obs: Option<&ObservedNft>,
    remembered: &BTreeMap<String, u64>,
) -> NftDiff {
    let mut plan = plan.clone();
    for (name, q) in plan.quotas.iter_mut() {
        let kernel = obs.and_then(|o| o.quotas.get(name)).map(|q| q.used);
        let seen = remembered.get(name).copied();
        q.used = q.used.max(kernel.unwrap_or(0)).max(seen.unwrap_or(0));
    }
    let Some(obs) = obs else {
        return NftDiff {
            script: render_table(&plan, false),
            changes: vec!["table created".into()],
        };
    };
    if !structure_ok(&plan, obs) {
        return NftDiff {
            script: render_table(&plan, true),
            changes: vec!["table rebuilt".into()],
        };
    }
    let mut d = NftDiff::default();
    peers(&plan, obs, &mut d);
    for set in &plan.sets {
        match obs.sets.get(set.name) {
            // Compared as sets: nft lists the elements in its own order.
            Some((_, have))
                if have.len() == set.elems.len() && set.elems.iter().all(|e| have.contains(e)) =>
            {
                continue;
            }
            Some(_) => line(&mut d, format!("flush set inet {TABLE} {}", set.name)),
            None => line(&mut d, set_line(set)),
        }
        if !set.elems.is_empty() {
            let e = set.elems.join(", ");
            line(
                &mut d,
                format!("add element inet {TABLE} {} {{ {e} }}", set.name),
            );
        }
        d.changes.push(format!("set {} rewritten", set.name));
    }
    for c in &plan.chains {
        chain(c, obs.chains.get(c.name), &mut d);
    }
    for name in obs.chains.keys() {
        if !plan.chains.iter().any(|c| c.name == name) {
            line(&mut d, format!("flush chain inet {TABLE} {name}"));
            line(&mut d, format!("delete chain inet {TABLE} {name}"));
            d.changes.push(format!("stray chain {name} removed"));
        }
    }
    d
}

/// Sets and maps exist with the right types, or are missing; anything else (a same-named
/// object of another type) needs the table rebuilt.
fn structure_ok(plan: &NftPlan, obs: &ObservedNft) -> bool {
    let maps_ok = [MAP4, MAP6].iter().all(|m| !obs.other_maps.contains(*m))
        && obs.maps4.contains_key(MAP4)
        && obs.maps6.contains_key(MAP6)
        && !obs.maps4.contains_key(MAP6)
        && !obs.maps6.contains_key(MAP4);
    let sets_ok = plan
        .sets
        .iter()
        .all(|s| obs.sets.get(s.name).is_none_or(|(ty, _)| ty == s.ty));
    maps_ok && sets_ok
}

fn line(d: &mut NftDiff, l: String) {
    let _ = writeln!(d.script, "{l}");
}

fn peers(plan: &NftPlan, obs: &ObservedNft, d: &mut NftDiff) {
    let empty4 = BTreeMap::new();
    let empty6 = BTreeMap::new();
    let have4 = obs.maps4.get(MAP4).unwrap_or(&empty4);
    let have6 = obs.maps6.get(MAP6).unwrap_or(&empty6);
    // A depleted quota whose limit changes is re-created rather than updated: the kernel keeps
    // counting the packets it drops, and those must not eat into the new allowance.
    let recreate: BTreeSet<&String> = plan
        .quotas
        .iter()
        .filter(|(n, q)| {
            obs.quotas
                .get(*n)
                .is_some_and(|o| (o.bytes != q.limit || o.inv) && o.used >= o.bytes)
        })
        .map(|(n, _)| n)
        .collect();
    let keep =
        |want: Option<&String>, have: &String| want == Some(have) && !recreate.contains(have);
    let stale4: Vec<_> = have4
        .iter()
        .filter(|(k, v)| !keep(plan.peers4.get(k), v))
        .map(|(k, _)| k.to_string())
        .collect();
    let stale6: Vec<_> = have6
        .iter()
        .filter(|(k, v)| !keep(plan.peers6.get(k), v))
        .map(|(k, _)| k.to_string())
        .collect();
    for (map, stale) in [(MAP4, &stale4), (MAP6, &stale6)] {
        if !stale.is_empty() {
            let keys = stale.join(", ");
            line(d, format!("delete element inet {TABLE} {map} {{ {keys} }}"));
            d.changes
                .push(format!("{} {map} entries removed", stale.len()));
        }
    }
    for name in obs.quotas.keys().filter(|n| !plan.quotas.contains_key(*n)) {
        line(d, format!("delete quota inet {TABLE} {name}"));
        d.changes.push(format!("stray quota {name} removed"));
    }
    for (name, q) in &plan.quotas {
        match obs.quotas.get(name) {
            None => {
                line(d, quota_line(name, q));
                d.changes.push(format!("quota {name} created"));
            }
            Some(o) if recreate.contains(name) => {
                line(d, format!("delete quota inet {TABLE} {name}"));
                line(d, quota_line(name, &QuotaSpec { used: o.used, ..*q }));
                d.changes.push(format!("quota {name} limit set"));
            }
            Some(o) if o.bytes != q.limit || o.inv => {
                // Changes the limit in place; the kernel keeps the bytes used.
                line(d, quota_line(name, &QuotaSpec { used: o.used, ..*q }));
                d.changes.push(format!("quota {name} limit set"));
            }
            Some(_) => {}
        }
    }
    let add4: BTreeMap<_, _> = plan
        .peers4
        .iter()
        .filter(|(k, v)| have4.get(k) != Some(v) || recreate.contains(v))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let add6: BTreeMap<_, _> = plan
        .peers6
        .iter()
        .filter(|(k, v)| have6.get(k) != Some(v) || recreate.contains(v))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    if let Some(e) = map_elems(&add4) {
        line(d, format!("add element inet {TABLE} {MAP4} {e}"));
        d.changes
            .push(format!("{} {MAP4} entries added", add4.len()));
    }
    if let Some(e) = map_elems(&add6) {
        line(d, format!("add element inet {TABLE} {MAP6} {e}"));
        d.changes
            .push(format!("{} {MAP6} entries added", add6.len()));
    }
}

fn chain(c: &ChainSpec, obs: Option<&ObservedChain>, d: &mut NftDiff) {
    let spec_ok = obs.is_some_and(|o| {
        o.kind.as_deref() == Some(c.kind)
            && o.hook.as_deref() == Some(c.hook)
            && o.prio == Some(c.prio)
            && o.policy.as_deref() == Some("accept")
    });
    let rules_ok = obs.is_some_and(|o| {
        o.comments
            .iter()
            .map(|x| x.as_deref())
            .eq(c.rules.iter().map(|r| Some(r.comment.as_str())))
    });
    if spec_ok && rules_ok {
        return;
    }
    if obs.is_some() {
        line(d, format!("flush chain inet {TABLE} {}", c.name));
    }
    if obs.is_some() && !spec_ok {
        line(d, format!("delete chain inet {TABLE} {}", c.name));
    }
    if !spec_ok {
        line(d, c.add_line());
    }
    for r in c.rule_lines() {
        line(d, r);
    }
    d.changes.push(format!("chain {} rewritten", c.name));
}
