//! Per-flow detection: runs the detectors over the first payload packets of each direction,
//! reassembles a TCP prefix that a detector found too short, and pairs hints across directions.
use super::{Protocol, Verdict, bittorrent, dns, quic, text, tls, utp};
use crate::core::packet::{L4, Packet};

/// Cap on a reassembled TCP prefix. Every detector decides within its first 80 bytes (TLS
/// judges a hello up to its cipher suites), so a small cap keeps the table's memory bounded:
/// at most this much per direction per flow.
const MAX_REASSEMBLY: usize = 160;

const HINT_QUIC: u8 = 1;
const HINT_BITTORRENT: u8 = 2;

/// The outcome of inspecting a flow so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub protocol: Protocol,
    /// An HTTP flow that is a BitTorrent tracker request.
    pub tracker: bool,
}

#[derive(Debug)]
struct Reassembly {
    buf: Vec<u8>,
    next_seq: u32,
}

/// Detection state of one flow; directions are indexed 0 (from `a`) and 1 (from `b`).
#[derive(Debug, Default)]
pub struct DetectState {
    inspected: [u8; 2],
    hints: [u8; 2],
    /// Segments per direction that began with a TLS record header.
    tls_records: [u8; 2],
    utp: [utp::Track; 2],
    // Boxed so a flow without reassembly costs one pointer per direction.
    pending: [Option<Box<Reassembly>>; 2],
    /// TLS server name or HTTP host, kept only when asked for (privacy by default).
    hostname: Option<Box<str>>,
}

impl DetectState {
    /// Payload packets run through the detectors, both directions.
    pub fn packets_inspected(&self) -> u32 {
        u32::from(self.inspected[0]) + u32::from(self.inspected[1])
    }

    /// Whether both directions have used up `budget` payload packets.
    pub fn exhausted(&self, budget: u8) -> bool {
        self.inspected[0] >= budget && self.inspected[1] >= budget
    }

    /// The TLS server name or HTTP host of the packet that settled the flow, if kept.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// Inspects one packet of direction `dir`, captured at `now_us`; packets beyond the budget
    /// are not looked at. With `keep_hostname`, the server name or host is read from the bytes
    /// that settled it.
    pub fn inspect(
        &mut self,
        now_us: u64,
        p: &Packet<'_>,
        dir: usize,
        budget: u8,
        keep_hostname: bool,
    ) -> Option<Found> {
        let dir = dir & 1;
        if p.payload.is_empty() || self.inspected[dir] >= budget {
            return None;
        }
        self.inspected[dir] += 1;
        let found = match p.l4 {
            L4::Tcp => self.tcp(p, dir, keep_hostname),
            L4::Udp => self.udp(now_us, p, dir),
        };
        if found.is_some() {
            self.pending = [None, None];
        }
        found
    }

    fn tcp(&mut self, p: &Packet<'_>, dir: usize, keep_hostname: bool) -> Option<Found> {
        let dns_port = p.sport == dns::PORT || p.dport == dns::PORT;
        let mut pending = self.pending[dir].take();
        // Continue a prefix only with the next in-order segment; anything else restarts.
        if let Some(r) = pending.as_mut().filter(|r| r.next_seq == p.seq) {
            let room = MAX_REASSEMBLY.saturating_sub(r.buf.len());
            r.buf
                .extend_from_slice(&p.payload[..p.payload.len().min(room)]);
        } else {
            pending = None;
        }
        let data = pending.as_ref().map_or(p.payload, |r| r.buf.as_slice());
        let (found, more, hint) = tcp_verdict(data, dns_port);
        if keep_hostname && let Some(f) = found {
            let name = match f.protocol {
                Protocol::Tls => tls::server_name(data),
                Protocol::Http => text::host(data),
                _ => None,
            };
            self.hostname = name.and_then(hostname);
        }
        if found.is_none() && hint {
            self.tls_records[dir] += 1;
            let [a, b] = self.tls_records;
            if a > 0 && b > 0 || a.max(b) >= 2 {
                return Some(Found {
                    protocol: Protocol::Tls,
                    tracker: false,
                });
            }
        }
        if found.is_none() && more && !p.truncated() && data.len() < MAX_REASSEMBLY {
            let mut r = pending.unwrap_or_else(|| {
                let mut buf = Vec::with_capacity(MAX_REASSEMBLY);
                buf.extend_from_slice(p.payload);
                Box::new(Reassembly { buf, next_seq: 0 })
            });
            r.next_seq = p.seq.wrapping_add(p.payload.len() as u32);
            self.pending[dir] = Some(r);
        }
        found
    }

