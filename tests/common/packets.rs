//! Packet and capture-file builders shared by the classifier tests.

use std::net::IpAddr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// A TCP header with data offset 5, the given flags and sequence number.
pub fn tcp_header(sport: u16, dport: u16, seq: u32, flags: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h.push(5 << 4);
    h.push(flags);
    h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    h
}

pub fn udp_header(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(8);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

/// An IP packet (v4 or v6 after the addresses) around a transport header and payload.
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + l4.len();
            let mut p = vec![0x45, 0];
            p.extend_from_slice(&(total as u16).to_be_bytes());
            p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(l4);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            p.push(proto);
            p.push(64);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(l4);
            p
        }
        _ => panic!("mixed address families"),
    }
}

pub fn tcp(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = tcp_header(sport, dport, seq, flags);
    l4.extend_from_slice(payload);
    ip(addr(src), addr(dst), TCP, &l4)
}

pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = udp_header(sport, dport, payload.len());
    l4.extend_from_slice(payload);
    ip(addr(src), addr(dst), UDP, &l4)
}

pub fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A classic pcap file (microsecond timestamps) of the given link type.
pub fn pcap_file(linktype: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    for (i, fr) in frames.iter().enumerate() {
        f.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        f.extend_from_slice(&((i as u32) * 1000).to_le_bytes());
        f.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        f.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        f.extend_from_slice(fr);
    }
    f
}

/// Ethernet framing with optional 802.1Q tags.
pub fn ethernet(ip_packet: &[u8], vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for v in vlans {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype(ip_packet).to_be_bytes());
    f.extend_from_slice(ip_packet);
    f
}

fn ethertype(ip_packet: &[u8]) -> u16 {
    if ip_packet[0] >> 4 == 6 {
        0x86dd
    } else {
        0x0800
    }
}

/// Linux cooked capture v1: 16 bytes, protocol last.
pub fn sll(ip_packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(&ethertype(ip_packet).to_be_bytes());
    f.extend_from_slice(ip_packet);
    f
}

/// Linux cooked capture v2: 20 bytes, protocol first.
pub fn sll2(ip_packet: &[u8]) -> Vec<u8> {
    let mut f = ethertype(ip_packet).to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(ip_packet);
    f
}

/// BSD null/loopback: the address family in the capturing host's (here little-endian) order.
pub fn null(ip_packet: &[u8]) -> Vec<u8> {
    let family: u32 = if ip_packet[0] >> 4 == 6 { 30 } else { 2 };
    let mut f = family.to_le_bytes().to_vec();
    f.extend_from_slice(ip_packet);
    f
}

/// A BitTorrent peer wire handshake (BEP 3).
pub fn bt_handshake() -> Vec<u8> {
    let mut h = b"\x13BitTorrent protocol".to_vec();
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 5]);
    h.extend_from_slice(&[0xab; 20]);
    h.extend_from_slice(b"-XX0001-123456789012");
    h
}

/// A TLS 1.3-style ClientHello record carrying an SNI extension, of roughly `pad` extra bytes.
pub fn client_hello(sni: &str, pad: usize) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x11; 32]);
    body.push(32);
    body.extend_from_slice(&[0x22; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    ext.extend_from_slice(&[0, 21]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.extend(std::iter::repeat_n(0u8, pad));
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A QUIC v1 client Initial header padded to `len` bytes (the protected part is filler).
pub fn quic_initial(version: u32, first: u8, len: usize) -> Vec<u8> {
    let mut p = vec![first];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(8);
    p.extend_from_slice(&[0x5a; 8]);
    p.push(0);
    p.push(0);
    p.extend_from_slice(&[0x44, 0xb0]);
    p.resize(len, 0x77);
    p
}

/// A DNS query for `name`, type A, class IN.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A uTP header (BEP 29) with no extensions.
pub fn utp(kind: u8, conn_id: u16, timestamp: u32, seq: u16, ack: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![(kind << 4) | 1, 0];
    p.extend_from_slice(&conn_id.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&0x0010_0000u32.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    p.extend_from_slice(data);
    p
}
