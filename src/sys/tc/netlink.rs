//! A device's traffic control read over rtnetlink, into the same observed form as the `tc -j`
//! read-back (`super::parse_*`), without running `tc`. At 10,000 shaped peers with IPv6, `tc`
//! prints about 8 MB of JSON per device for every reconcile pass (qdiscs, classes, filters);
//! the kernel's dump carries the same facts in binary, and nothing has to print or parse text.
//!
//! Each value is read the way `tc` presents it, so both paths give equal observations (the lab
//! test `netlink::tc_reads_the_same_over_netlink_and_from_tc` compares them on real state).
use std::sync::Mutex;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::core::plan::{ObservedClass, ObservedDev, ObservedFilter, Rate};
use crate::sys::nft::wire::{attrs, cstr, u16_at, u32_at};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_GETQDISC: u16 = 38;
const RTM_GETTCLASS: u16 = 42;
const RTM_GETTFILTER: u16 = 46;
const IFLA_IFNAME: u16 = 3;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_LINK: u16 = 3;
const TCA_U32_DIVISOR: u16 = 4;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;

const TC_H_ROOT: u32 = 0xFFFF_FFFF;
/// `1:` and `ffff:` as a filter dump's parent.
const PARENT_ROOT: u32 = 0x0001_0000;
const PARENT_INGRESS: u32 = 0xFFFF_0000;
const ENODEV: i32 = 19;
/// A dump that raced a change (`NLM_F_DUMP_INTR`) is read again, this many times at most.
const DUMP_TRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum TcNetlinkError {
    #[error("rtnetlink: cannot open a socket: {0}")]
    Open(std::io::Error),
    #[error("rtnetlink: {0}")]
    Io(std::io::Error),
    #[error("rtnetlink: {what}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Refused { what: &'static str, errno: i32 },
    #[error("rtnetlink: a malformed answer to {0}")]
    Malformed(&'static str),
    #[error("rtnetlink: {0} kept changing while it was read")]
    Interrupted(&'static str),
}

type Result<T> = std::result::Result<T, TcNetlinkError>;

/// Reads one device's tc state; `None` when the device does not exist. The seam the data plane
/// reads through when it has one; without, it runs `tc -j` (as the unit tests' fixtures do).
pub trait TcRead: Send + Sync {
    fn observe_dev(&self, dev: &str) -> Result<Option<ObservedDev>>;
}

struct Inner {
    sock: Socket,
    seq: u32,
}

/// A route netlink socket of the network namespace it was opened in.
pub struct TcSocket {
    inner: Mutex<Inner>,
}

impl TcRead for TcSocket {
    fn observe_dev(&self, dev: &str) -> Result<Option<ObservedDev>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.observe_dev(dev)
    }
}

impl TcSocket {
    pub fn open() -> Result<TcSocket> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(TcNetlinkError::Open)?;
        sock.bind_auto().map_err(TcNetlinkError::Open)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(TcNetlinkError::Open)?;
        sock.set_cap_ack(true).map_err(TcNetlinkError::Open)?;
        Ok(TcSocket {
            inner: Mutex::new(Inner { sock, seq: 1 }),
        })
    }
}

