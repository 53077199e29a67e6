//! TLS: a handshake record (RFC 8446 §5.1, RFC 5246 §6.2) holding a ClientHello or ServerHello.
//!
//! The hello is validated field by field as far as the bytes go. A prefix too short to judge
//! asks for the next segment, so a ClientHello split over several packets is reassembled by
//! the caller and judged whole.
use super::{Protocol, Verdict};

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
/// Largest record: 2^14 bytes plus the expansion TLS 1.2 allows.
const MAX_RECORD: usize = (1 << 14) + 2048;

/// Progress through a hello: valid up to an offset, out of bytes too early, or invalid.
enum Step {
    Ok(usize),
    Short,
    Bad,
}

fn be16(d: &[u8], i: usize) -> Option<usize> {
    d.get(i..i + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn version_ok(major: u8, minor: u8) -> bool {
    major == 3 && minor <= 4
}

pub(crate) fn detect(d: &[u8]) -> Verdict {
    if d.first() != Some(&HANDSHAKE) {
        return Verdict::No;
    }
    // Record header: type, legacy version, length.
    if d.len() > 1 && d[1] != 3 || d.len() > 2 && d[2] > 4 {
        return Verdict::No;
    }
    let Some(rec_len) = be16(d, 3) else {
        return Verdict::NeedMore;
    };
    if !(4..=MAX_RECORD).contains(&rec_len) {
        return Verdict::No;
    }
    let hs = &d[5..];
    let Some(&kind) = hs.first() else {
        return Verdict::NeedMore;
    };
    if kind != CLIENT_HELLO && kind != SERVER_HELLO {
        return Verdict::No;
    }
    let Some(len) = hs
        .get(1..4)
        .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    else {
        return Verdict::NeedMore;
    };
    // A hello is at least version + random + two length bytes, and fits in 64 KiB.
    if !(38..=0xffff).contains(&len) {
        return Verdict::No;
    }
    // Only the part of the hello inside the stream we have, capped at its declared length.
    let body = &hs[4..hs.len().min(4 + len)];
    let step = if kind == CLIENT_HELLO {
        client_hello(body)
    } else {
        server_hello(body)
    };
    match step {
        Step::Ok(_) => Verdict::Match(Protocol::Tls),
        Step::Short if body.len() == len => Verdict::No,
        Step::Short => Verdict::NeedMore,
        Step::Bad => Verdict::No,
    }
}

/// Version, random and session id, common to both hellos; returns the offset after them.
fn preamble(b: &[u8]) -> Step {
    let (Some(&major), Some(&minor)) = (b.first(), b.get(1)) else {
        return Step::Short;
    };
    if !version_ok(major, minor) {
        return Step::Bad;
    }
    let Some(&sid) = b.get(34) else {
        return Step::Short;
    };
    if sid > 32 {
        return Step::Bad;
    }
    Step::Ok(35 + usize::from(sid))
}

fn client_hello(b: &[u8]) -> Step {
    let off = match preamble(b) {
        Step::Ok(o) => o,
        other => return other,
    };
    // Judged up to the presence of the cipher suites length: hellos with inconsistent later
    // fields (odd or zero cipher suite lengths) are broken TLS, but TLS all the same.
    match be16(b, off) {
        None => Step::Short,
        Some(_) => Step::Ok(off + 2),
    }
}

fn server_hello(b: &[u8]) -> Step {
    let off = match preamble(b) {
        Step::Ok(o) => o,
        other => return other,
    };
    // Cipher suite (2) and compression method (1, null in every TLS version still in use).
    match b.get(off + 2) {
        None => Step::Short,
        Some(0) => Step::Ok(off + 3),
        Some(_) => Step::Bad,
    }
}

/// A segment that starts with TLS records, as in a flow picked up after its handshake.
pub(crate) fn records(d: &[u8]) -> Verdict {
    let mut off = 0;
    let mut count = 0;
    while let Some(h) = d.get(off..off + 5) {
        // change_cipher_spec, alert, handshake, application_data; record versions 3.1 to 3.3.
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if !(20..=23).contains(&h[0])
            || h[1] != 3
            || !(1..=3).contains(&h[2])
            || len == 0
            || len > MAX_RECORD
        {
            return Verdict::No;
        }
        count += 1;
        off += 5 + len;
    }
    match (count, off == d.len()) {
        (0, _) => Verdict::No,
        // Records that end exactly with the segment: three fixed header bytes and a length that
        // lands on the end are as specific as a signature gets.
        (_, true) => Verdict::Match(Protocol::Tls),
        // The last record continues in the next segment; a header must not be split mid-way.
        (_, false) if off >= d.len() => Verdict::Hint,
        _ => Verdict::No,
    }
}

/// The server name (RFC 6066 §3) of a ClientHello record at the start of `d`, if the bytes at
/// hand reach it.
pub(crate) fn server_name(d: &[u8]) -> Option<&[u8]> {
    if d.first() != Some(&HANDSHAKE) || d.get(5) != Some(&CLIENT_HELLO) {
        return None;
    }
    let b = d.get(9..)?;
    let mut off = 35 + usize::from(*b.get(34)?);
    off += 2 + be16(b, off)?;
    off += 1 + usize::from(*b.get(off)?);
    let end = (off + 2 + be16(b, off)?).min(b.len());
    off += 2;
    while off + 4 <= end {
        let (kind, len) = (be16(b, off)?, be16(b, off + 2)?);
        if kind == 0 {
            // server_name_list: list length, then name type 0 (host_name), length, name.
            let e = b.get(off + 4..off + 4 + len)?;
            if e.get(2) != Some(&0) {
                return None;
            }
            let n = be16(e, 3)?;
            return e.get(5..5 + n);
        }
        off += 4 + len;
    }
    None
}
