//! The flow table's hash under a flood of crafted keys: one peer opens 32,768 UDP flows to IPv6
//! destinations chosen so that a weak hash puts them in a few buckets, against as many random
//! destinations. Prints the cost per new flow of each and their ratio (1.0 is ideal).
#![allow(clippy::print_stdout)]
use std::net::Ipv6Addr;
use std::time::Instant;

use waylume::core::classify::{Classifier, ClassifierConfig};
use waylume::core::packet;

use common::packets as support;

const FLOWS: u32 = 32_768;

/// Destinations that differ only in the top 15 bits of their interface identifier: a
/// multiply-based hash without a secret key leaves the low bits of these keys equal.
fn crafted(k: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, (k << 1) as u16, 0, 0, 1)
}

/// Distinct destinations spread over the whole address (a multiplicative step).
fn spread(k: u32) -> Ipv6Addr {
    let x = u128::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    Ipv6Addr::from(0x2001_0db8u128 << 96 | x >> 32)
}

fn packets(dst: impl Fn(u32) -> Ipv6Addr) -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|k| {
            let mut l4 = support::udp_header(40000, 443, 8);
            l4.extend_from_slice(&[0x5a; 8]);
            support::ip(
                "fd00::2".parse().expect("address"),
                dst(k).into(),
                support::UDP,
                &l4,
            )
        })
        .collect()
}

/// Nanoseconds per new flow, best of three.
fn per_flow(pkts: &[Vec<u8>]) -> f64 {
    (0..3)
        .map(|_| {
            // Every flow stays in the table: this measures the hash, not the per-peer share.
            let mut c = Classifier::new(ClassifierConfig {
                hash_seed: rand::random(),
                max_flows_per_owner: 65_536,
                ..ClassifierConfig::default()
            });
            let t = Instant::now();
            for (i, p) in pkts.iter().enumerate() {
                let p = packet::parse_ip(p).expect("bench packet parses");
                c.observe(i as u64, &p, &mut |_| {});
            }
            assert_eq!(c.len(), pkts.len());
            t.elapsed().as_nanos() as f64 / pkts.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let crafted_ns = per_flow(&packets(crafted));
    let spread_ns = per_flow(&packets(spread));
    println!(
        "flow table, {FLOWS} new IPv6 flows from one peer: crafted {:.0} ns/flow, spread {:.0} ns/flow, ratio {:.2}",
        crafted_ns,
        spread_ns,
        crafted_ns / spread_ns
    );
}
