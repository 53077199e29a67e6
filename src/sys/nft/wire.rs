//! nf_tables netlink messages, built and read as bytes: the few a per-peer change needs (a
//! named quota, an element of an address → quota map) inside one batch, and the quota read-back.
//! Layouts follow `linux/netfilter/nf_tables.h`; nf_tables integers are big-endian, the netlink
//! headers are in host order. Nothing here touches a socket.
use std::net::IpAddr;

use crate::core::plan::{NftOp, TABLE};

const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
/// On an error message: only the header of the message was echoed (`NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// On an error message: attributes (the kernel's reason) follow the echoed message.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_INET: u8 = 1;

pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFT_MSG_NEWOBJ: u16 = 18;
pub const NFT_MSG_GETOBJ: u16 = 19;
pub const NFT_MSG_DELOBJ: u16 = 20;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_OBJREF: u16 = 9;
const NFTA_DATA_VALUE: u16 = 1;

const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_QUOTA: u32 = 2;
const NFTA_QUOTA_BYTES: u16 = 1;
const NFTA_QUOTA_FLAGS: u16 = 2;
const NFTA_QUOTA_CONSUMED: u16 = 4;
const NFT_QUOTA_F_INV: u32 = 1;

/// The full message type of an nf_tables message.
pub fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A buffer of netlink messages under construction.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
    msg: Option<usize>,
    /// Where the last finished message starts.
    last: Option<usize>,
    nests: Vec<usize>,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

impl Writer {
    /// Starts a message: netlink header, then the nfgenmsg (family, version 0, resource id).
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.msg = Some(self.buf.len());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    pub fn end(&mut self) {
        if let Some(start) = self.msg.take() {
            let len = u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX);
            self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
            self.last = Some(start);
        }
    }

    /// Asks the kernel to acknowledge the last finished message.
    pub fn ack_last(&mut self) {
        if let Some(start) = self.last
            && let Some(f) = u16_at(&self.buf, start + 6)
        {
            self.buf[start + 6..start + 8].copy_from_slice(&(f | NLM_F_ACK).to_ne_bytes());
        }
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = u16::try_from(NLA_HDRLEN + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// A NUL-terminated string, as the kernel's `nla_strcmp` and libnftnl expect.
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    pub fn nest(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.attr(ty | NLA_F_NESTED, &[]);
    }

    pub fn unnest(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    pub fn batch_begin(&mut self, seq: u32) {
        self.begin(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        self.end();
    }

    pub fn batch_end(&mut self, seq: u32) {
        self.begin(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        self.end();
    }

    /// One operation of a batch as one message.
    pub fn op(&mut self, op: &NftOp, seq: u32) {
        let (ty, create) = match op {
            NftOp::AddQuota { .. } => (NFT_MSG_NEWOBJ, true),
            NftOp::DelQuota { .. } => (NFT_MSG_DELOBJ, false),
            NftOp::AddElem { .. } => (NFT_MSG_NEWSETELEM, true),
            NftOp::DelElem { .. } => (NFT_MSG_DELSETELEM, false),
        };
        let create = if create { NLM_F_CREATE } else { 0 };
        self.begin(nft_type(ty), NLM_F_REQUEST | create, seq, NFPROTO_INET, 0);
        match op {
            NftOp::AddQuota { name, limit, used } => {
                self.obj_head(name);
                self.nest(NFTA_OBJ_DATA);
                self.attr(NFTA_QUOTA_BYTES, &limit.to_be_bytes());
                self.attr(NFTA_QUOTA_CONSUMED, &used.to_be_bytes());
                self.attr(NFTA_QUOTA_FLAGS, &0u32.to_be_bytes());
                self.unnest();
            }
            NftOp::DelQuota { name } => {
                self.obj_head(name);
                self.nest(NFTA_OBJ_DATA);
                self.unnest();
            }
            NftOp::AddElem { map, key, quota } => self.elem(map, *key, Some(quota)),
            NftOp::DelElem { map, key } => self.elem(map, *key, None),
        }
        self.end();
    }

    fn obj_head(&mut self, name: &str) {
        self.attr_str(NFTA_OBJ_TABLE, TABLE);
        self.attr_str(NFTA_OBJ_NAME, name);
        self.attr(NFTA_OBJ_TYPE, &NFT_OBJECT_QUOTA.to_be_bytes());
    }

    fn elem(&mut self, map: &str, key: IpAddr, quota: Option<&String>) {
        self.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        self.attr_str(NFTA_SET_ELEM_LIST_SET, map);
        self.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        self.nest(NFTA_LIST_ELEM);
        self.nest(NFTA_SET_ELEM_KEY);
        match key {
            IpAddr::V4(a) => self.attr(NFTA_DATA_VALUE, &a.octets()),
            IpAddr::V6(a) => self.attr(NFTA_DATA_VALUE, &a.octets()),
        }
        self.unnest();
        if let Some(q) = quota {
            self.attr_str(NFTA_SET_ELEM_OBJREF, q);
        }
        self.unnest();
        self.unnest();
    }

    /// A request for one quota (`name`) or, with `None`, a dump of every quota of the table.
    pub fn get_quota(&mut self, name: Option<&str>, seq: u32) {
        let flags = match name {
            Some(_) => NLM_F_REQUEST | NLM_F_ACK,
            None => NLM_F_REQUEST | NLM_F_DUMP,
        };
        self.begin(nft_type(NFT_MSG_GETOBJ), flags, seq, NFPROTO_INET, 0);
        self.attr_str(NFTA_OBJ_TABLE, TABLE);
        if let Some(n) = name {
            self.attr_str(NFTA_OBJ_NAME, n);
        }
        self.attr(NFTA_OBJ_TYPE, &NFT_OBJECT_QUOTA.to_be_bytes());
        self.end();
    }
}

/// One message read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An acknowledgement (`errno` 0) or an error for the message with `seq`.
    Ack {
        seq: u32,
        errno: i32,
        msg: Option<String>,
    },
    Done {
        seq: u32,
    },
    /// A quota of our table: name, limit, used, whether it is an `over` quota.
    Quota(QuotaReply),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaReply {
    pub seq: u32,
    pub name: String,
    pub bytes: u64,
    pub used: u64,
    pub inv: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed netlink message at byte {0}")]
pub struct Malformed(pub usize);

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The attributes in `b` as (type without flags, payload).
pub fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, at)?);
        let ty = u16_at(b, at + 2)? & 0x3fff;
        let payload = b.get(at + NLA_HDRLEN..at + len.max(NLA_HDRLEN))?;
        at += align(len.max(NLA_HDRLEN));
        Some((ty, payload))
    })
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

pub(crate) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Splits a buffer the kernel sent into messages.
pub fn parse(buf: &[u8]) -> Result<Vec<Reply>, Malformed> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or(Malformed(at))? as usize;
        let ty = u16_at(buf, at + 4).ok_or(Malformed(at))?;
        let flags = u16_at(buf, at + 6).ok_or(Malformed(at))?;
        let seq = u32_at(buf, at + 8).ok_or(Malformed(at))?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(Malformed(at));
        }
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        out.push(match ty {
            NLMSG_ERROR => error(body, flags).ok_or(Malformed(at))?,
            NLMSG_DONE => Reply::Done { seq },
            t if t == nft_type(NFT_MSG_NEWOBJ) => quota(body, seq).unwrap_or(Reply::Other),
            _ => Reply::Other,
        });
        at += align(len);
    }
    Ok(out)
}

