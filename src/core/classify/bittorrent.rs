//! BitTorrent: the peer wire handshake (BEP 3), DHT (BEP 5), the UDP tracker protocol (BEP 15)
//! and local service discovery (BEP 14); uTP (BEP 29) has a module of its own.
use super::Verdict;
use super::bencode::{self, Dht};

pub(crate) const HANDSHAKE: &[u8; 20] = b"\x13BitTorrent protocol";
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
