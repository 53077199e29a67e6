//! No BitTorrent where there is none: flows of other UDP protocols, built from their own framing
//! with realistic timing, must never be labelled BitTorrent (a false label can get a user
//! blocked). uTP, which has no magic bytes, is the detector at risk (see `utp.rs` for real uTP).
use common::packets::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use waylume::core::classify::{Classifier, ClassifierConfig, FlowRecord, Protocol};
use waylume::core::packet;

const C: &str = "10.0.0.2";
const S: &str = "192.0.2.9";
pub(crate) const MS: u64 = 1000;
/// Capture time of the first packet: far from zero, as a real clock is.
pub(crate) const T0: u64 = 1_700_000_000_000_000;

/// One datagram of a flow: capture time (µs), from the client, payload.
pub(crate) type Dgram = (u64, bool, Vec<u8>);

/// Classifies one flow's datagrams and returns its record.
pub(crate) fn classify(sport: u16, dport: u16, flow: &[Dgram]) -> FlowRecord {
    let mut c = Classifier::new(ClassifierConfig::default());
    for (t, from_client, payload) in flow {
        let raw = if *from_client {
            udp(C, sport, S, dport, payload)
        } else {
            udp(S, dport, C, sport, payload)
        };
        let p = packet::parse_ip(&raw).expect("test packet parses");
        c.observe(*t, &p, &mut |_| {});
    }
    let mut out = Vec::new();
    c.drain(&mut |r| out.push(r));
    assert_eq!(out.len(), 1, "one flow");
    out[0]
}

pub(crate) fn bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

const RAKNET_MAGIC: [u8; 16] = [
    0x00, 0xff, 0xff, 0x00, 0xfe, 0xfe, 0xfe, 0xfe, 0xfd, 0xfd, 0xfd, 0xfd, 0x12, 0x34, 0x56, 0x78,
];

/// Minecraft Bedrock's server list: unconnected pings (0x01, time in ms, magic, client GUID)
/// about a second apart, answered by pongs (0x1c) carrying the server's MOTD.
fn raknet(rng: &mut StdRng, epoch_ms: bool) -> Vec<Dgram> {
    let guid: u64 = rng.random();
    let mut clock: u64 = if epoch_ms {
        T0 / 1000
    } else {
        rng.random_range(0..100_000)
    };
    let mut t = T0;
    let mut out = Vec::new();
    for _ in 0..rng.random_range(3..8) {
        let mut ping = vec![0x01];
        ping.extend_from_slice(&clock.to_be_bytes());
        ping.extend_from_slice(&RAKNET_MAGIC);
        ping.extend_from_slice(&guid.to_be_bytes());
        out.push((t, true, ping));
        let mut pong = vec![0x1c];
        pong.extend_from_slice(&clock.to_be_bytes());
        pong.extend_from_slice(&rng.random::<u64>().to_be_bytes());
        pong.extend_from_slice(&RAKNET_MAGIC);
        let motd =
            b"MCPE;Dedicated Server;712;1.21.20;0;10;1234;Bedrock level;Survival;1;19132;19133;";
        pong.extend_from_slice(&(motd.len() as u16).to_be_bytes());
        pong.extend_from_slice(motd);
        out.push((t + rng.random_range(20..80) * MS, false, pong));
        let gap = rng.random_range(900..1600);
        t += gap * MS;
        clock += gap;
    }
    out
}

