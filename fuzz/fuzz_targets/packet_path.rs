//! The whole packet path on arbitrary bytes: link layer, IP/TCP/UDP parsing, the flow table
//! and every detector, over a sequence of frames so per-flow state (reassembly, hints) is
//! exercised too.
//!
//! Input: one byte choosing the link type, then frames, each a 2-byte big-endian length and
//! that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waylume::core::classify::link::{self, LinkType};
use waylume::core::classify::{Classifier, ClassifierConfig};
use waylume::core::packet;

const LINKS: [LinkType; 9] = [
    LinkType::RawIp,
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Null,
    LinkType::Loop,
    LinkType::CiscoHdlc,
    LinkType::Ppp,
    LinkType::Ppi,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel) % LINKS.len()];
    // A tiny table and budget so eviction and budget exhaustion are reached quickly; hostnames
    // on so their parsers run too.
    let mut c = Classifier::new(ClassifierConfig {
        max_flows: 4,
        budget: 3,
        keep_hostnames: true,
        ..Default::default()
    });
    let mut now = 0u64;
    let mut ended = 0usize;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let frame = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        now += u64::from(sel) * 1_000_000;
        if let Some(ip) = link::ip_payload(link, frame) {
            if let Ok(p) = packet::parse_ip(ip) {
                let _ = c.observe(now, &p, &mut |_| ended += 1);
                assert!(c.len() <= 4);
            }
        }
    }
    c.drain(&mut |_| ended += 1);
});
