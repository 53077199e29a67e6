//! Properties of the packet path: no input makes it panic, and the flow table stays bounded.

use std::net::{IpAddr, Ipv6Addr};

use common::packets::*;
use proptest::prelude::*;
use waylume::core::classify::link::{self, LinkType};
use waylume::core::classify::{Classifier, ClassifierConfig, Endpoint};
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

/// Valid TCP/UDP packets with arbitrary payloads between a few hosts and ports.
fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        0u8..6,
        0u8..6,
        prop::sample::select(vec![53u16, 80, 443, 6881, 22, 9999]),
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
        .prop_map(|(is_tcp, s, d, port, sport, seq, payload, v6)| {
            let (src, dst) = if v6 {
                (format!("2001:db8::{s}"), format!("2001:db8::{d}"))
            } else {
                (format!("10.0.0.{s}"), format!("10.0.1.{d}"))
            };
            if is_tcp {
                tcp(&src, sport, &dst, port, seq, 0x18, &payload)
            } else {
                udp(&src, sport, &dst, port, &payload)
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1600)) {
        let _ = packet::parse_ip(&bytes);
        for l in LINKS {
            if let Some(ip) = link::ip_payload(l, &bytes) {
                let _ = packet::parse_ip(ip);
            }
        }
    }

    #[test]
    fn truncated_and_mangled_packets_never_panic(p in arb_packet(), cut in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let n = cut.index(p.len() + 1);
        if let Ok(pk) = packet::parse_ip(&p[..n]) {
            prop_assert!(pk.payload.len() <= n);
        }
        let mut m = p.clone();
        let i = at.index(m.len());
        m[i] = byte;
        let mut c = Classifier::new(ClassifierConfig { keep_hostnames: true, ..Default::default() });
        if let Ok(pk) = packet::parse_ip(&m) {
            c.observe(0, &pk, &mut |_| {});
        }
    }

    #[test]
    fn oversized_length_fields_never_panic(p in arb_packet(), len in any::<u16>(), extra in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut m = p;
        if m[0] >> 4 == 4 { m[2..4].copy_from_slice(&len.to_be_bytes()); } else { m[4..6].copy_from_slice(&len.to_be_bytes()); }
        m.extend_from_slice(&extra);
        if let Ok(pk) = packet::parse_ip(&m) {
            prop_assert!(pk.payload.len() <= m.len());
            let mut c = Classifier::new(ClassifierConfig { keep_hostnames: true, ..Default::default() });
            c.observe(0, &pk, &mut |_| {});
        }
    }

    #[test]
    fn flow_table_never_exceeds_its_bounds_and_tracks_every_new_flow(pkts in prop::collection::vec(arb_packet(), 1..120), max in 1usize..16, per_owner in 1usize..16, step in 0u64..200_000_000) {
        let cfg = ClassifierConfig { max_flows: max, max_flows_per_owner: per_owner, budget: 4, tcp_idle_us: 100_000_000, udp_idle_us: 50_000_000, ..Default::default() };
        let mut c = Classifier::new(cfg);
        let mut ended = 0u64;
        for (i, p) in pkts.iter().enumerate() {
            let pk = packet::parse_ip(p).expect("generated packets parse");
            // Owners by the source's last byte: a few peers sharing the table.
            let owner = Some(pk.src).filter(|ip| !ip.is_unspecified());
            let step = c.observe_owned(i as u64 * step, &pk, || owner, &mut |_| ended += 1);
            prop_assert!(c.get(&step.key).is_some(), "the packet's flow is tracked");
            prop_assert!(c.len() <= max);
            prop_assert!(c.flows_of(step.owner) <= per_owner);
        }
        let open = c.len() as u64;
        let mut drained = 0u64;
        c.drain(&mut |r| drained += r.packets);
        prop_assert_eq!(drained > 0, open > 0);
        prop_assert_eq!(c.flows_of(None), 0);
    }

    #[test]
    fn random_streams_of_payloads_never_panic(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 1..30), tcp_flow in any::<bool>()) {
        let mut c = Classifier::new(ClassifierConfig { keep_hostnames: true, ..Default::default() });
        let mut seq = 1u32;
        for (i, pl) in payloads.iter().enumerate() {
            let fwd = i % 3 != 2;
            let (s, d, sp, dp) = if fwd { ("10.0.0.1", "10.0.0.2", 40000, 443) } else { ("10.0.0.2", "10.0.0.1", 443, 40000) };
            let p = if tcp_flow { tcp(s, sp, d, dp, seq, 0x18, pl) } else { udp(s, sp, d, dp, pl) };
            seq = seq.wrapping_add(pl.len() as u32);
            let pk = packet::parse_ip(&p).expect("generated packets parse");
            c.observe(i as u64, &pk, &mut |_| {});
        }
        prop_assert_eq!(c.len(), 1);
    }

    #[test]
    fn ipv6_text_parses_back(segments in prop::array::uniform8(prop::sample::select(vec![0u16, 0, 0, 1, 0xffff, 0x2001]))) {
        let ip = Ipv6Addr::from(segments);
        let text = Endpoint { ip: IpAddr::V6(ip), port: 443 }.to_string();
        let inner = text.trim_start_matches('[').trim_end_matches("]:443");
        prop_assert_eq!(inner.parse::<Ipv6Addr>().ok(), Some(ip), "{}", text);
    }
}

#[test]
fn ipv6_text_matches_inet_ntop() {
    let cases = [
        (
            "3f65:ece9:fe71:6e2a:face:b00c:0:358e",
            "3f65:ece9:fe71:6e2a:face:b00c::358e",
        ),
        ("2600:1900:4160:5999:0:19:0:0", "2600:1900:4160:5999:0:19::"),
        ("fe80::1", "fe80::1"),
        ("::", "::"),
        ("2001:db8::1:0:0:1", "2001:db8::1:0:0:1"),
    ];
    for (input, want) in cases {
        let ip: Ipv6Addr = input.parse().expect("test address");
        let text = Endpoint {
            ip: IpAddr::V6(ip),
            port: 1,
        }
        .to_string();
        assert_eq!(text, format!("[{want}]:1"));
    }
}