/// A game's own header: `01 00 | session | seq32 | body`, both ways, at a fixed tick or in
/// bursts; the body is random or a constant block.
fn game(rng: &mut StdRng, tick_ms: u64, constant_body: bool) -> Vec<Dgram> {
    let session: u16 = rng.random_range(1..=u16::MAX);
    let n = rng.random_range(8..120);
    let body = bytes(rng, n);
    let (mut up, mut down) = (rng.random::<u32>(), rng.random::<u32>());
    let mut out = Vec::new();
    let mut t = T0;
    for i in 0..40 {
        let from_client = i % 3 != 2;
        let seq = if from_client { &mut up } else { &mut down };
        *seq = seq.wrapping_add(1);
        let mut p = vec![0x01, 0x00];
        p.extend_from_slice(&session.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        if constant_body {
            p.extend_from_slice(&body);
        } else {
            p.extend_from_slice(&bytes(rng, body.len()));
        }
        out.push((t, from_client, p));
        t += tick_ms * MS + rng.random_range(0..500);
    }
    out
}

/// KCP (conv, cmd, frg, wnd, ts, sn, una, len; little-endian) with a conversation id whose
/// first byte reads as a uTP type/version.
fn kcp(rng: &mut StdRng) -> Vec<Dgram> {
    let first = [0x01u8, 0x11, 0x21, 0x31, 0x41][rng.random_range(0..5)];
    let conv = u32::from(first) | rng.random::<u32>() << 8;
    let (mut sn, mut ms, mut t) = (0u32, rng.random::<u32>(), T0);
    let mut out = Vec::new();
    for i in 0..30 {
        let push = i % 2 == 0;
        let data = if push { bytes(rng, 60) } else { Vec::new() };
        let mut p = conv.to_le_bytes().to_vec();
        p.extend_from_slice(&[if push { 81 } else { 82 }, 0]);
        p.extend_from_slice(&128u16.to_le_bytes());
        p.extend_from_slice(&ms.to_le_bytes());
        p.extend_from_slice(&sn.to_le_bytes());
        p.extend_from_slice(&sn.to_le_bytes());
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        p.extend_from_slice(&data);
        out.push((t, push, p));
        if push {
            sn += 1;
        }
        let gap = rng.random_range(1..30);
        t += gap * MS;
        ms = ms.wrapping_add(gap as u32);
    }
    out
}

/// ESP in UDP (RFC 3948): SPI, a sequence number that counts packets, then ciphertext; sent in
/// bursts a few hundred microseconds apart and at a steady pace.
fn esp(rng: &mut StdRng) -> Vec<Dgram> {
    let first = [0x01u8, 0x11, 0x21, 0x41][rng.random_range(0..4)];
    let spi = [first, 0, rng.random(), rng.random()];
    let (mut seq, mut t) = (1u32, T0);
    let mut out = Vec::new();
    for _ in 0..40 {
        let mut p = spi.to_vec();
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&bytes(rng, 96));
        out.push((t, true, p));
        seq += 1;
        t += rng.random_range(100..20_000);
    }
    out
}

/// WireGuard: initiation, response, then transport data with a counter, and keepalives.
fn wireguard(rng: &mut StdRng) -> Vec<Dgram> {
    let mut init = vec![1, 0, 0, 0];
    init.extend_from_slice(&bytes(rng, 144));
    let mut resp = vec![2, 0, 0, 0];
    resp.extend_from_slice(&bytes(rng, 88));
    let mut out = vec![(T0, true, init), (T0 + 30 * MS, false, resp)];
    for n in 0u64..30 {
        let mut p = vec![4, 0, 0, 0];
        p.extend_from_slice(&bytes(rng, 4));
        p.extend_from_slice(&n.to_le_bytes());
        p.extend_from_slice(&bytes(rng, if n % 5 == 4 { 16 } else { 128 }));
        out.push((T0 + (40 + n * 7) * MS, n % 2 == 0, p));
    }
    out
}

