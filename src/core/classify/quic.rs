//! QUIC: the long-header Initial packet of QUIC v1 (RFC 9000 §17.2.2), v2 (RFC 9369), the IETF
//! drafts, and Google QUIC in its three wire forms (Q043 and older, Q046, Q050/T05x).
use super::{Protocol, Verdict};

/// RFC 9000 §14.1: a client pads every datagram carrying an Initial to at least 1200 bytes;
/// Google QUIC pads its client hello the same way.
const MIN_CLIENT_DATAGRAM: usize = 1200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// v1, the drafts and Google's Q050/T05x: Initial is long-header type 0.
    Ietf,
    /// QUIC v2 renumbered the types: Initial is 1.
    V2,
    /// Q046: an IETF-looking long header with one byte of connection id lengths.
    Q046,
}

fn family(version: u32) -> Option<Family> {
    let b = version.to_be_bytes();
    match version {
        0x0000_0001 => Some(Family::Ietf),
        0x6b33_43cf => Some(Family::V2),
        // Drafts 0xff0000xx and Facebook's mvfst versions.
        0xff00_0000..=0xff00_00ff | 0xface_b001..=0xface_b00f => Some(Family::Ietf),
        // RFC 9000 §15: 0x?a?a?a?a versions are reserved to exercise version negotiation;
        // clients send them in otherwise ordinary Initials.
        v if v & 0x0f0f_0f0f == 0x0a0a_0a0a => Some(Family::Ietf),
        _ if b[1] == b'0' && b[2].is_ascii_digit() && b[3].is_ascii_digit() => {
            match (b[0], b[2], b[3]) {
                (b'Q', b'4', b'6') => Some(Family::Q046),
                (b'Q' | b'T', b'5'..=b'9', _) => Some(Family::Ietf),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Judges one UDP payload; `wire_len` is its length on the wire.
pub(crate) fn detect(d: &[u8], wire_len: usize) -> Verdict {
    let Some(&first) = d.first() else {
        return Verdict::No;
    };
    let padded = wire_len >= MIN_CLIENT_DATAGRAM;
    if first & 0x80 == 0 {
        return if gquic_public_header(d) {
            if padded {
                Verdict::Match(Protocol::Quic)
            } else {
                Verdict::Hint
            }
        } else {
            Verdict::No
        };
    }
    let Some(v) = d.get(1..5) else {
        return Verdict::No;
    };
    let Some(fam) = family(u32::from_be_bytes([v[0], v[1], v[2], v[3]])) else {
        return Verdict::No;
    };
    // The fixed bit is set in every version this detector knows.
    if first & 0x40 == 0 {
        return Verdict::No;
    }
    let kind = (first >> 4) & 3;
    let (initial, header_ok) = match fam {
        Family::Ietf => (kind == 0, ietf_lengths(d)),
        Family::V2 => (kind == 1, ietf_lengths(d)),
        Family::Q046 => (kind == 0, q046_lengths(d)),
    };
    match (header_ok, initial && padded) {
        (false, _) => Verdict::No,
        (true, true) => Verdict::Match(Protocol::Quic),
        (true, false) => Verdict::Hint,
    }
}

/// Connection id lengths are at most 20 bytes (RFC 9000 §17.2) and must fit in the datagram.
fn ietf_lengths(d: &[u8]) -> bool {
    let Some(&dcil) = d.get(5) else {
        return false;
    };
    let scil_at = 6 + usize::from(dcil);
    match d.get(scil_at) {
        Some(&scil) => dcil <= 20 && scil <= 20 && scil_at + 1 + usize::from(scil) <= d.len(),
        None => false,
    }
}

/// Q046 packs both lengths in one byte, each nibble zero or the length minus 3.
fn q046_lengths(d: &[u8]) -> bool {
    let Some(&cil) = d.get(5) else {
        return false;
    };
    let len = |n: u8| if n == 0 { 0 } else { usize::from(n) + 3 };
    6 + len(cil >> 4) + len(cil & 0x0f) <= d.len()
}

/// Google QUIC up to Q043: public flags with the version bit and an 8-byte connection id,
/// followed by a version tag `Q0dd`.
fn gquic_public_header(d: &[u8]) -> bool {
    let Some(&flags) = d.first() else {
        return false;
    };
    // Version present (0x01) and 8-byte connection id (0x08); 0x40 and 0x80 are unused.
    if flags & 0x09 != 0x09 || flags & 0xc0 != 0 {
        return false;
    }
    match d.get(9..13) {
        Some(&[b'Q', b'0', x, y]) => x.is_ascii_digit() && y.is_ascii_digit(),
        _ => false,
    }
}