/// `struct tcmsg`: family, ifindex, handle, parent, info.
#[derive(Debug, Clone, Copy, Default)]
struct TcMsg {
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

const TCMSG_LEN: usize = 20;

fn be32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn tcmsg(body: &[u8]) -> Option<TcMsg> {
    Some(TcMsg {
        ifindex: i32_at(body, 4)?,
        handle: u32_at(body, 8)?,
        parent: u32_at(body, 12)?,
        info: u32_at(body, 16)?,
    })
}

/// A classid as `tc` prints it: `1:2`, `1:`, `:2`, `root`, `none`.
pub fn classid(h: u32) -> String {
    match h {
        TC_H_ROOT => "root".into(),
        0 => "none".into(),
        _ if h >> 16 == 0 => format!(":{:x}", h & 0xffff),
        _ if h & 0xffff == 0 => format!("{:x}:", h >> 16),
        _ => format!("{:x}:{:x}", h >> 16, h & 0xffff),
    }
}

/// An ethertype as `tc` names a filter's protocol.
fn protocol(info: u32) -> String {
    match u16::from_be((info & 0xffff) as u16) {
        0x0800 => "ip".into(),
        0x86dd => "ipv6".into(),
        0x0003 => "all".into(),
        0x0806 => "arp".into(),
        p => format!("0x{p:04x}"),
    }
}

/// The kind and options of a tc message.
fn kind_options(body: &[u8]) -> (String, Option<&[u8]>) {
    let mut kind = String::new();
    let mut opts = None;
    for (t, v) in attrs(body.get(TCMSG_LEN..).unwrap_or_default()) {
        match t {
            TCA_KIND => kind = cstr(v),
            TCA_OPTIONS => opts = Some(v),
            _ => {}
        }
    }
    (kind, opts)
}

/// Minor of a handle `1:x`, if it belongs to our root.
fn our_minor(h: u32) -> Option<u16> {
    (h >> 16 == 1).then_some((h & 0xffff) as u16)
}

pub(crate) fn qdisc(body: &[u8], dev: &mut ObservedDev) -> Option<()> {
    let m = tcmsg(body)?;
    let (kind, opts) = kind_options(body);
    if m.parent == TC_H_ROOT {
        dev.root_htb = kind == "htb" && m.handle == PARENT_ROOT;
        dev.root_other = !dev.root_htb && m.handle != 0;
    } else if kind == "ingress" {
        dev.ingress = true;
    } else if let Some(minor) = our_minor(m.parent) {
        // A fifo's options are `struct tc_fifo_qopt`, not attributes: its limit comes first.
        let limit = match kind.as_str() {
            "pfifo" | "bfifo" | "pfifo_head_drop" => opts.and_then(|o| u32_at(o, 0)).map(u64::from),
            _ => None,
        };
        dev.leaves.insert(minor, (kind, limit));
    }
    Some(())
}

pub(crate) fn class(body: &[u8], dev: &mut ObservedDev) -> Option<()> {
    let m = tcmsg(body)?;
    let Some(minor) = our_minor(m.handle) else {
        return Some(());
    };
    let (_, opts) = kind_options(body);
    let (mut rate, mut ceil) = (0u64, 0u64);
    for (t, v) in attrs(opts.unwrap_or_default()) {
        match t {
            // `struct tc_htb_opt`: two `tc_ratespec`s of 12 bytes, each with its rate (bytes
            // per second, 32 bits) at offset 8; the 64-bit attributes carry larger rates.
            TCA_HTB_PARMS => {
                rate = rate.max(u64::from(u32_at(v, 8)?));
                ceil = ceil.max(u64::from(u32_at(v, 20)?));
            }
            TCA_HTB_RATE64 => rate = u64::from_ne_bytes(v.get(..8)?.try_into().ok()?),
            TCA_HTB_CEIL64 => ceil = u64::from_ne_bytes(v.get(..8)?.try_into().ok()?),
            _ => {}
        }
    }
    let parent = (m.parent != TC_H_ROOT && m.parent != 0).then(|| classid(m.parent));
    dev.classes.insert(
        minor,
        ObservedClass {
            parent,
            rate: Rate::Bytes(rate),
            ceil: Rate::Bytes(ceil),
        },
    );
    Some(())
}

/// One entry of a filter dump under `1:`: a priority's header (no options), a hash table or
/// a filter, as `super::parse_filters` reads them from `tc -j`.
pub(crate) fn filter(body: &[u8], dev: &mut ObservedDev) -> Option<()> {
    let m = tcmsg(body)?;
    let (kind, opts) = kind_options(body);
    let prio = dev.prios.entry((m.info >> 16) as u16).or_default();
    prio.kind = kind;
    prio.protocol = protocol(m.info);
    let Some(opts) = opts else { return Some(()) };
    let (ht, bkt, node) = (
        (m.handle >> 20) as u16,
        ((m.handle >> 12) & 0xff) as u8,
        (m.handle & 0xfff) as u16,
    );
    let mut f = ObservedFilter::default();
    for (t, v) in attrs(opts) {
        match t {
            TCA_U32_DIVISOR => {
                if ht & 0x800 != 0 {
                    prio.root = Some(ht);
                } else {
                    prio.tables.insert(ht, u32_at(v, 0)?);
                }
                return Some(());
            }
            TCA_U32_CLASSID => f.flowid = Some(classid(u32_at(v, 0)?)),
            TCA_U32_LINK => f.link = Some((u32_at(v, 0)? >> 20) as u16),
            // `struct tc_u32_sel`: nkeys at 2, hoff at 10, hmask at 12, then the keys of 16
            // bytes each (mask, value, offset, offmask); mask and value in network order.
            TCA_U32_SEL => {
                let nkeys = usize::from(*v.get(2)?);
                let hoff = i32::from(u16_at(v, 10)? as i16);
                let hmask = be32_at(v, 12)?;
                if hmask != 0 || hoff != 0 {
                    f.hash = Some((hmask, hoff));
                }
                for k in 0..nkeys {
                    let at = 16 + 16 * k;
                    f.keys
                        .push((be32_at(v, at + 4)?, be32_at(v, at)?, i32_at(v, at + 8)?));
                }
            }
            _ => {}
        }
    }
    prio.filters.insert((ht, bkt, node), f);
    Some(())
}

/// The ifindex each mirred action of an ingress filter redirects to.
fn redirect_targets(body: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let (_, opts) = kind_options(body);
    for (t, acts) in attrs(opts.unwrap_or_default()) {
        if t != TCA_U32_ACT {
            continue;
        }
        for (_, act) in attrs(acts) {
            let mut kind = String::new();
            let mut target = None;
            for (t, v) in attrs(act) {
                match t {
                    TCA_ACT_KIND => kind = cstr(v),
                    // `struct tc_mirred`: tc_gen (20 bytes), eaction, ifindex.
                    TCA_ACT_OPTIONS => {
                        target = attrs(v)
                            .find(|(t, _)| *t == TCA_MIRRED_PARMS)
                            .and_then(|(_, p)| u32_at(p, 24));
                    }
                    _ => {}
                }
            }
            if kind == "mirred"
                && let Some(i) = target
            {
                out.push(i);
            }
        }
    }
    out
}

/// One request: its name for errors, type, flags beyond `NLM_F_REQUEST`, body, and the type
/// of the answers wanted.
#[derive(Clone, Copy)]
struct Request<'a> {
    what: &'static str,
    ty: u16,
    flags: u16,
    body: &'a [u8],
    want: u16,
}

