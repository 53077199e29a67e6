//! A reader of classic pcap files (the libpcap format, either byte order, microsecond or
//! nanosecond timestamps) through one large buffer. Reading a file this way costs a fraction of
//! libpcap's two small reads per record, which matters when a capture of millions of packets is
//! classified; other formats (pcapng) are left to libpcap.
use std::io::{self, Read};

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const BUFFER: usize = 1 << 20;
/// Larger records than this mean a corrupt file (libpcap's own bound is 256 KiB).
const MAX_RECORD: usize = 256 * 1024;

/// Whether `head` (the file's first four bytes) starts a classic pcap file.
pub fn is_classic(head: &[u8]) -> bool {
    let Some(m) = head.get(..4) else {
        return false;
    };
    let le = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
    let be = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
    [le, be].iter().any(|m| *m == MAGIC_US || *m == MAGIC_NS)
}

pub struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    big_endian: bool,
    nanos: bool,
    pub linktype: u32,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl<R: Read> Reader<R> {
    /// Reads the file header.
    pub fn new(inner: R) -> io::Result<Reader<R>> {
        let mut r = Reader {
            inner,
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
            big_endian: false,
            nanos: false,
            linktype: 0,
        };
        if !r.fill(24)? {
            return Err(invalid("truncated pcap file header"));
        }
        let h = &r.buf[..24];
        let le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let be = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        (r.big_endian, r.nanos) = match (le, be) {
            (MAGIC_US, _) => (false, false),
            (MAGIC_NS, _) => (false, true),
            (_, MAGIC_US) => (true, false),
            (_, MAGIC_NS) => (true, true),
            _ => return Err(invalid("not a classic pcap file")),
        };
        // The upper bits of the link type carry FCS information, not the type.
        r.linktype = r.u32_at(20) & 0xffff;
        r.start = 24;
        Ok(r)
    }

    #[inline]
    fn u32_at(&self, at: usize) -> u32 {
        let b = [
            self.buf[at],
            self.buf[at + 1],
            self.buf[at + 2],
            self.buf[at + 3],
        ];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Makes `n` bytes from `start` available; false at the end of the file.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < n {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The next record: its timestamp in microseconds and its captured bytes; `None` at the
    /// end of the file. A record cut short by the end of the file is an error, as in libpcap.
    pub fn next_record(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        if !self.fill(16)? {
            return if self.end == self.start {
                Ok(None)
            } else {
                Err(invalid("truncated pcap record header"))
            };
        }
        let at = self.start;
        let (sec, frac, len) = (self.u32_at(at), self.u32_at(at + 4), self.u32_at(at + 8));
        let len = len as usize;
        if len > MAX_RECORD {
            return Err(invalid("pcap record larger than 256 KiB"));
        }
        if !self.fill(16 + len)? {
            return Err(invalid("truncated pcap record"));
        }
        let at = self.start;
        self.start += 16 + len;
        let frac_us = if self.nanos { frac / 1000 } else { frac };
        let ts = u64::from(sec) * 1_000_000 + u64::from(frac_us);
        Ok(Some((ts, &self.buf[at + 16..at + 16 + len])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(big_endian: bool, nanos: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = w(if nanos { MAGIC_NS } else { MAGIC_US }).to_vec();
        f.extend_from_slice(&[0, 2, 0, 4][..]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w(65535));
        f.extend_from_slice(&w(0x1000_0001));
        for (s, frac, data) in records {
            f.extend_from_slice(&w(*s));
            f.extend_from_slice(&w(*frac));
            f.extend_from_slice(&w(data.len() as u32));
            f.extend_from_slice(&w(data.len() as u32));
            f.extend_from_slice(data);
        }
        f
    }

    #[test]
    fn reads_both_byte_orders_and_resolutions() {
        for (be, ns) in [(false, false), (true, false), (false, true), (true, true)] {
            let frac = if ns { 5_000 } else { 5 };
            let f = file(be, ns, &[(7, frac, b"abc"), (8, 0, b"")]);
            assert!(is_classic(&f));
            let mut r = Reader::new(f.as_slice()).unwrap();
            assert_eq!(r.linktype, 1);
            assert_eq!(r.next_record().unwrap(), Some((7_000_005, &b"abc"[..])));
            assert_eq!(r.next_record().unwrap(), Some((8_000_000, &b""[..])));
            assert_eq!(r.next_record().unwrap(), None);
        }
    }

    #[test]
    fn truncated_and_oversized_records_are_errors() {
        let f = file(false, false, &[(1, 1, b"abcdef")]);
        let mut r = Reader::new(&f[..f.len() - 2]).unwrap();
        assert!(r.next_record().is_err());
        let mut r = Reader::new(&f[..30]).unwrap();
        assert!(r.next_record().is_err());
        let mut big = file(false, false, &[]);
        big.extend_from_slice(&[0; 8]);
        big.extend_from_slice(&(1u32 << 20).to_le_bytes());
        big.extend_from_slice(&[0; 4]);
        let mut r = Reader::new(big.as_slice()).unwrap();
        assert!(r.next_record().is_err());
        assert!(Reader::new(&b"\x0a\x0d\x0d\x0a"[..]).is_err());
        assert!(!is_classic(b"\x0a\x0d\x0d\x0a"));
    }
}
