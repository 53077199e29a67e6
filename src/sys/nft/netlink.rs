//! The nf_tables netlink socket: per-peer operations as one batch (one transaction) and quota
//! read-back, without running `nft`, whose every run loads the whole table into its cache first
//! (tens of milliseconds at 10,000 peers). Whole-table work (create, reconcile) stays `nft -f`.
use std::collections::BTreeMap;
use std::sync::Mutex;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::wire::{self, Reply, Writer};
use crate::core::plan::{NftOp, ObservedQuota};

/// A batch larger than this is split into several transactions: the kernel refuses a single
/// send larger than the socket's send buffer (208 KiB by default).
const MAX_BATCH: usize = 64 * 1024;
const ENOENT: i32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("nf_tables netlink: cannot open a socket: {0}")]
    Open(std::io::Error),
    #[error("nf_tables netlink: {0}")]
    Io(std::io::Error),
    #[error("nf_tables netlink: `{op}`: {}{}", std::io::Error::from_raw_os_error(*.errno), .msg.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused {
        op: String,
        errno: i32,
        msg: Option<String>,
    },
    #[error("nf_tables netlink: the kernel did not acknowledge the batch")]
    NoAck,
    #[error("nf_tables netlink: {0}")]
    Malformed(#[from] wire::Malformed),
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// Per-peer nftables work: a batch of operations and quota reads. The seam to the kernel that
/// `NfSocket` implements; tests give a fake.
pub trait NftLink: Send + Sync {
    /// Applies `ops` in order, in as few transactions as the socket allows.
    fn apply(&self, ops: &[NftOp]) -> Result<()>;
    /// One quota of the table, `None` if it (or the table) does not exist.
    fn quota(&self, name: &str) -> Result<Option<ObservedQuota>>;
    /// Every quota of the table by name; empty when the table does not exist.
    fn quotas(&self) -> Result<BTreeMap<String, ObservedQuota>>;
}

impl NftLink for NfSocket {
    fn apply(&self, ops: &[NftOp]) -> Result<()> {
        NfSocket::apply(self, ops)
    }
    fn quota(&self, name: &str) -> Result<Option<ObservedQuota>> {
        NfSocket::quota(self, name)
    }
    fn quotas(&self) -> Result<BTreeMap<String, ObservedQuota>> {
        NfSocket::quotas(self)
    }
}

struct Inner {
    sock: Socket,
    seq: u32,
}

/// A netlink socket of the network namespace it was opened in.
pub struct NfSocket {
    inner: Mutex<Inner>,
}

impl NfSocket {
    pub fn open() -> Result<NfSocket> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Open)?;
        sock.bind_auto().map_err(NetlinkError::Open)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        // Errors echo only the header, and carry the kernel's reason as text.
        sock.set_cap_ack(true).map_err(NetlinkError::Open)?;
        sock.set_ext_ack(true).map_err(NetlinkError::Open)?;
        Ok(NfSocket {
            inner: Mutex::new(Inner { sock, seq: 1 }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `ops` in order, in one transaction per 64 KiB of messages (about 700 operations).
    /// Each transaction is all or nothing; on an error the ones before it stay applied.
    pub fn apply(&self, ops: &[NftOp]) -> Result<()> {
        let mut inner = self.lock();
        let mut start = 0;
        while start < ops.len() {
            start += inner.batch(&ops[start..])?;
        }
        Ok(())
    }

    pub fn quota(&self, name: &str) -> Result<Option<ObservedQuota>> {
        let mut inner = self.lock();
        let seq = inner.next_seq();
        let mut w = Writer::default();
        w.get_quota(Some(name), seq);
        inner.send(&w.buf)?;
        let mut found = None;
        loop {
            for r in inner.recv(true)? {
                match r {
                    Reply::Quota(q) if q.seq == seq && q.name == name => found = Some(observed(&q)),
                    Reply::Ack { seq: s, errno, .. } if s == seq => {
                        return match errno {
                            0 => Ok(found),
                            ENOENT => Ok(None),
                            _ => Err(refused(format!("get quota {name}"), errno, None)),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn quotas(&self) -> Result<BTreeMap<String, ObservedQuota>> {
        let mut inner = self.lock();
        let seq = inner.next_seq();
        let mut w = Writer::default();
        w.get_quota(None, seq);
        inner.send(&w.buf)?;
        let mut out = BTreeMap::new();
        loop {
            for r in inner.recv(true)? {
                match r {
                    Reply::Quota(q) if q.seq == seq => {
                        out.insert(q.name.clone(), observed(&q));
                    }
                    Reply::Done { seq: s } if s == seq => return Ok(out),
                    Reply::Ack { seq: s, errno, .. } if s == seq => {
                        return match errno {
                            0 | ENOENT => Ok(out),
                            _ => Err(refused("list quotas".into(), errno, None)),
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

fn observed(q: &wire::QuotaReply) -> ObservedQuota {
    ObservedQuota {
        bytes: q.bytes,
        used: q.used,
        inv: q.inv,
    }
}

fn refused(op: String, errno: i32, msg: Option<String>) -> NetlinkError {
    NetlinkError::Refused { op, errno, msg }
}

impl Inner {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&mut self, buf: &[u8]) -> Result<()> {
        // Left over from an earlier call that failed half-way: not ours to read.
        while !self.recv(false)?.is_empty() {}
        self.sock.send(buf, 0).map_err(NetlinkError::Io)?;
        Ok(())
    }

    /// One read; `wait`: block until something arrives, else an empty answer when nothing is
    /// queued.
    fn recv(&mut self, wait: bool) -> Result<Vec<Reply>> {
        let mut buf = Vec::with_capacity(256 * 1024);
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        match self.sock.recv(&mut buf, flags) {
            Ok(_) => Ok(wire::parse(&buf)?),
            Err(e) if !wait && e.kind() == std::io::ErrorKind::WouldBlock => Ok(Vec::new()),
            Err(e) => Err(NetlinkError::Io(e)),
        }
    }

    /// Sends as many of `ops` as fit in one batch; returns how many.
    fn batch(&mut self, ops: &[NftOp]) -> Result<usize> {
        let mut w = Writer::default();
        let first = self.next_seq();
        w.batch_begin(first);
        let mut sent = Vec::new();
        for op in ops {
            if w.buf.len() > MAX_BATCH {
                break;
            }
            let seq = self.next_seq();
            w.op(op, seq);
            sent.push((seq, op));
        }
        // Only the last operation asks for an acknowledgement: errors come regardless, and
        // thousands of acknowledgements would overflow the receive buffer.
        w.ack_last();
        let last = sent.last().map(|(s, _)| *s).unwrap_or(first);
        let end = self.next_seq();
        w.batch_end(end);
        self.send(&w.buf)?;
        // The kernel handles a batch while `send` runs: every answer is queued by now.
        let mut acked = false;
        loop {
            let replies = self.recv(false)?;
            if replies.is_empty() {
                break;
            }
            for r in replies {
                let Reply::Ack { seq, errno, msg } = r else {
                    continue;
                };
                if !(first..=end).contains(&seq) {
                    continue;
                }
                if errno != 0 {
                    let op = sent
                        .iter()
                        .find(|(s, _)| *s == seq)
                        .map_or_else(|| "batch".to_string(), |(_, o)| o.render());
                    return Err(refused(op, errno, msg));
                }
                acked |= seq == last;
            }
        }
        if !acked {
            return Err(NetlinkError::NoAck);
        }
        Ok(sent.len())
    }
}