    fn udp(&mut self, now_us: u64, p: &Packet<'_>, dir: usize) -> Option<Found> {
        let d = p.payload;
        let match_of = |protocol| {
            Some(Found {
                protocol,
                tracker: false,
            })
        };
        if (p.sport == dns::PORT || p.dport == dns::PORT)
            && let Verdict::Match(proto) = dns::udp(d, p.truncated())
        {
            return match_of(proto);
        }
        let first = d[0];
        let mut hint = 0;
        if matches!(first, b'd' | b'B' | 0) {
            match bittorrent::datagram(d, p.truncated()) {
                Verdict::Match(proto) => return match_of(proto),
                Verdict::Hint => hint |= HINT_BITTORRENT,
                _ => {}
            }
        }
        if first & 0x0f == 1
            && first >> 4 <= 4
            && let Some(u) = utp::parse(d)
        {
            let one_way = self.utp[dir].push(&u, now_us);
            if one_way || self.utp[dir ^ 1].answers(&u) || utp::carries_handshake(d, &u) {
                return match_of(Protocol::Bittorrent);
            }
        }
        match quic::detect(d, p.payload_len) {
            Verdict::Match(proto) => return match_of(proto),
            Verdict::Hint => hint |= HINT_QUIC,
            _ => {}
        }
        self.hints[dir] |= hint;
        let both = self.hints[0] & self.hints[1];
        if both & HINT_BITTORRENT != 0 {
            match_of(Protocol::Bittorrent)
        } else if both & HINT_QUIC != 0 {
            match_of(Protocol::Quic)
        } else {
            None
        }
    }
}

/// Runs the TCP detectors that the first byte allows; also says whether one wants more bytes
/// and whether the segment starts with TLS records.
fn tcp_verdict(d: &[u8], dns_port: bool) -> (Option<Found>, bool, bool) {
    let mut more = false;
    let mut hint = false;
    let mut judge = |v: Verdict| match v {
        Verdict::Match(protocol) => Some(Found {
            protocol,
            tracker: false,
        }),
        Verdict::Tracker => Some(Found {
            protocol: Protocol::Http,
            tracker: true,
        }),
        Verdict::NeedMore => {
            more = true;
            None
        }
        Verdict::Hint => {
            hint = true;
            None
        }
        Verdict::No => None,
    };
    let found = match d.first() {
        Some(0x13) => judge(bittorrent::handshake(d)),
        Some(0x16) => judge(tls::detect(d)).or_else(|| judge(tls::records(d))),
        Some(20 | 21 | 23) => judge(tls::records(d)),
        Some(b'S') => judge(text::ssh(d)).or_else(|| judge(text::http(d))),
        Some(b'A'..=b'Z') => judge(text::http(d)),
        _ => None,
    };
    let found = match found {
        None if dns_port => judge(dns::tcp(d)),
        f => f,
    };
    (found, more, hint)
}

/// A hostname as text, if it looks like one: DNS characters, an optional port, at most 255.
fn hostname(raw: &[u8]) -> Option<Box<str>> {
    let ok = !raw.is_empty()
        && raw.len() <= 255
        && raw.iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    if ok {
        std::str::from_utf8(raw).ok().map(Box::from)
    } else {
        None
    }
}
