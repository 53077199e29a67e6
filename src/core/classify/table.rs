//! The flow table: one entry per 5-tuple, idle timeouts, and a hard bound on the entry count.
//! Memory is bounded with it: an entry is fixed-size apart from at most two reassembly buffers
//! of `MAX_REASSEMBLY` bytes, alive only while a detector waits for a split prefix.
//!
//! A full table never turns inspection off: every new flow is tracked and inspected, and an
//! older flow makes room for it (see `evict`). Each owner (the peer a flow belongs to) may hold
//! at most `max_flows_per_owner` flows, so one peer's flood evicts its own flows, not others'.
//!
//! Time is an argument (microseconds on any monotonic scale), so the same code serves a live
//! capture and a capture file.
use std::collections::HashMap;
use std::net::IpAddr;

use super::Protocol;
use super::engine::{DetectState, Found};
use super::evict::{Evictable, Owners};
use super::flow::{FlowKey, KeyedHash};
use super::record::{ClassifierConfig, FlowRecord, Step};
use crate::core::packet::{L4, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[derive(Debug)]
struct Entry {
    id: u64,
    owner: Option<IpAddr>,
    a_is_lo: bool,
    decided: bool,
    found: Found,
    packets: u64,
    bytes: u64,
    first_us: u64,
    last_us: u64,
    /// A FIN or RST was seen: a fresh SYN on the same 5-tuple starts a new connection.
    closed: bool,
    detect: DetectState,
}

/// Sweeps for idle flows at most this often. A packet finds its flow expired by itself, so the
/// sweep only returns memory and reports ended flows; a few seconds late is fine.
const SWEEP_EVERY_US: u64 = 5_000_000;
/// When the table is full, sweeps at most this often.
const FULL_SWEEP_MIN_US: u64 = 10_000;

impl Evictable for Entry {
    fn id(&self) -> u64 {
        self.id
    }
    fn rank(&self) -> u8 {
        if self.closed {
            0
        } else if self.decided {
            1
        } else if self.detect.packets_inspected() == 0 {
            2
        } else {
            3
        }
    }
}

#[derive(Debug)]
pub struct Classifier {
    cfg: ClassifierConfig,
    flows: HashMap<FlowKey, Entry, KeyedHash>,
    owners: Owners,
    next_id: u64,
    evicted: u64,
    last_sweep_us: u64,
}

impl Classifier {
    pub fn new(cfg: ClassifierConfig) -> Self {
        Classifier {
            flows: HashMap::with_hasher(KeyedHash::new(cfg.hash_seed)),
            owners: Owners::new(cfg.hash_seed),
            cfg,
            next_id: 0,
            evicted: 0,
            last_sweep_us: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Flows that made room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Flows `owner` holds now.
    pub fn flows_of(&self, owner: Option<IpAddr>) -> usize {
        self.owners.count(owner)
    }

    /// Accounts one packet to its flow and classifies it, for offline use: flows have no owner.
    pub fn observe(
        &mut self,
        now_us: u64,
        p: &Packet<'_>,
        ended: &mut impl FnMut(FlowRecord),
    ) -> Step {
        self.observe_owned(now_us, p, || None, ended)
    }

    /// Accounts one packet to its flow and classifies it. `owner` names the peer of a flow that
    /// begins with this packet. Flows that end on the way (idle) are handed to `ended`; flows
    /// evicted to make room are not.
    pub fn observe_owned(
        &mut self,
        now_us: u64,
        p: &Packet<'_>,
        owner: impl FnOnce() -> Option<IpAddr>,
        ended: &mut impl FnMut(FlowRecord),
    ) -> Step {
        if now_us.saturating_sub(self.last_sweep_us) >= SWEEP_EVERY_US {
            self.expire(now_us, ended);
        }
        let (key, src_is_lo) = FlowKey::of(p);
        let (budget, keep) = (self.cfg.budget, self.cfg.keep_hostnames);
        // Fast path, one lookup: a packet of a live flow.
        if let Some(e) = self.flows.get_mut(&key)
            && now_us.saturating_sub(e.last_us) <= idle_us(&self.cfg, e, p.l4)
            && !(e.closed && p.flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
        {
            return account(e, key, src_is_lo, now_us, p, budget, keep);
        }
        if let Some(e) = self.flows.remove(&key) {
            self.owners.removed(e.owner);
            ended(record(&key, &e));
        }
        let owner = owner();
        self.make_room(now_us, owner, ended);
        let mut e = Entry {
            id: self.next_id,
            owner,
            a_is_lo: src_is_lo,
            decided: false,
            found: Found {
                protocol: Protocol::Unknown,
                tracker: false,
            },
            packets: 0,
            bytes: 0,
            first_us: now_us,
            last_us: now_us,
            closed: false,
            detect: DetectState::default(),
        };
        self.next_id += 1;
        let step = account(&mut e, key, src_is_lo, now_us, p, budget, keep);
        self.owners.added(owner, key, e.id);
        self.owners.compact(owner, &self.flows);
        self.flows.insert(key, e);
        step
    }

    /// Frees a place for a new flow of `owner`: first within the owner's share, then in the
    /// table, from the owner with the most flows.
    fn make_room(
        &mut self,
        now_us: u64,
        owner: Option<IpAddr>,
        ended: &mut impl FnMut(FlowRecord),
    ) {
        if self.owners.count(owner) >= self.cfg.max_flows_per_owner {
            self.evict_from(owner);
        }
        if self.flows.len() >= self.cfg.max_flows {
            // A full sweep per new flow would let a flood of new flows stall the capture.
            if now_us.saturating_sub(self.last_sweep_us) >= FULL_SWEEP_MIN_US {
                self.expire(now_us, ended);
            }
            while self.flows.len() >= self.cfg.max_flows {
                let from = self.owners.fullest().unwrap_or(owner);
                if !self.evict_from(from) {
                    break;
                }
            }
        }
    }

    fn evict_from(&mut self, owner: Option<IpAddr>) -> bool {
        let Some(key) = self.owners.victim(owner, &self.flows) else {
            return false;
        };
        if let Some(e) = self.flows.remove(&key) {
            self.owners.removed(e.owner);
            self.evicted += 1;
        }
        true
    }

    /// Forgets every flow of `owner` without reporting them: the peer is gone.
    pub fn forget_owner(&mut self, owner: IpAddr) {
        for (k, id) in self.owners.take(Some(owner)) {
            if self.flows.get(&k).is_some_and(|e| e.id == id) {
                self.flows.remove(&k);
            }
        }
    }

    /// Ends every flow idle for longer than its timeout.
    pub fn expire(&mut self, now_us: u64, ended: &mut impl FnMut(FlowRecord)) {
        self.last_sweep_us = now_us;
        let cfg = self.cfg;
        let owners = &mut self.owners;
        self.flows.retain(|k, e| {
            let keep = now_us.saturating_sub(e.last_us) <= idle_us(&cfg, e, k.l4);
            if !keep {
                owners.removed(e.owner);
                ended(record(k, e));
            }
            keep
        });
    }

    /// Ends every flow, e.g. at the end of a capture file.
    pub fn drain(&mut self, ended: &mut impl FnMut(FlowRecord)) {
        for (k, e) in self.flows.drain() {
            self.owners.removed(e.owner);
            ended(record(&k, &e));
        }
    }

    /// The TLS server name or HTTP host of a flow, when the configuration keeps them.
    pub fn hostname(&self, key: &FlowKey) -> Option<&str> {
        self.flows.get(key).and_then(|e| e.detect.hostname())
    }

    /// The current state of one flow.
    pub fn get(&self, key: &FlowKey) -> Option<FlowRecord> {
        self.flows.get(key).map(|e| record(key, e))
    }
}

fn idle_us(cfg: &ClassifierConfig, e: &Entry, l4: L4) -> u64 {
    match l4 {
        L4::Tcp if e.closed => cfg.closed_idle_us,
        L4::Tcp => cfg.tcp_idle_us,
        L4::Udp => cfg.udp_idle_us,
    }
}

/// Counts a packet to its flow and runs detection while the flow is undecided.
fn account(
    e: &mut Entry,
    key: FlowKey,
    src_is_lo: bool,
    now_us: u64,
    p: &Packet<'_>,
    budget: u8,
    keep: bool,
) -> Step {
    e.packets += 1;
    e.bytes += p.ip_len as u64;
    e.last_us = e.last_us.max(now_us);
    e.closed |= p.l4 == L4::Tcp && p.flags & (TCP_FIN | TCP_RST) != 0;
    let from_a = src_is_lo == e.a_is_lo;
    let mut newly = false;
    if !e.decided {
        if let Some(found) = e
            .detect
            .inspect(now_us, p, usize::from(!from_a), budget, keep)
        {
            e.found = found;
            e.decided = true;
            newly = true;
        } else if e.detect.exhausted(budget) {
            e.decided = true;
        }
    }
    Step {
        key,
        owner: e.owner,
        from_a,
        protocol: e.found.protocol,
        tracker: e.found.tracker,
        newly_classified: newly,
    }
}

fn record(k: &FlowKey, e: &Entry) -> FlowRecord {
    let (a, b) = if e.a_is_lo {
        (k.lo, k.hi)
    } else {
        (k.hi, k.lo)
    };
    FlowRecord {
        id: e.id,
        owner: e.owner,
        l4: k.l4,
        a,
        b,
        protocol: e.found.protocol,
        tracker: e.found.tracker,
        packets_inspected: e.detect.packets_inspected(),
        packets: e.packets,
        bytes: e.bytes,
        first_us: e.first_us,
        last_us: e.last_us,
    }
}
