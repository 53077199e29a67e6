//! DNS (RFC 1035 §4.1) on port 53, over UDP and over TCP with its two-byte length prefix.
//!
//! Only port 53: the same message format on other ports is mDNS, LLMNR or NetBIOS, which are
//! different protocols.
use super::{Protocol, Verdict};

pub(crate) const PORT: u16 = 53;

fn be16(d: &[u8], i: usize) -> usize {
    d.get(i..i + 2)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
}

/// A DNS message over UDP.
pub(crate) fn udp(d: &[u8], truncated: bool) -> Verdict {
    message(d, truncated)
}

/// A DNS message over TCP: a length prefix, then the message.
pub(crate) fn tcp(d: &[u8]) -> Verdict {
    if d.len() < 2 {
        return Verdict::NeedMore;
    }
    let len = be16(d, 0);
    if len < 12 {
        return Verdict::No;
    }
    let body = &d[2..d.len().min(2 + len)];
    match message(body, body.len() < len) {
        Verdict::No if body.len() < 12 => Verdict::NeedMore,
        v => v,
    }
}

fn message(d: &[u8], truncated: bool) -> Verdict {
    let Some(h) = d.get(..12) else {
        return Verdict::No;
    };
    let flags = be16(h, 2);
    let response = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0x0f;
    // Query, inverse query, status, notify, update, DSO (RFC 8490).
    if !matches!(opcode, 0 | 1 | 2 | 4 | 5 | 6) {
        return Verdict::No;
    }
    let (qd, an, ns, ar) = (be16(h, 4), be16(h, 6), be16(h, 8), be16(h, 10));
    // A query asks one question and carries no answers; counts beyond what fits are garbage.
    // An UPDATE (opcode 5) has one zone and any number of prerequisites and updates.
    let counts_ok = if response {
        qd <= 1 && an + ns + ar <= 512
    } else if opcode == 5 {
        qd == 1 && an + ns + ar <= 512
    } else {
        (qd == 1 || opcode == 6 && qd == 0) && an <= 1 && ns <= 16 && ar <= 4
    };
    if !counts_ok {
        return Verdict::No;
    }
    if qd == 0 {
        return Verdict::Match(Protocol::Dns);
    }
    match question(d, 12) {
        Some(true) => Verdict::Match(Protocol::Dns),
        None if truncated => Verdict::Match(Protocol::Dns),
        _ => Verdict::No,
    }
}

/// Walks the question's name and checks its class. `None`: the bytes ran out.
fn question(d: &[u8], mut i: usize) -> Option<bool> {
    let mut total = 0usize;
    loop {
        let len = usize::from(*d.get(i)?);
        match len {
            0 => break,
            // A compression pointer ends the name (rare in questions, legal).
            0xc0..=0xff => {
                d.get(i + 1)?;
                i += 1;
                break;
            }
            64..=0xbf => return Some(false),
            _ => {
                total += len + 1;
                if total > 255 {
                    return Some(false);
                }
                i += len + 1;
            }
        }
    }
    let class = d.get(i + 3..i + 5)?;
    let class = u16::from_be_bytes([class[0], class[1]]) & 0x7fff;
    // IN, CH, HS, NONE, ANY.
    Some(matches!(class, 1 | 3 | 4 | 254 | 255))
}
