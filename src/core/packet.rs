//! IPv4/IPv6 with TCP/UDP header parsing over raw IP bytes.
//!
//! Total over its input: every length is checked before it is used, so truncated, oversized or
//! garbage buffers give an error value, never a panic. Nothing is copied: the payload borrows
//! from the input buffer.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// TCP flag bits used by the classifier.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// One parsed TCP or UDP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub l4: L4,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// TCP sequence number (0 for UDP).
    pub seq: u32,
    /// TCP flags (0 for UDP).
    pub flags: u8,
    /// The captured payload; shorter than `payload_len` when the capture was truncated.
    pub payload: &'a [u8],
    /// Payload length on the wire, from the IP and UDP length fields.
    pub payload_len: usize,
    /// Length of the IP packet on the wire.
    pub ip_len: usize,
    /// Source and destination of the outermost header when the transport was found inside
    /// IP-in-IP (4in4, 6in4, 4in6, 6in6): the addresses the tunnel itself carried.
    pub outer: Option<(IpAddr, IpAddr)>,
    /// The protocol number of the outermost header when the transport was found inside
    /// IP-in-IP (4 or 41): what the kernel's rules see as the packet's transport, and so what
    /// an enforced decision on such a flow has to match. Kept by [`Packet::as_tunnel_sees_it`].
    pub tunnel: Option<u8>,
}

impl Packet<'_> {
    /// Whether the capture cut the payload short (snaplen).
    pub fn truncated(&self) -> bool {
        self.payload.len() < self.payload_len
    }

    /// The packet with the addresses of its outermost header: ports, flags and payload may come
    /// from an encapsulated packet, but the addresses are those WireGuard checked against the
    /// peer's allowed IPs. Whatever a peer writes into an inner header names nobody else.
    pub fn as_tunnel_sees_it(mut self) -> Self {
        if let Some((src, dst)) = self.outer.take() {
            self.src = src;
            self.dst = dst;
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("truncated {0} header")]
    Truncated(&'static str),
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
    #[error("invalid {0} header")]
    Invalid(&'static str),
    #[error("transport protocol {0} is neither TCP nor UDP")]
    OtherTransport(u8),
    #[error("a fragment after the first")]
    Fragment,
}

const PROTO_IPIP: u8 = 4;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_IPV6: u8 = 41;
/// How many IP-in-IP layers are unwrapped (4in6 and 6in4 tunnels).
const MAX_TUNNEL_DEPTH: u8 = 2;

/// Parses a raw IP packet (version taken from the first nibble).
pub fn parse_ip(data: &[u8]) -> Result<Packet<'_>, PacketError> {
    parse_ip_depth(data, 0)
}

fn parse_ip_depth(data: &[u8], depth: u8) -> Result<Packet<'_>, PacketError> {
    match data.first().map(|b| b >> 4) {
        Some(4) => parse_v4(data, depth),
        Some(6) => parse_v6(data, depth),
        Some(_) => Err(PacketError::NotIp),
        None => Err(PacketError::Truncated("IP")),
    }
}

fn be16(d: &[u8], at: usize) -> u16 {
    match d.get(at..at + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    }
}

fn be32(d: &[u8], at: usize) -> u32 {
    match d.get(at..at + 4) {
        Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

fn parse_v4(data: &[u8], depth: u8) -> Result<Packet<'_>, PacketError> {
    let h = data.get(..20).ok_or(PacketError::Truncated("IPv4"))?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::Invalid("IPv4"));
    }
    // A zero total length appears with segmentation offload; the captured length is all we have.
    let total = match usize::from(be16(h, 2)) {
        0 => data.len(),
        t if t < ihl => return Err(PacketError::Invalid("IPv4")),
        t => t,
    };
    if be16(h, 6) & 0x1fff != 0 {
        return Err(PacketError::Fragment);
    }
    let body = data
        .get(ihl..total.min(data.len()))
        .ok_or(PacketError::Truncated("IPv4"))?;
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    transport(h[9], body, total - ihl, src, dst, total, depth)
}

