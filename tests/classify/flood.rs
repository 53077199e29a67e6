//! Hostile peers against the flow table: floods of new flows, and addresses written into
//! encapsulated headers. The table must stay bounded, keep inspecting every new flow, and
//! attribute flows only by the addresses the tunnel carried.
use std::net::{IpAddr, Ipv4Addr};

use common::packets::*;
use waylume::core::classify::{Classifier, ClassifierConfig, FlowKey, Protocol};
use waylume::core::packet::{self, TCP_SYN};

const FLOODER: &str = "10.0.0.3";
const VICTIM: &str = "10.0.0.2";
const PEERS: [&str; 2] = [FLOODER, VICTIM];

/// The owner of a new flow as the live capture finds it: the peer at either end.
fn owner(p: &packet::Packet<'_>) -> Option<IpAddr> {
    [p.src, p.dst]
        .into_iter()
        .find(|ip| PEERS.iter().any(|peer| addr(peer) == *ip))
}

fn feed(c: &mut Classifier, t: u64, raw: &[u8]) -> waylume::core::classify::Step {
    let p = packet::parse_ip(raw)
        .expect("test packet parses")
        .as_tunnel_sees_it();
    c.observe_owned(t, &p, || owner(&p), &mut |_| {})
}

/// One UDP datagram with a payload to a new destination each time.
fn flood_packet(i: u32) -> Vec<u8> {
    let dst = Ipv4Addr::from(0xc633_0000 | (i & 0xffff)).to_string();
    udp(
        FLOODER,
        1024 + (i >> 16) as u16,
        &dst,
        9000,
        &i.to_be_bytes(),
    )
}

#[test]
fn a_flood_of_new_flows_evicts_the_flooders_own_and_the_victims_bittorrent_is_found() {
    let cfg = ClassifierConfig::default();
    let mut c = Classifier::new(cfg);
    let syn = tcp(VICTIM, 40000, "192.0.2.9", 6881, 1, TCP_SYN, b"");
    let (victim_key, _) = FlowKey::of(&packet::parse_ip(&syn).unwrap());
    feed(&mut c, 0, &syn);
    let mut t = 1;
    for i in 0..100_000u32 {
        feed(&mut c, t, &flood_packet(i));
        t += 1;
        // The victim's handshake comes in the middle of the flood, on its open flow.
        if i == 50_000 {
            let hs = tcp(VICTIM, 40000, "192.0.2.9", 6881, 2, 0x18, &bt_handshake());
            let step = feed(&mut c, t, &hs);
            assert!(step.newly_classified);
        }
    }
    let victim = c
        .get(&victim_key)
        .expect("the victim's flow is still tracked");
    assert_eq!(victim.protocol, Protocol::Bittorrent);
    assert_eq!(c.flows_of(Some(addr(FLOODER))), cfg.max_flows_per_owner);
    assert_eq!(c.evicted(), 100_000 - cfg.max_flows_per_owner as u64);

    // A flow the victim opens after the flood is inspected too: nothing is left untracked.
    let late = tcp(VICTIM, 40001, "192.0.2.10", 6881, 2, 0x18, &bt_handshake());
    assert_eq!(feed(&mut c, t + 1, &late).protocol, Protocol::Bittorrent);
}

#[test]
fn a_full_table_takes_room_from_the_peer_with_most_flows() {
    let cfg = ClassifierConfig {
        max_flows: 1_000,
        max_flows_per_owner: 800,
        ..ClassifierConfig::default()
    };
    let mut c = Classifier::new(cfg);
    // Flows with no known peer fill the rest of the table.
    for i in 0..400u32 {
        let dst = Ipv4Addr::from(0xc633_0000 | i).to_string();
        feed(&mut c, u64::from(i), &udp("10.9.9.9", 5000, &dst, 53, b"x"));
    }
    for i in 0..2_000u32 {
        feed(&mut c, 1_000 + u64::from(i), &flood_packet(i));
    }
    // Full at 1,000: from then on the flooder, the fullest owner, gives up its own flows.
    assert_eq!(c.len(), 1_000);
    assert_eq!(c.flows_of(Some(addr(FLOODER))), 600);
    assert_eq!(c.flows_of(None), 400);
    let hs = tcp(VICTIM, 40000, "192.0.2.9", 6881, 2, 0x18, &bt_handshake());
    let step = feed(&mut c, 5_000, &hs);
    assert_eq!(step.protocol, Protocol::Bittorrent);
    assert_eq!(c.len(), 1_000);
    assert_eq!(c.flows_of(Some(addr(FLOODER))), 599);
    assert_eq!(c.flows_of(None), 400);
}

#[test]
fn closed_and_decided_flows_are_evicted_before_flows_being_inspected() {
    let cfg = ClassifierConfig {
        max_flows_per_owner: 3,
        ..ClassifierConfig::default()
    };
    let mut c = Classifier::new(cfg);
    let inspecting = tcp(VICTIM, 1, "192.0.2.9", 9000, 1, 0x18, b"\x00\x01partial");
    let decided = tcp(
        VICTIM,
        2,
        "192.0.2.9",
        443,
        1,
        0x18,
        &client_hello("a.example", 10),
    );
    let closed = tcp(VICTIM, 3, "192.0.2.9", 80, 1, 0x11, b"");
    let keys: Vec<FlowKey> = [&inspecting, &decided, &closed]
        .iter()
        .map(|raw| FlowKey::of(&packet::parse_ip(raw).unwrap()).0)
        .collect();
    for (t, raw) in [&inspecting, &decided, &closed].into_iter().enumerate() {
        feed(&mut c, t as u64, raw);
    }
    feed(
        &mut c,
        10,
        &tcp(VICTIM, 4, "192.0.2.9", 22, 1, TCP_SYN, b""),
    );
    assert!(c.get(&keys[2]).is_none(), "the closed flow goes first");
    feed(
        &mut c,
        11,
        &tcp(VICTIM, 5, "192.0.2.9", 22, 1, TCP_SYN, b""),
    );
    assert!(c.get(&keys[1]).is_none(), "then the decided one");
    assert!(c.get(&keys[0]).is_some(), "the flow being inspected stays");
}

