//! Text protocols: HTTP/1.x requests and responses (RFC 9112 §3, §4) and the SSH protocol
//! version exchange (RFC 4253 §4.2).
use super::{Protocol, Verdict};

const METHODS: [&[u8]; 16] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
];

/// How much of a request line is searched for its end before the line is taken on trust.
const LINE_SCAN: usize = 2048;

pub(crate) fn http(d: &[u8]) -> Verdict {
    match d.first() {
        Some(b'H') if d.starts_with(b"HTTP/") || b"HTTP/".starts_with(d) => response(d),
        Some(b'A'..=b'Z') => request(d),
        _ => Verdict::No,
    }
}

/// `HTTP/1.x SP 3DIGIT`.
fn response(d: &[u8]) -> Verdict {
    const FORM: &[u8] = b"HTTP/1.? ???";
    for (i, &f) in FORM.iter().enumerate() {
        let Some(&c) = d.get(i) else {
            return Verdict::NeedMore;
        };
        let ok = match (i, f) {
            (7, _) => c == b'0' || c == b'1',
            (9, _) => (b'1'..=b'5').contains(&c),
            (_, b'?') => c.is_ascii_digit(),
            _ => c == f,
        };
        if !ok {
            return Verdict::No;
        }
    }
    Verdict::Match(Protocol::Http)
}

/// `METHOD SP request-target SP HTTP/1.x CRLF`.
fn request(d: &[u8]) -> Verdict {
    let Some(m) = METHODS
        .iter()
        .find(|m| d.starts_with(m) || m.starts_with(d))
    else {
        return Verdict::No;
    };
    if d.len() <= m.len() {
        return Verdict::NeedMore;
    }
    let target = &d[m.len()..];
    let scan = &target[..target.len().min(LINE_SCAN)];
    if let Some(eol) = scan.iter().position(|&c| c == b'\r' || c == b'\n') {
        // A whole request line ending in the version is HTTP whatever its target looks like
        // (scanners send targets such as `.`).
        let line = &target[..eol];
        let versioned = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
        return if versioned && line.len() > 9 {
            verdict_for(line)
        } else {
            Verdict::No
        };
    }
    // No line end yet: judge the target's form (origin, absolute, asterisk, or authority for
    // CONNECT); a long target that fills the segment is taken on that evidence.
    let form_ok = match target[0] {
        b'/' | b'*' => true,
        b'h' => target.starts_with(b"http") || b"http".starts_with(target),
        c => m == b"CONNECT " && c.is_ascii_alphanumeric(),
    };
    match (form_ok, scan.len() >= 64) {
        (false, _) => Verdict::No,
        (true, true) => verdict_for(target),
        (true, false) => Verdict::NeedMore,
    }
}

/// Tracker requests (BEP 3 announce, BEP 48 scrape) carry the torrent's `info_hash` in the query.
fn verdict_for(target: &[u8]) -> Verdict {
    let end = target
        .iter()
        .position(|&c| c == b' ')
        .unwrap_or(target.len());
    let t = &target[..end];
    match t.iter().position(|&c| c == b'?') {
        Some(q) if contains(&t[q..], b"info_hash=") => Verdict::Tracker,
        _ => Verdict::Match(Protocol::Http),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `SSH-protoversion-softwareversion`, where protoversion is digits, a dot, digits.
pub(crate) fn ssh(d: &[u8]) -> Verdict {
    let n = d.len().min(4);
    if d[..n] != b"SSH-"[..n] {
        return Verdict::No;
    }
    let mut dot = false;
    let mut digits = 0;
    for &c in d.iter().skip(4).take(8) {
        match c {
            b'0'..=b'9' => digits += 1,
            b'.' if !dot && digits > 0 => {
                dot = true;
                digits = 0;
            }
            b'-' if dot && digits > 0 => return Verdict::Match(Protocol::Ssh),
            _ => return Verdict::No,
        }
    }
    if d.len() < 12 {
        Verdict::NeedMore
    } else {
        Verdict::No
    }
}

/// The `Host` header of an HTTP request in the bytes at hand (header names ignore case).
pub(crate) fn host(d: &[u8]) -> Option<&[u8]> {
    let head_end = d
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(d.len());
    d[..head_end]
        .split(|&c| c == b'\n')
        .skip(1)
        .find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (name, value) = line.split_at(line.iter().position(|&c| c == b':')?);
            name.eq_ignore_ascii_case(b"host")
                .then(|| value[1..].trim_ascii())
        })
}
