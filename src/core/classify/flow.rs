//! Flow keys: the 5-tuple in a canonical order so both directions find the same entry.
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use crate::core::packet::{L4, Packet};

/// One side of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => {
                // Written by hand: `inspect` prints two endpoints per flow, millions of times.
                let mut buf = [0u8; 21];
                let mut n = 0;
                for (i, o) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[n] = b'.';
                        n += 1;
                    }
                    n += decimal(&mut buf[n..], u32::from(o));
                }
                buf[n] = b':';
                n += 1;
                n += decimal(&mut buf[n..], u32::from(self.port));
                f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| std::fmt::Error)?)
            }
            IpAddr::V6(ip) => {
                f.write_str("[")?;
                write_v6(f, &ip.segments())?;
                write!(f, "]:{}", self.port)
            }
        }
    }
}

/// Writes `v` (at most 99,999) in decimal at the start of `out`; returns the digits written.
fn decimal(out: &mut [u8], mut v: u32) -> usize {
    let mut digits = [0u8; 5];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 || n == digits.len() {
            break;
        }
    }
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    n
}

/// IPv6 text as nDPI and the classic `inet_ntop` print it: the longest run of zero groups is
/// compressed even when it is a single group, and embedded IPv4 is not spelled out.
fn write_v6(f: &mut std::fmt::Formatter<'_>, g: &[u16; 8]) -> std::fmt::Result {
    let (mut best, mut best_len, mut i) = (0, 0, 0);
    while i < 8 {
        let start = i;
        while i < 8 && g[i] == 0 {
            i += 1;
        }
        if i - start > best_len {
            (best, best_len) = (start, i - start);
        }
        i += 1;
    }
    for (j, group) in g.iter().enumerate() {
        if best_len > 0 && j >= best && j < best + best_len {
            if j == best {
                f.write_str(if j == 0 { "::" } else { ":" })?;
            }
            continue;
        }
        write!(f, "{group:x}")?;
        if j < 7 {
            f.write_str(":")?;
        }
    }
    Ok(())
}

/// The 5-tuple with the smaller endpoint first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub l4: L4,
    pub lo: Endpoint,
    pub hi: Endpoint,
}

impl FlowKey {
    /// The key of a packet and whether the packet travels from `lo` to `hi`.
    pub fn of(p: &Packet<'_>) -> (FlowKey, bool) {
        let s = Endpoint {
            ip: p.src,
            port: p.sport,
        };
        let d = Endpoint {
            ip: p.dst,
            port: p.dport,
        };
        if s <= d {
            (
                FlowKey {
                    l4: p.l4,
                    lo: s,
                    hi: d,
                },
                true,
            )
        } else {
            (
                FlowKey {
                    l4: p.l4,
                    lo: d,
                    hi: s,
                },
                false,
            )
        }
    }
}

impl Hash for FlowKey {
    /// Packs the tuple into as few words as possible: two for IPv4, two addresses and a word
    /// for IPv6. Equal keys write equal words, as `Eq` requires.
    fn hash<H: Hasher>(&self, h: &mut H) {
        let ports = u64::from(self.lo.port) << 32 | u64::from(self.hi.port) << 16 | self.l4 as u64;
        match (self.lo.ip, self.hi.ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                h.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits()));
                h.write_u64(ports);
            }
            (a, b) => {
                for ip in [a, b] {
                    h.write_u128(match ip {
                        IpAddr::V4(v4) => u128::from(v4.to_bits()),
                        IpAddr::V6(v6) => v6.to_bits(),
                    });
                }
                h.write_u64(ports | 1 << 63);
            }
        }
    }
}

/// The table's hasher: foldhash (a folded multiply per two words, a few cycles per key) keyed
/// by a secret seed. Peers choose their own 5-tuples; without the key they cannot compute which
/// keys collide, so they cannot pile their flows into a few buckets.
#[derive(Debug, Clone)]
pub struct KeyedHash {
    per_table: u64,
    shared: foldhash::SharedSeed,
}

impl KeyedHash {
    pub fn new(seed: u64) -> KeyedHash {
        KeyedHash {
            per_table: seed.rotate_left(32) ^ 0x243f_6a88_85a3_08d3,
            shared: foldhash::SharedSeed::from_u64(seed),
        }
    }
}

impl std::hash::BuildHasher for KeyedHash {
    type Hasher = foldhash::fast::FoldHasher;
    fn build_hasher(&self) -> Self::Hasher {
        foldhash::fast::FoldHasher::with_seed(self.per_table, &self.shared)
    }
}
