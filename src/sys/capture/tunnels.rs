//! Tunnels whose flows the policy blocks or throttles, as last handed to the enforcer.
//!
//! A flow is decided once, by the packet that names it, and that packet may have come in the
//! clear while the flow's later packets come inside IP-in-IP (a peer can name a flow openly,
//! then carry it on through a tunnel with the same inner ports, where a 5-tuple rule never
//! sees it). So every tunnelled packet of a flow whose protocol the policy blocks or throttles
//! asks here whether its tunnel still needs handing over: once, then again every [`RENEW`] for
//! as long as the peer keeps sending, so the decision in the kernel does not expire under it.
//! Blocked packets still reach the capture (it taps the interface before forwarding).
use std::collections::HashMap;
use std::net::IpAddr;

use super::FlowDecision;
use crate::core::classify::{Action, Endpoint, Policy, Step};
use crate::core::packet::Packet;

/// How often a tunnel's decision is handed over again while its packets keep coming; well
/// inside the kernel's timeout for it (10 minutes).
const RENEW_US: u64 = 60_000_000;
/// Tunnels remembered at most; past it, the stale ones go, and if none is stale, all do (the
/// worst that costs is one more, idempotent, hand-over per tunnel).
const MAX: usize = 4096;

/// Both ends of a tunnel and its protocol, the lower address first so both directions meet.
type Key = (IpAddr, u8, IpAddr);

#[derive(Default)]
pub(super) struct Tunnels {
    sent: HashMap<Key, u64>,
}

impl Tunnels {
    /// Notes that a decision for the packet's tunnel was just handed over.
    pub(super) fn sent(&mut self, p: &Packet<'_>, now_us: u64) {
        if let Some(k) = key(p) {
            self.insert(k, now_us);
        }
    }

    /// The decision to hand over for `p`'s tunnel, if `p` came inside IP-in-IP, its flow's
    /// protocol is one the policy blocks or throttles, and the tunnel is due.
    pub(super) fn again(
        &mut self,
        p: &Packet<'_>,
        step: &Step,
        policy: &Policy,
        now_us: u64,
    ) -> Option<FlowDecision> {
        let k = key(p)?;
        let action = policy.decide(step.protocol, step.tracker);
        if action == Action::Report {
            return None;
        }
        if self
            .sent
            .get(&k)
            .is_some_and(|t| now_us.saturating_sub(*t) < RENEW_US)
        {
            return None;
        }
        self.insert(k, now_us);
        Some(FlowDecision {
            peer: step.owner?,
            l4: p.l4,
            a: Endpoint {
                ip: p.src,
                port: p.sport,
            },
            b: Endpoint {
                ip: p.dst,
                port: p.dport,
            },
            protocol: step.protocol,
            tracker: step.tracker,
            action,
            hostname: None,
            tunnel: p.tunnel,
        })
    }

    fn insert(&mut self, k: Key, now_us: u64) {
        if self.sent.len() >= MAX && !self.sent.contains_key(&k) {
            self.sent
                .retain(|_, t| now_us.saturating_sub(*t) < RENEW_US);
            if self.sent.len() >= MAX {
                self.sent.clear();
            }
        }
        self.sent.insert(k, now_us);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sent.len()
    }
}

fn key(p: &Packet<'_>) -> Option<Key> {
    let proto = p.tunnel?;
    Some((p.src.min(p.dst), proto, p.src.max(p.dst)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::classify::{Classifier, ClassifierConfig, Protocol};
    use crate::core::packet::parse_ip;

    const PEER: [u8; 4] = [10, 0, 0, 2];
    const DEST: [u8; 4] = [198, 18, 2, 2];

    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, body: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + body.len()).unwrap().to_be_bytes();
        let mut p = vec![0x45, 0, total[0], total[1], 0, 1, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(body);
        p
    }

    /// A TCP segment 40000 → 6881 with `payload`, in the clear or inside IPIP.
    fn segment(payload: &[u8], tunnelled: bool) -> Vec<u8> {
        let mut tcp = vec![0x9c, 0x40, 0x1a, 0xe1, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18];
        tcp.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        let inner = v4(PEER, DEST, 6, &tcp);
        if tunnelled {
            v4(PEER, DEST, 4, &inner)
        } else {
            inner
        }
    }

    fn handshake() -> Vec<u8> {
        let mut h = b"\x13BitTorrent protocol".to_vec();
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&[0x11; 20]);
        h.extend_from_slice(b"-LB0001-abcdefghijkl");
        h
    }

    fn block() -> Policy {
        let mut p = Policy::default();
        p.set(Protocol::Bittorrent, Action::Block);
        p
    }

    /// Named in the clear, carried on inside IPIP with the same inner ports: the tunnel is
    /// handed over at its first packet, not again until due, and again once due.
    #[test]
    fn a_flow_named_in_the_clear_and_carried_on_in_a_tunnel_blocks_the_tunnel() {
        let mut c = Classifier::new(ClassifierConfig::default());
        let owner = || Some(std::net::IpAddr::from(PEER));
        let mut t = Tunnels::default();
        let clear = segment(&handshake(), false);
        let p = parse_ip(&clear).unwrap().as_tunnel_sees_it();
        let step = c.observe_owned(0, &p, owner, &mut |_| {});
        assert!(step.newly_classified && step.protocol == Protocol::Bittorrent);
        assert!(t.again(&p, &step, &block(), 0).is_none(), "no tunnel");

        let wrapped = segment(b"more of the same flow", true);
        let p = parse_ip(&wrapped).unwrap().as_tunnel_sees_it();
        let step = c.observe_owned(1, &p, owner, &mut |_| {});
        assert!(!step.newly_classified, "the same flow, already named");
        let d = t.again(&p, &step, &block(), 1).unwrap();
        assert_eq!((d.action, d.tunnel), (Action::Block, Some(4)));
        assert_eq!((d.a.ip, d.b.ip), (IpAddr::from(PEER), IpAddr::from(DEST)));
        assert!(t.again(&p, &step, &block(), RENEW_US - 1).is_none());
        assert!(t.again(&p, &step, &block(), RENEW_US + 1).is_some());
        // Report-only asks nothing of the kernel.
        assert!(
            t.again(&p, &step, &Policy::default(), 3 * RENEW_US)
                .is_none()
        );
    }

    #[test]
    fn the_memory_stays_bounded() {
        let mut t = Tunnels::default();
        let wrapped = segment(b"x", true);
        let mut p = parse_ip(&wrapped).unwrap().as_tunnel_sees_it();
        for i in 0..(3 * MAX as u32) {
            p.dst = IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i));
            t.sent(&p, u64::from(i));
            assert!(t.len() <= MAX);
        }
    }
}
