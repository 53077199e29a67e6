//! BitTorrent: the peer wire handshake (BEP 3), uTP (BEP 29), DHT (BEP 5), the UDP tracker
//! protocol (BEP 15) and local service discovery (BEP 14).
use super::Verdict;
use super::bencode::{self, Dht};

const HANDSHAKE: &[u8; 20] = b"\x13BitTorrent protocol";
const LSD: &[u8] = b"BT-SEARCH * HTTP/1.1\r\n";
/// BEP 15: the fixed protocol id of a connect request.
const UDP_TRACKER_MAGIC: [u8; 8] = 0x0417_2710_1980u64.to_be_bytes();

/// The peer wire handshake: `\x13BitTorrent protocol`, 8 reserved bytes, info hash, peer id.
pub(crate) fn handshake(d: &[u8]) -> Verdict {
    let n = d.len().min(HANDSHAKE.len());
    if d[..n] != HANDSHAKE[..n] {
        Verdict::No
    } else if n < HANDSHAKE.len() {
        Verdict::NeedMore
    } else {
        Verdict::Match(super::Protocol::Bittorrent)
    }
}

/// A UDP datagram: a DHT message, a UDP tracker connect request or a local discovery announce.
pub(crate) fn datagram(d: &[u8], truncated: bool) -> Verdict {
    match d.first() {
        Some(b'd') => match bencode::dht(d, truncated) {
            Dht::Message => Verdict::Match(super::Protocol::Bittorrent),
            Dht::Prefix => Verdict::Hint,
            Dht::No => Verdict::No,
        },
        Some(b'B') if d.starts_with(LSD) => Verdict::Match(super::Protocol::Bittorrent),
        Some(0) if d.len() >= 16 && d[..8] == UDP_TRACKER_MAGIC && d[8..12] == [0; 4] => {
            Verdict::Match(super::Protocol::Bittorrent)
        }
        _ => Verdict::No,
    }
}

/// The fields of a uTP header that tie packets of one connection together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Utp {
    pub kind: u8,
    pub conn_id: u16,
    pub timestamp: u32,
    pub seq: u16,
    pub ack: u16,
    /// Bytes after the header and its extensions.
    pub data_len: usize,
}

const ST_DATA: u8 = 0;
const ST_STATE: u8 = 2;
const ST_SYN: u8 = 4;
/// RFC 8489: STUN puts this constant where uTP has its timestamp; STUN's 0x0101 (binding
/// success) would otherwise read as a uTP data packet.
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Parses a uTP header (BEP 29): version 1, type 0..=4, a well-formed extension chain.
pub(crate) fn utp(d: &[u8]) -> Option<Utp> {
    let h = d.get(..20)?;
    let (kind, version) = (h[0] >> 4, h[0] & 0x0f);
    if version != 1 || kind > ST_SYN || h[4..8] == STUN_COOKIE {
        return None;
    }
    let mut ext = h[1];
    let mut off = 20;
    let mut hops = 0;
    while ext != 0 {
        // Known extensions: 1 selective ack (a bitmask of at least 32 bits), 2 extension bits.
        let e = d.get(off..off + 2)?;
        let len = usize::from(e[1]);
        let ok = match ext {
            1 => len >= 4 && len % 4 == 0,
            2 => len == 8,
            _ => false,
        };
        hops += 1;
        if !ok || hops > 4 {
            return None;
        }
        ext = e[0];
        off += 2 + len;
    }
    let data_len = d.len().checked_sub(off)?;
    // Only DATA packets carry data (SYN, STATE, FIN and RESET are bare headers).
    let sane = if kind == ST_DATA {
        data_len > 0
    } else {
        data_len == 0
    };
    sane.then(|| Utp {
        kind,
        conn_id: u16::from_be_bytes([h[2], h[3]]),
        timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        seq: u16::from_be_bytes([h[16], h[17]]),
        ack: u16::from_be_bytes([h[18], h[19]]),
        data_len,
    })
}

/// Whether a uTP packet carries the peer wire handshake right after its header.
pub(crate) fn utp_carries_handshake(d: &[u8], u: &Utp) -> bool {
    u.kind == ST_DATA && d.len() >= u.data_len && d[d.len() - u.data_len..].starts_with(HANDSHAKE)
}

/// uTP evidence collected in one direction of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UtpTrack {
    last: Option<Utp>,
    /// Connection id and sequence number of a SYN this direction sent.
    syn: Option<(u16, u16)>,
    /// Consecutive packets that continued each other.
    run: u8,
}

/// How many consecutive packets one direction needs when the handshake was not seen.
const ONE_WAY_RUN: u8 = 3;

impl UtpTrack {
    /// Records a packet; true when this direction alone is convincing: a run of packets of one
    /// connection whose microsecond timestamps strictly increase, whose sequence numbers step
    /// by at most one and whose acknowledgements move forward.
    pub(crate) fn push(&mut self, u: &Utp) -> bool {
        let continues = self.last.is_some_and(|l| {
            u.conn_id == l.conn_id
                && (1..1 << 31).contains(&u.timestamp.wrapping_sub(l.timestamp))
                && u.seq.wrapping_sub(l.seq) <= 1
                && u.ack.wrapping_sub(l.ack) < 1024
        });
        self.run = if continues {
            self.run.saturating_add(1)
        } else {
            1
        };
        self.last = Some(*u);
        if u.kind == ST_SYN {
            self.syn = Some((u.conn_id, u.seq));
        }
        self.run >= ONE_WAY_RUN
    }

    /// The connection handshake: a STATE that acknowledges the SYN of the other direction on
    /// the same connection id.
    pub(crate) fn answers(&self, state: &Utp) -> bool {
        state.kind == ST_STATE && self.syn == Some((state.conn_id, state.ack))
    }
}