/// `IP(src=FLOODER) / IP(src=VICTIM) / TCP / BitTorrent handshake`, and the same with IPv6
/// inside IPv4: the flow is the flooder's, whatever the inner header says.
#[test]
fn encapsulated_headers_never_name_another_peer() {
    let inner4 = tcp(VICTIM, 40000, "192.0.2.9", 6881, 1, 0x18, &bt_handshake());
    let inner6 = tcp(
        "fd00::2",
        40000,
        "2001:db8::9",
        6881,
        1,
        0x18,
        &bt_handshake(),
    );
    for (inner, proto) in [(inner4, 4u8), (inner6, 41)] {
        let outer = ip(addr(FLOODER), addr("192.0.2.9"), proto, &inner);
        let parsed = packet::parse_ip(&outer).unwrap();
        assert_eq!(parsed.outer, Some((addr(FLOODER), addr("192.0.2.9"))));
        let mut c = Classifier::new(ClassifierConfig::default());
        let step = feed(&mut c, 0, &outer);
        assert_eq!(step.owner, Some(addr(FLOODER)));
        assert_eq!(step.protocol, Protocol::Bittorrent);
        let r = c.get(&step.key).unwrap();
        assert_eq!((r.a.ip, r.b.ip), (addr(FLOODER), addr("192.0.2.9")));
        assert_eq!(c.flows_of(Some(addr(VICTIM))), 0);
    }
}

/// The outer protocol (4 or 41) travels with the packet once the outer addresses replace the
/// inner ones: it is what the kernel sees, so what an enforced decision must match. 4in6 and
/// 6in6 keep the outermost header's protocol; a two-level tunnel keeps the outermost one.
#[test]
fn the_outer_protocol_survives_decapsulation() {
    let inner4 = tcp(VICTIM, 40000, "192.0.2.9", 6881, 1, 0x18, &bt_handshake());
    let inner6 = tcp(
        "fd00::2",
        40000,
        "2001:db8::9",
        6881,
        1,
        0x18,
        &bt_handshake(),
    );
    let (v4, v6) = (addr(FLOODER), addr("fd00::3"));
    let cases = [
        (v4, addr("192.0.2.9"), 4u8, &inner4),
        (v4, addr("192.0.2.9"), 41, &inner6),
        (v6, addr("2001:db8::9"), 4, &inner4),
        (v6, addr("2001:db8::9"), 41, &inner6),
    ];
    for (src, dst, proto, inner) in cases {
        let outer = ip(src, dst, proto, inner);
        let p = packet::parse_ip(&outer).unwrap().as_tunnel_sees_it();
        assert_eq!((p.src, p.dst, p.tunnel), (src, dst, Some(proto)));
        assert_eq!((p.sport, p.dport), (40000, 6881));
    }
    let twice = ip(
        v4,
        addr("192.0.2.9"),
        41,
        &ip(v6, addr("2001:db8::9"), 4, &inner4),
    );
    let p = packet::parse_ip(&twice).unwrap().as_tunnel_sees_it();
    assert_eq!((p.src, p.tunnel), (v4, Some(41)));
    let plain = packet::parse_ip(&inner4).unwrap().as_tunnel_sees_it();
    assert_eq!(plain.tunnel, None);
}

/// Random inner sources create no state per address: one peer, one flow per inner tuple at most.
#[test]
fn random_inner_sources_grow_nothing_but_the_senders_own_share() {
    let cfg = ClassifierConfig {
        max_flows_per_owner: 64,
        ..ClassifierConfig::default()
    };
    let mut c = Classifier::new(cfg);
    for i in 0..10_000u32 {
        let src = Ipv4Addr::from(0x0a00_0000 | i).to_string();
        let inner = udp(&src, 5000, "192.0.2.9", 6881, b"d1:ad2:id20:");
        let outer = ip(addr(FLOODER), addr("192.0.2.9"), 4, &inner);
        feed(&mut c, u64::from(i), &outer);
    }
    assert_eq!(c.len(), 1);
    assert_eq!(c.flows_of(Some(addr(FLOODER))), 1);
}

#[test]
fn a_removed_peers_flows_are_forgotten() {
    let mut c = Classifier::new(ClassifierConfig::default());
    for i in 0..100 {
        feed(&mut c, i, &flood_packet(i as u32));
    }
    feed(
        &mut c,
        200,
        &tcp(VICTIM, 1, "192.0.2.9", 80, 1, TCP_SYN, b""),
    );
    c.forget_owner(addr(FLOODER));
    assert_eq!(c.flows_of(Some(addr(FLOODER))), 0);
    assert_eq!(c.len(), 1);
}
