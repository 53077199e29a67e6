//! A validating bencode walker (BEP 3) that allocates nothing.
//!
//! Used to recognise DHT messages (BEP 5): a whole datagram that is exactly one bencoded
//! dictionary with a one-letter message type `y` and a transaction id `t`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    /// The input ended inside a value.
    Short,
    /// Not bencode.
    Invalid,
}

const MAX_DEPTH: u8 = 16;

/// Skips one value starting at `i`; returns the index just after it.
pub(crate) fn skip_value(d: &[u8], i: usize, depth: u8) -> Result<usize, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::Invalid);
    }
    match d.get(i).copied() {
        None => Err(Error::Short),
        Some(b'i') => {
            let mut j = i + 1;
            if d.get(j) == Some(&b'-') {
                j += 1;
            }
            let start = j;
            while let Some(c) = d.get(j) {
                match c {
                    b'0'..=b'9' => j += 1,
                    b'e' if j > start && j - start <= 20 => return Ok(j + 1),
                    _ => return Err(Error::Invalid),
                }
            }
            Err(Error::Short)
        }
        Some(b'l') => {
            let mut j = i + 1;
            loop {
                match d.get(j) {
                    None => return Err(Error::Short),
                    Some(b'e') => return Ok(j + 1),
                    Some(_) => j = skip_value(d, j, depth + 1)?,
                }
            }
        }
        Some(b'd') => {
            let mut j = i + 1;
            loop {
                match d.get(j) {
                    None => return Err(Error::Short),
                    Some(b'e') => return Ok(j + 1),
                    Some(_) => {
                        let (_, after_key) = string(d, j)?;
                        j = skip_value(d, after_key, depth + 1)?;
                    }
                }
            }
        }
        Some(b'0'..=b'9') => string(d, i).map(|(_, end)| end),
        Some(_) => Err(Error::Invalid),
    }
}

/// Reads a byte string `<len>:<bytes>` at `i`; returns the bytes and the index after them.
pub(crate) fn string(d: &[u8], i: usize) -> Result<(&[u8], usize), Error> {
    let mut j = i;
    let mut len: usize = 0;
    loop {
        match d.get(j).copied() {
            None => return Err(Error::Short),
            Some(c @ b'0'..=b'9') if j - i < 7 => {
                len = len * 10 + usize::from(c - b'0');
                j += 1;
            }
            Some(b':') if j > i => break,
            Some(_) => return Err(Error::Invalid),
        }
    }
    let start = j + 1;
    match d.get(start..start + len) {
        Some(s) => Ok((s, start + len)),
        None => Err(Error::Short),
    }
}

/// What the top-level dictionary of a datagram says about being a DHT message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dht {
    /// A complete dictionary with `y` in q/r/e and a `t`, spanning the whole datagram.
    Message,
    /// A valid prefix with the DHT keys seen so far, cut by the capture length.
    Prefix,
    No,
}

pub(crate) fn dht(d: &[u8], truncated: bool) -> Dht {
    if d.first() != Some(&b'd') {
        return Dht::No;
    }
    let (mut has_y, mut has_t) = (false, false);
    let mut j = 1;
    loop {
        if d.get(j) == Some(&b'e') {
            return if has_y && has_t && j + 1 == d.len() {
                Dht::Message
            } else {
                Dht::No
            };
        }
        let step = string(d, j).and_then(|(key, after)| {
            let end = skip_value(d, after, 1)?;
            Ok((key, after, end))
        });
        match step {
            Ok((b"y", after, end)) => {
                has_y = matches!(d.get(after..end), Some(b"1:q" | b"1:r" | b"1:e"));
                if !has_y {
                    return Dht::No;
                }
                j = end;
            }
            Ok((key, _, end)) => {
                has_t |= key == b"t";
                j = end;
            }
            Err(Error::Short) if truncated && j > 1 => return Dht::Prefix,
            Err(_) => return Dht::No,
        }
    }
}