/// STUN with the magic cookie, classic STUN (RFC 3489, no cookie) and TURN ChannelData.
fn stun(rng: &mut StdRng, classic: bool) -> Vec<Dgram> {
    let mut out = Vec::new();
    for i in 0..12u64 {
        let mut p = match (i % 2, classic) {
            (0, _) => vec![0x00, 0x01, 0x00, 0x08],
            (_, _) => vec![0x01, [0x01, 0x11][rng.random_range(0..2)], 0x00, 0x0c],
        };
        if classic {
            p.extend_from_slice(&bytes(rng, 16));
        } else {
            p.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            p.extend_from_slice(&bytes(rng, 12));
        }
        p.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
        p.extend_from_slice(&bytes(rng, 6));
        out.push((T0 + i * 50 * MS, i % 2 == 0, p));
    }
    for i in 0..20u64 {
        let mut p = vec![0x41, rng.random(), 0x00, 0x10];
        p.extend_from_slice(&bytes(rng, 16));
        out.push((T0 + (600 + i * 20) * MS, i % 2 == 0, p));
    }
    out
}

/// QUIC: a padded Initial, then short-header packets, some with the fixed bit greased off
/// (RFC 9287), which puts 0x01, 0x21 or 0x41 first.
fn quic(rng: &mut StdRng) -> Vec<Dgram> {
    let mut out = vec![(T0, true, quic_initial(1, 0xc3, 1250))];
    for i in 0..30u64 {
        let first = [0x41u8, 0x01, 0x21, 0x51, 0x61][rng.random_range(0..5)];
        let mut p = vec![first];
        let n = rng.random_range(19..1200);
        p.extend_from_slice(&bytes(rng, n));
        out.push((T0 + (20 + i * 3) * MS, i % 3 == 0, p));
    }
    out
}

/// DTLS 1.2 records: a ClientHello, then application data with epoch 1 and a 48-bit sequence.
fn dtls(rng: &mut StdRng) -> Vec<Dgram> {
    let mut hello = vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x60, 0x01];
    hello.extend_from_slice(&bytes(rng, 0x5f));
    let mut out = vec![(T0, true, hello)];
    for n in 1u64..30 {
        let mut p = vec![0x17, 0xfe, 0xfd, 0, 1];
        p.extend_from_slice(&n.to_be_bytes()[2..]);
        p.extend_from_slice(&64u16.to_be_bytes());
        p.extend_from_slice(&bytes(rng, 64));
        out.push((T0 + n * 10 * MS, n % 2 == 1, p));
    }
    out
}

#[test]
fn other_protocols_are_never_bittorrent() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut flows: Vec<(&str, Vec<Dgram>)> = Vec::new();
    for _ in 0..50 {
        flows.push(("raknet", raknet(&mut rng, false)));
        flows.push(("raknet epoch", raknet(&mut rng, true)));
        for tick in [5, 16, 33, 50] {
            flows.push(("game", game(&mut rng, tick, false)));
            flows.push(("game constant", game(&mut rng, tick, true)));
        }
        flows.push(("kcp", kcp(&mut rng)));
        flows.push(("esp", esp(&mut rng)));
        flows.push(("wireguard", wireguard(&mut rng)));
        flows.push(("stun", stun(&mut rng, false)));
        flows.push(("stun classic", stun(&mut rng, true)));
        flows.push(("quic", quic(&mut rng)));
        flows.push(("dtls", dtls(&mut rng)));
    }
    let labelled: Vec<_> = flows
        .iter()
        .enumerate()
        .filter(|(i, (_, f))| {
            classify(40_000 + *i as u16, 19_132, f).protocol == Protocol::Bittorrent
        })
        .map(|(_, (name, _))| *name)
        .collect();
    assert_eq!(flows.len(), 850);
    assert!(labelled.is_empty(), "labelled BitTorrent: {labelled:?}");
}

#[test]
fn three_raknet_pings_on_one_flow_are_not_bittorrent() {
    let mut rng = StdRng::seed_from_u64(3);
    let pings: Vec<Dgram> = raknet(&mut rng, false)
        .into_iter()
        .filter(|d| d.1)
        .take(3)
        .collect();
    assert_eq!(pings.len(), 3);
    assert_eq!(classify(50_000, 19_132, &pings).protocol, Protocol::Unknown);
}
