//! Link-layer framing of capture files: from a frame to the IP packet it carries.
//!
//! Covers the link types of the captures `inspect` reads: Ethernet (with 802.1Q/802.1ad tags,
//! MPLS and PPPoE sessions), raw IP, Linux cooked capture v1 and v2, BSD null and loopback, and
//! a few cheap extras: Cisco HDLC, PPP, and PPI-wrapped Ethernet.

/// Link types by their `LINKTYPE_`/`DLT_` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    RawIp,
    LinuxSll,
    LinuxSll2,
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback: the same family in network byte order.
    Loop,
    /// Cisco HDLC: address, control, then an Ethertype.
    CiscoHdlc,
    /// PPP, with or without the address/control bytes.
    Ppp,
    /// Per-Packet Information: a little-endian header naming the inner link type.
    Ppi,
}

impl LinkType {
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        match dlt {
            0 => Some(LinkType::Null),
            1 => Some(LinkType::Ethernet),
            // DLT_RAW differs between systems (12, 14); 101 is the file format's LINKTYPE_RAW;
            // 228 and 229 are raw IPv4 and IPv6.
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            108 => Some(LinkType::Loop),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            104 => Some(LinkType::CiscoHdlc),
            9 => Some(LinkType::Ppp),
            192 => Some(LinkType::Ppi),
            _ => None,
        }
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const ETH_MPLS: [u16; 2] = [0x8847, 0x8848];
const ETH_PPPOE: u16 = 0x8864;

fn be16(d: &[u8], i: usize) -> Option<u16> {
    d.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// The IP packet inside a frame, or `None` for frames that carry something else.
pub fn ip_payload(link: LinkType, frame: &[u8]) -> Option<&[u8]> {
    match link {
        LinkType::RawIp => Some(frame),
        LinkType::Ethernet => by_ethertype(frame, be16(frame, 12)?, 14),
        LinkType::LinuxSll => by_ethertype(frame, be16(frame, 14)?, 16),
        LinkType::LinuxSll2 => by_ethertype(frame, be16(frame, 0)?, 20),
        LinkType::CiscoHdlc => by_ethertype(frame, be16(frame, 2)?, 4),
        LinkType::Ppp => {
            let off = if frame.starts_with(&[0xff, 0x03]) {
                2
            } else {
                0
            };
            match be16(frame, off)? {
                0x0021 => frame.get(off + 2..),
                0x0057 => frame.get(off + 2..),
                _ => None,
            }
        }
        LinkType::Ppi => {
            let h = frame.get(..8)?;
            let len = usize::from(u16::from_le_bytes([h[2], h[3]]));
            // Only Ethernet inside; 802.11 frames carry no IP this classifier could use.
            if u32::from_le_bytes([h[4], h[5], h[6], h[7]]) != 1 || len < 8 {
                return None;
            }
            let inner = frame.get(len..)?;
            by_ethertype(inner, be16(inner, 12)?, 14)
        }
        LinkType::Null | LinkType::Loop => {
            let f = frame.get(..4)?;
            let family = if link == LinkType::Loop {
                u32::from_be_bytes([f[0], f[1], f[2], f[3]])
            } else {
                // Host order of an unknown host: whichever reading gives a small number.
                let le = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
                if le <= 0xffff {
                    le
                } else {
                    u32::from_be_bytes([f[0], f[1], f[2], f[3]])
                }
            };
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24, 28 or 30 (the BSDs, macOS).
            match family {
                2 | 10 | 24 | 28 | 30 => frame.get(4..),
                _ => None,
            }
        }
    }
}

fn by_ethertype(frame: &[u8], mut ethertype: u16, mut off: usize) -> Option<&[u8]> {
    // Bounded: a frame cannot hold more tags than this anyway.
    for _ in 0..8 {
        match ethertype {
            ETH_IPV4 | ETH_IPV6 => return frame.get(off..),
            t if ETH_VLAN.contains(&t) => {
                ethertype = be16(frame, off + 2)?;
                off += 4;
            }
            t if ETH_MPLS.contains(&t) => {
                // Pop labels to the bottom of the stack, then tell IPv4 from IPv6 by version.
                loop {
                    let bottom = frame.get(off + 2)? & 1 == 1;
                    off += 4;
                    if bottom {
                        break;
                    }
                }
                return match frame.get(off)? >> 4 {
                    4 | 6 => frame.get(off..),
                    _ => None,
                };
            }
            ETH_PPPOE => {
                ethertype = match be16(frame, off + 6)? {
                    0x0021 => ETH_IPV4,
                    0x0057 => ETH_IPV6,
                    _ => return None,
                };
                off += 8;
            }
            _ => return None,
        }
    }
    None
}