impl<'a> Request<'a> {
    fn link(body: &'a [u8]) -> Request<'a> {
        Request {
            what: "link",
            ty: RTM_GETLINK,
            flags: NLM_F_ACK,
            body,
            want: RTM_NEWLINK,
        }
    }
}

impl Inner {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends one request; returns the bodies of the answers of type `want`, until the dump's
    /// end or the acknowledgement. `Err(Refused)` carries the kernel's errno.
    fn request(&mut self, r: &Request) -> Result<Vec<Vec<u8>>> {
        for _ in 0..DUMP_TRIES {
            if let Some(answers) = self.request_once(r)? {
                return Ok(answers);
            }
        }
        Err(TcNetlinkError::Interrupted(r.what))
    }

    /// `None`: the dump raced a change and must be read again.
    fn request_once(&mut self, r: &Request) -> Result<Option<Vec<Vec<u8>>>> {
        let Request {
            what,
            ty,
            flags,
            body,
            want,
        } = *r;
        // Left over from an earlier call that failed half-way: not ours to read.
        let mut scratch = Vec::with_capacity(64 * 1024);
        while self.sock.recv(&mut scratch, libc::MSG_DONTWAIT).is_ok() {
            scratch.clear();
        }
        let seq = self.next_seq();
        let len = NLMSG_HDRLEN + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        self.sock.send(&msg, 0).map_err(TcNetlinkError::Io)?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let mut buf = Vec::with_capacity(256 * 1024);
            self.sock.recv(&mut buf, 0).map_err(TcNetlinkError::Io)?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= buf.len() {
                let bad = || TcNetlinkError::Malformed(what);
                let n = u32_at(&buf, at).ok_or_else(bad)? as usize;
                let t = u16_at(&buf, at + 4).ok_or_else(bad)?;
                let f = u16_at(&buf, at + 6).ok_or_else(bad)?;
                let s = u32_at(&buf, at + 8).ok_or_else(bad)?;
                if n < NLMSG_HDRLEN || at + n > buf.len() {
                    return Err(bad());
                }
                let b = &buf[at + NLMSG_HDRLEN..at + n];
                at += (n + 3) & !3;
                if s != seq {
                    continue;
                }
                interrupted |= f & NLM_F_DUMP_INTR != 0;
                match t {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let errno = -i32_at(b, 0).unwrap_or(0);
                        if errno != 0 {
                            return Err(TcNetlinkError::Refused { what, errno });
                        }
                        return Ok((!interrupted).then_some(out));
                    }
                    _ if t == want => out.push(b.to_vec()),
                    _ => {}
                }
            }
        }
    }

    fn tc_dump(
        &mut self,
        what: &'static str,
        ty: u16,
        ifindex: i32,
        parent: u32,
    ) -> Result<Vec<Vec<u8>>> {
        let mut body = vec![0u8; TCMSG_LEN];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body[12..16].copy_from_slice(&parent.to_ne_bytes());
        // The kernel answers with the type one below the request's (RTM_NEW* = RTM_GET* - 2).
        self.request(&Request {
            what,
            ty,
            flags: NLM_F_DUMP,
            body: &body,
            want: ty - 2,
        })
    }

    /// The device's ifindex; `None` when it does not exist.
    fn ifindex(&mut self, name: &str) -> Result<Option<i32>> {
        let mut body = vec![0u8; 16];
        let attr_len = 4 + name.len() + 1;
        body.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        body.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.resize((body.len() + 3) & !3, 0);
        match self.request(&Request::link(&body)) {
            Ok(links) => Ok(links.first().and_then(|l| i32_at(l, 4))),
            Err(TcNetlinkError::Refused { errno: ENODEV, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A device's name by ifindex, as `tc` shows a redirect's target (`if<n>` when gone).
    fn name(&mut self, ifindex: u32) -> Result<String> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        match self.request(&Request::link(&body)) {
            Ok(links) => Ok(links
                .first()
                .and_then(|l| attrs(l.get(16..)?).find(|(t, _)| *t == IFLA_IFNAME))
                .map(|(_, v)| cstr(v))
                .unwrap_or_else(|| format!("if{ifindex}"))),
            Err(TcNetlinkError::Refused { errno: ENODEV, .. }) => Ok(format!("if{ifindex}")),
            Err(e) => Err(e),
        }
    }

    fn observe_dev(&mut self, dev: &str) -> Result<Option<ObservedDev>> {
        let Some(ifindex) = self.ifindex(dev)? else {
            return Ok(None);
        };
        let mut o = ObservedDev::default();
        for q in self.tc_dump("qdiscs", RTM_GETQDISC, ifindex, 0)? {
            // The qdisc dump covers every device.
            if tcmsg(&q).is_some_and(|m| m.ifindex == ifindex) {
                qdisc(&q, &mut o).ok_or(TcNetlinkError::Malformed("a qdisc"))?;
            }
        }
        if o.root_htb {
            for c in self.tc_dump("classes", RTM_GETTCLASS, ifindex, 0)? {
                class(&c, &mut o).ok_or(TcNetlinkError::Malformed("a class"))?;
            }
            for f in self.tc_dump("filters", RTM_GETTFILTER, ifindex, PARENT_ROOT)? {
                filter(&f, &mut o).ok_or(TcNetlinkError::Malformed("a filter"))?;
            }
        }
        if o.ingress {
            let mut targets = Vec::new();
            for f in self.tc_dump("ingress filters", RTM_GETTFILTER, ifindex, PARENT_INGRESS)? {
                targets.extend(redirect_targets(&f));
            }
            for t in targets {
                let name = self.name(t)?;
                o.redirects.push(name);
            }
        }
        Ok(Some(o))
    }
}

#[cfg(test)]
mod tests;
