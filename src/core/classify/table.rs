//! The flow table: one entry per 5-tuple, idle timeouts, and a hard bound on the entry count.
//! Memory is bounded with it: an entry is fixed-size apart from at most two reassembly buffers
//! of `MAX_REASSEMBLY` bytes, alive only while a detector waits for a split prefix.
//!
//! Time is an argument (microseconds on any monotonic scale), so the same code serves a live
//! capture and a capture file.
use std::collections::HashMap;

use super::Protocol;
use super::engine::{DetectState, Found};
use super::flow::{Endpoint, FlowKey, KeyedHash};
use crate::core::packet::{L4, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifierConfig {
    /// Hard bound on tracked flows; packets of further new flows are counted, not tracked.
    pub max_flows: usize,
    /// Payload packets inspected per direction before a flow is left `unknown`.
    pub budget: u8,
    pub tcp_idle_us: u64,
    pub udp_idle_us: u64,
    /// Secret key of the table's hash, so colliding keys cannot be prepared in advance; the live
    /// capture draws a random one.
    pub hash_seed: u64,
    /// Keep the TLS server name or HTTP host of each flow (off: privacy by default).
    pub keep_hostnames: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            max_flows: 65_536,
            budget: 8,
            tcp_idle_us: 300_000_000,
            udp_idle_us: 120_000_000,
            hash_seed: 0x9e37_79b9_7f4a_7c15,
            keep_hostnames: false,
        }
    }
}

/// A finished (or still open, when drained) flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// Order of first appearance.
    pub id: u64,
    pub l4: L4,
    /// The endpoint that sent the flow's first packet.
    pub a: Endpoint,
    pub b: Endpoint,
    pub protocol: Protocol,
    /// An HTTP flow that is a BitTorrent tracker request.
    pub tracker: bool,
    pub packets_inspected: u32,
    pub packets: u64,
    pub bytes: u64,
    pub first_us: u64,
    pub last_us: u64,
}

/// What one packet did to its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub key: FlowKey,
    /// The packet travels from `a`, the flow's originator.
    pub from_a: bool,
    pub protocol: Protocol,
    pub tracker: bool,
    /// This packet settled the flow's protocol.
    pub newly_classified: bool,
}

#[derive(Debug)]
struct Entry {
    id: u64,
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

/// Sweeps for idle flows at most this often.
const SWEEP_EVERY_US: u64 = 1_000_000;
/// When the table is full, sweeps at most this often.
const FULL_SWEEP_MIN_US: u64 = 10_000;

#[derive(Debug)]
pub struct Classifier {
    cfg: ClassifierConfig,
    flows: HashMap<FlowKey, Entry, KeyedHash>,
    next_id: u64,
    untracked: u64,
    last_sweep_us: u64,
}

impl Classifier {
    pub fn new(cfg: ClassifierConfig) -> Self {
        Classifier {
            flows: HashMap::with_hasher(KeyedHash::new(cfg.hash_seed)),
            cfg,
            next_id: 0,
            untracked: 0,
            last_sweep_us: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Packets of new flows that found the table full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    fn idle_us(&self, l4: L4) -> u64 {
        match l4 {
            L4::Tcp => self.cfg.tcp_idle_us,
            L4::Udp => self.cfg.udp_idle_us,
        }
    }

    /// Accounts one packet to its flow and classifies it. Flows that end on the way (idle) are
    /// handed to `ended`. `None`: a new flow found the table full and is not tracked.
    pub fn observe(
        &mut self,
        now_us: u64,
        p: &Packet<'_>,
        ended: &mut impl FnMut(FlowRecord),
    ) -> Option<Step> {
        if now_us.saturating_sub(self.last_sweep_us) >= SWEEP_EVERY_US {
            self.expire(now_us, ended);
        }
        let (key, src_is_lo) = FlowKey::of(p);
        let idle = self.idle_us(p.l4);
        let (budget, keep) = (self.cfg.budget, self.cfg.keep_hostnames);
        // Fast path, one lookup: a packet of a live flow.
        if let Some(e) = self.flows.get_mut(&key)
            && now_us.saturating_sub(e.last_us) <= idle
            && !(e.closed && p.flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
        {
            return Some(account(e, key, src_is_lo, now_us, p, budget, keep));
        }
        if let Some(e) = self.flows.remove(&key) {
            ended(record(&key, &e));
        }
        if self.flows.len() >= self.cfg.max_flows {
            // A full sweep per new flow would let a flood of new flows stall the capture.
            if now_us.saturating_sub(self.last_sweep_us) >= FULL_SWEEP_MIN_US {
                self.expire(now_us, ended);
            }
            if self.flows.len() >= self.cfg.max_flows {
                self.untracked += 1;
                return None;
            }
        }
        let mut e = Entry {
            id: self.next_id,
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
        self.flows.insert(key, e);
        Some(step)
    }

    /// Ends every flow idle for longer than its timeout.
    pub fn expire(&mut self, now_us: u64, ended: &mut impl FnMut(FlowRecord)) {
        self.last_sweep_us = now_us;
        let (tcp, udp) = (self.cfg.tcp_idle_us, self.cfg.udp_idle_us);
        self.flows.retain(|k, e| {
            let idle = if k.l4 == L4::Tcp { tcp } else { udp };
            let keep = now_us.saturating_sub(e.last_us) <= idle;
            if !keep {
                ended(record(k, e));
            }
            keep
        });
    }

    /// Ends every flow, e.g. at the end of a capture file.
    pub fn drain(&mut self, ended: &mut impl FnMut(FlowRecord)) {
        for (k, e) in self.flows.drain() {
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
