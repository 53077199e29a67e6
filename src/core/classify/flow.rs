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
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => {
                f.write_str("[")?;
                write_v6(f, &ip.segments())?;
                write!(f, "]:{}", self.port)
            }
        }
    }
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
    /// Packs the tuple into as few words as possible: two for IPv4, five for IPv6. Equal keys
    /// write equal words, as `Eq` requires.
    fn hash<H: Hasher>(&self, h: &mut H) {
        let ports = u64::from(self.lo.port) << 32 | u64::from(self.hi.port) << 16 | self.l4 as u64;
        match (self.lo.ip, self.hi.ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                h.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits()));
                h.write_u64(ports);
            }
            (a, b) => {
                for ip in [a, b] {
                    let bits = match ip {
                        IpAddr::V4(v4) => u128::from(v4.to_bits()),
                        IpAddr::V6(v6) => v6.to_bits(),
                    };
                    h.write_u64(bits as u64);
                    h.write_u64((bits >> 64) as u64);
                }
                h.write_u64(ports | 1 << 63);
            }
        }
    }
}

/// A multiply-rotate hasher (the Fx hash): a few cycles per word, which matters at millions of
/// lookups per second. Seeded per table so colliding keys cannot be prepared in advance.
#[derive(Debug, Clone, Copy)]
pub struct FxHasher(u64);

const SEED: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    pub fn with_seed(seed: u64) -> Self {
        FxHasher(seed)
    }

    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The table takes bucket bits from the low end; the product's entropy is in the high end.
        self.0.rotate_left(26)
    }
}

/// A seeded builder of Fx hashers.
#[derive(Debug, Clone, Copy)]
pub struct SeededFx(pub u64);

impl std::hash::BuildHasher for SeededFx {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher::with_seed(self.0)
    }
}