fn parse_v6(data: &[u8], depth: u8) -> Result<Packet<'_>, PacketError> {
    let h = data.get(..40).ok_or(PacketError::Truncated("IPv6"))?;
    let mut a = [0u8; 16];
    let mut b = [0u8; 16];
    a.copy_from_slice(&h[8..24]);
    b.copy_from_slice(&h[24..40]);
    let (src, dst) = (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)));
    let wire_payload = usize::from(be16(h, 4));
    let end = (40 + wire_payload).min(data.len());
    let mut next = h[6];
    let mut off = 40;
    // Extension headers: hop-by-hop, routing, fragment, destination options, AH, mobility.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 | 135 => {
                let ext = data
                    .get(off..off + 2)
                    .ok_or(PacketError::Truncated("IPv6 extension"))?;
                next = ext[0];
                off += (usize::from(ext[1]) + 1) * 8;
            }
            44 => {
                let ext = data
                    .get(off..off + 8)
                    .ok_or(PacketError::Truncated("IPv6 fragment"))?;
                if be16(ext, 2) & 0xfff8 != 0 {
                    return Err(PacketError::Fragment);
                }
                next = ext[0];
                off += 8;
            }
            51 => {
                let ext = data
                    .get(off..off + 2)
                    .ok_or(PacketError::Truncated("IPv6 AH"))?;
                next = ext[0];
                off += (usize::from(ext[1]) + 2) * 4;
            }
            _ => break,
        }
    }
    if off > end || off > 40 + wire_payload {
        return Err(PacketError::Truncated("IPv6 extension"));
    }
    let body = &data[off..end];
    transport(
        next,
        body,
        40 + wire_payload - off,
        src,
        dst,
        40 + wire_payload,
        depth,
    )
}

fn transport(
    proto: u8,
    body: &[u8],
    wire_len: usize,
    src: IpAddr,
    dst: IpAddr,
    ip_len: usize,
    depth: u8,
) -> Result<Packet<'_>, PacketError> {
    match proto {
        PROTO_TCP => {
            let h = body.get(..20).ok_or(PacketError::Truncated("TCP"))?;
            let off = usize::from(h[12] >> 4) * 4;
            if off < 20 || off > body.len() || off > wire_len {
                return Err(PacketError::Invalid("TCP"));
            }
            Ok(Packet {
                l4: L4::Tcp,
                src,
                dst,
                sport: be16(h, 0),
                dport: be16(h, 2),
                seq: be32(h, 4),
                flags: h[13],
                payload: &body[off..],
                payload_len: wire_len - off,
                ip_len,
                outer: None,
                tunnel: None,
            })
        }
        PROTO_UDP => {
            let h = body.get(..8).ok_or(PacketError::Truncated("UDP"))?;
            let udp_len = usize::from(be16(h, 4));
            // The UDP length field wins when it is sane; zero means a jumbogram or offload.
            let wire = if (8..=wire_len).contains(&udp_len) {
                udp_len
            } else {
                wire_len
            };
            let end = wire.min(body.len());
            Ok(Packet {
                l4: L4::Udp,
                src,
                dst,
                sport: be16(h, 0),
                dport: be16(h, 2),
                seq: 0,
                flags: 0,
                payload: body.get(8..end).unwrap_or(&[]),
                payload_len: wire.saturating_sub(8),
                ip_len,
                outer: None,
                tunnel: None,
            })
        }
        // The outermost header is the last to set `outer`, so it is the one kept.
        PROTO_IPIP | PROTO_IPV6 if depth < MAX_TUNNEL_DEPTH => {
            parse_ip_depth(body, depth + 1).map(|p| Packet {
                outer: Some((src, dst)),
                tunnel: Some(proto),
                ..p
            })
        }
        other => Err(PacketError::OtherTransport(other)),
    }
}
