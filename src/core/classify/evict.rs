//! Who gives up a flow when the table or a peer's share of it is full.
//!
//! Each owner (the peer a flow belongs to) has its flows in order of creation. A victim is
//! picked among the owner's oldest few, preferring flows that inspection no longer needs:
//! closed ones, then decided ones (their policy is already in the kernel), then ones that never
//! carried payload, and only then one still being inspected. Looking at a few entries from the
//! front keeps the choice O(1); entries of flows that ended otherwise are dropped lazily.
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::flow::{FlowKey, KeyedHash};

/// How many of an owner's oldest live flows are compared when choosing a victim.
const LOOK_AT: usize = 16;

/// What an entry of the table tells the eviction about itself.
pub(super) trait Evictable {
    fn id(&self) -> u64;
    /// 0 is evicted first: closed, decided, without payload, being inspected.
    fn rank(&self) -> u8;
}

#[derive(Debug, Default)]
struct Ring {
    keys: VecDeque<(FlowKey, u64)>,
    live: usize,
}

#[derive(Debug)]
pub(super) struct Owners {
    rings: HashMap<Option<IpAddr>, Ring, KeyedHash>,
    /// The owner with the most flows, as last seen: the first to give one up when the whole
    /// table is full.
    biggest: Option<Option<IpAddr>>,
}

impl Owners {
    pub(super) fn new(seed: u64) -> Owners {
        Owners {
            rings: HashMap::with_hasher(KeyedHash::new(seed ^ 0x5bd1_e995)),
            biggest: None,
        }
    }

    pub(super) fn count(&self, owner: Option<IpAddr>) -> usize {
        self.rings.get(&owner).map_or(0, |r| r.live)
    }

    pub(super) fn added(&mut self, owner: Option<IpAddr>, key: FlowKey, id: u64) {
        let r = self.rings.entry(owner).or_default();
        r.keys.push_back((key, id));
        r.live += 1;
        let live = r.live;
        if self.biggest.is_none_or(|b| live > self.count(b)) {
            self.biggest = Some(owner);
        }
    }

    /// A flow of `owner` left the table (ended, evicted or forgotten).
    pub(super) fn removed(&mut self, owner: Option<IpAddr>) {
        if let Some(r) = self.rings.get_mut(&owner) {
            r.live = r.live.saturating_sub(1);
            if r.live == 0 {
                self.rings.remove(&owner);
            }
        }
    }

    /// Drops entries of flows that are gone once they outnumber the live ones, so the rings
    /// stay within twice the table's size.
    pub(super) fn compact<E: Evictable>(
        &mut self,
        owner: Option<IpAddr>,
        flows: &HashMap<FlowKey, E, KeyedHash>,
    ) {
        if let Some(r) = self.rings.get_mut(&owner)
            && r.keys.len() > 2 * r.live + LOOK_AT
        {
            r.keys
                .retain(|(k, id)| flows.get(k).is_some_and(|e| e.id() == *id));
        }
    }

    /// The owner to take a flow from when the whole table is full.
    pub(super) fn fullest(&mut self) -> Option<Option<IpAddr>> {
        if self.biggest.is_none_or(|b| self.count(b) == 0) {
            self.biggest = self
                .rings
                .iter()
                .max_by_key(|(_, r)| r.live)
                .map(|(o, _)| *o);
        }
        self.biggest
    }

    /// Picks and forgets a victim among `owner`'s oldest flows; the caller removes it.
    pub(super) fn victim<E: Evictable>(
        &mut self,
        owner: Option<IpAddr>,
        flows: &HashMap<FlowKey, E, KeyedHash>,
    ) -> Option<FlowKey> {
        let r = self.rings.get_mut(&owner)?;
        let mut best: Option<(usize, u8)> = None;
        let mut i = 0;
        let mut seen = 0;
        while i < r.keys.len() && seen < LOOK_AT {
            let (k, id) = r.keys[i];
            match flows.get(&k).filter(|e| e.id() == id) {
                None => {
                    r.keys.remove(i);
                    continue;
                }
                Some(e) => {
                    let rank = e.rank();
                    if best.is_none_or(|(_, b)| rank < b) {
                        best = Some((i, rank));
                    }
                    if rank == 0 {
                        break;
                    }
                }
            }
            seen += 1;
            i += 1;
        }
        let (at, _) = best?;
        r.keys.remove(at).map(|(k, _)| k)
    }

    /// Keys of every flow `owner` still has, for forgetting them all.
    pub(super) fn take(&mut self, owner: Option<IpAddr>) -> Vec<(FlowKey, u64)> {
        if self.biggest == Some(owner) {
            self.biggest = None;
        }
        self.rings
            .remove(&owner)
            .map(|r| r.keys.into())
            .unwrap_or_default()
    }
}
