//! uTP (BEP 29), BitTorrent's transport over UDP.
//!
//! A uTP header has no magic bytes: its first byte (type << 4 | version 1) is also the first byte
//! of RakNet pings, WireGuard initiations, game headers and ESP packets with a small SPI. One
//! header proves nothing, so a flow is uTP only on evidence that foreign framing cannot give:
//! - the connection handshake: a SYN, and a STATE from the other side that acknowledges its
//!   sequence number on the same connection id;
//! - a DATA packet that carries the peer wire handshake;
//! - a run of packets in one direction that behave as one connection: one connection id,
//!   microsecond timestamps that advance as the capture clock does, DATA sequence numbers that
//!   step by exactly one, acknowledgements that move forward.
use super::bittorrent::HANDSHAKE;

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
/// success) and 0x0111 (binding error) would otherwise read as uTP DATA packets.
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// RakNet's offline-message magic; an unconnected ping (0x01, 8-byte time, magic) reads as uTP
/// DATA version 1 otherwise.
const RAKNET_MAGIC: [u8; 16] = [
    0x00, 0xff, 0xff, 0x00, 0xfe, 0xfe, 0xfe, 0xfe, 0xfd, 0xfd, 0xfd, 0xfd, 0x12, 0x34, 0x56, 0x78,
];
/// The largest receive window a uTP stack advertises: libutp and libtorrent stay at a few MiB.
const MAX_WINDOW: u32 = 8 << 20;

fn be32(h: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

/// Parses a uTP header (BEP 29): version 1, type 0..=4, non-zero connection id and timestamp,
/// a plausible window, a well-formed chain of known extensions, data only in DATA packets.
pub(crate) fn parse(d: &[u8]) -> Option<Utp> {
    let h = d.get(..20)?;
    let (kind, version) = (h[0] >> 4, h[0] & 0x0f);
    let conn_id = u16::from_be_bytes([h[2], h[3]]);
    let timestamp = be32(h, 4);
    if version != 1
        || kind > ST_SYN
        || conn_id == 0
        || timestamp == 0
        || be32(h, 12) > MAX_WINDOW
        || h[4..8] == STUN_COOKIE
        || d.get(9..25) == Some(&RAKNET_MAGIC[..])
    {
        return None;
    }
    // A SYN opens the connection: nothing has been received yet to measure a delay against.
    if kind == ST_SYN && be32(h, 8) != 0 {
        return None;
    }
    let mut ext = h[1];
    let mut off = 20;
    let mut hops = 0;
    while ext != 0 {
        // 1 selective ack (a bitmask of whole 32-bit words), 2 extension bits (8 bytes),
        // 3 close reason (libtorrent, 4 bytes).
        let e = d.get(off..off + 2)?;
        let len = usize::from(e[1]);
        let ok = match ext {
            1 => len >= 4 && len % 4 == 0,
            2 => len == 8,
            3 => len == 4,
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
        conn_id,
        timestamp,
        seq: u16::from_be_bytes([h[16], h[17]]),
        ack: u16::from_be_bytes([h[18], h[19]]),
        data_len,
    })
}

/// Whether a uTP packet carries the peer wire handshake right after its header.
pub(crate) fn carries_handshake(d: &[u8], u: &Utp) -> bool {
    u.kind == ST_DATA && d.len() >= u.data_len && d[d.len() - u.data_len..].starts_with(HANDSHAKE)
}

/// uTP evidence collected in one direction of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Track {
    /// The previous header of this direction and when it was captured (µs).
    last: Option<(Utp, u64)>,
    /// Connection id and sequence number of a SYN this direction sent.
    syn: Option<(u16, u16)>,
    /// Consecutive packets that continued each other.
    run: u8,
}

/// How many consecutive packets one direction needs when the handshake was not seen.
const RUN: u8 = 3;
/// How much further apart two packets may arrive than they were sent: path jitter.
const SPREAD_US: u64 = 5_000;
/// How much closer together they may arrive: a queue that drains a burst at once.
const SQUEEZE_US: u64 = 50_000;

/// Whether the sender's timestamps advanced as the capture clock did: strictly, and within a
/// factor of two plus jitter. A counter that steps by one per packet (a game's sequence number,
/// ESP's) fails as soon as packets arrive more than a few milliseconds apart.
fn clock_agrees(ts_step: u32, cap_step: u64) -> bool {
    let ts = u64::from(ts_step);
    ts_step > 0
        && ts_step < 1 << 31
        && ts + SPREAD_US >= cap_step / 2
        && ts <= 2 * cap_step + SQUEEZE_US
}

fn continues(l: &Utp, l_us: u64, u: &Utp, now_us: u64) -> bool {
    let seq_step = u.seq.wrapping_sub(l.seq);
    let seq_ok = if l.kind == ST_DATA && u.kind == ST_DATA {
        seq_step == 1
    } else {
        seq_step <= 1
    };
    u.conn_id == l.conn_id
        && seq_ok
        && u.ack.wrapping_sub(l.ack) < 1024
        && clock_agrees(
            u.timestamp.wrapping_sub(l.timestamp),
            now_us.saturating_sub(l_us),
        )
}

impl Track {
    /// Records a packet captured at `now_us`; true when this direction alone is convincing.
    pub(crate) fn push(&mut self, u: &Utp, now_us: u64) -> bool {
        let cont = self
            .last
            .is_some_and(|(l, l_us)| continues(&l, l_us, u, now_us));
        self.run = if cont { self.run.saturating_add(1) } else { 1 };
        self.last = Some((*u, now_us));
        if u.kind == ST_SYN {
            self.syn = Some((u.conn_id, u.seq));
        }
        self.run >= RUN
    }

    /// The connection handshake: a STATE that acknowledges the SYN of the other direction on
    /// the same connection id.
    pub(crate) fn answers(&self, state: &Utp) -> bool {
        state.kind == ST_STATE && self.syn == Some((state.conn_id, state.ack))
    }
}