/// `struct nlmsgerr`: a negative errno, the header of the message it answers, then (with
/// `NLM_F_ACK_TLVS`) attributes; with `NETLINK_CAP_ACK` the echoed payload is left out.
fn error(body: &[u8], flags: u16) -> Option<Reply> {
    let errno = i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?);
    let seq = u32_at(body, 4 + 8)?;
    let mut msg = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let orig_len = u32_at(body, 4)? as usize;
        let skip = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            align(orig_len)
        };
        let tlvs = body.get(4 + skip..).unwrap_or_default();
        msg = attrs(tlvs)
            .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
            .map(|(_, v)| cstr(v));
    }
    Some(Reply::Ack {
        seq,
        errno: -errno,
        msg,
    })
}

fn quota(body: &[u8], seq: u32) -> Option<Reply> {
    let mut r = QuotaReply {
        seq,
        name: String::new(),
        bytes: 0,
        used: 0,
        inv: false,
    };
    let mut table = None;
    let mut ty = None;
    for (t, v) in attrs(body.get(4..)?) {
        match t {
            NFTA_OBJ_TABLE => table = Some(cstr(v)),
            NFTA_OBJ_NAME => r.name = cstr(v),
            NFTA_OBJ_TYPE => ty = Some(u32::from_be_bytes(v.try_into().ok()?)),
            NFTA_OBJ_DATA => {
                for (qt, qv) in attrs(v) {
                    match qt {
                        NFTA_QUOTA_BYTES => r.bytes = be64(qv)?,
                        NFTA_QUOTA_CONSUMED => r.used = be64(qv)?,
                        NFTA_QUOTA_FLAGS => {
                            r.inv = u32::from_be_bytes(qv.try_into().ok()?) & NFT_QUOTA_F_INV != 0
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (table.as_deref() == Some(TABLE) && ty == Some(NFT_OBJECT_QUOTA)).then_some(Reply::Quota(r))
}

#[cfg(test)]
mod tests;
