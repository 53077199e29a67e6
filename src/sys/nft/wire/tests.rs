use std::net::IpAddr;

use super::*;

/// A message as libmnl prints it: (type, bytes after the netlink header). Header lines of
/// attributes (`|len|flags|type|`) and data lines (`| xx xx xx xx |`) are turned back into bytes.
fn captured(name: &str) -> (u16, Vec<u8>) {
    let path = format!(
        "{}/tests/fixtures/dataplane/mnl/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut ty = 0;
    let mut out = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if line.contains("type | flags") {
            ty = cells[1].parse().unwrap();
        } else if line.contains("len |flags| type") {
            let len: u16 = cells[1].parse().unwrap();
            let mut t: u16 = cells[3].parse().unwrap();
            if cells[2].starts_with('N') {
                t |= NLA_F_NESTED;
            }
            out.extend_from_slice(&len.to_ne_bytes());
            out.extend_from_slice(&t.to_ne_bytes());
        } else if line.contains("data") || line.contains("extra header") {
            out.extend(
                cells[1]
                    .split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).unwrap()),
            );
        }
    }
    (ty, out)
}

/// The top-level attributes of a message body (after the nfgenmsg), each with its header.
fn top(body: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut at = 4;
    while at < body.len() {
        let len = usize::from(u16::from_ne_bytes([body[at], body[at + 1]]));
        let end = (at + align(len)).min(body.len());
        v.push(body[at..end].to_vec());
        at = end;
    }
    v
}

fn ours(op: &NftOp) -> (u16, Vec<u8>) {
    let mut w = Writer::default();
    w.op(op, 1);
    let ty = u16::from_ne_bytes([w.buf[4], w.buf[5]]);
    let len = u32::from_ne_bytes(w.buf[0..4].try_into().unwrap()) as usize;
    assert_eq!(len, w.buf.len(), "the header's length is the message's");
    (ty, w.buf[NLMSG_HDRLEN..].to_vec())
}

fn v4() -> IpAddr {
    "10.77.0.2".parse().unwrap()
}

fn v6() -> IpAddr {
    "fd77::2".parse().unwrap()
}

#[test]
fn messages_are_the_bytes_nft_sends() {
    let name = |s: &str| s.to_string();
    let cases = [
        (
            "add-quota",
            NftOp::AddQuota {
                name: name("p10_77_0_3"),
                limit: 50_000,
                used: 1000,
            },
        ),
        (
            "add-elem4",
            NftOp::AddElem {
                map: "peers4",
                key: v4(),
                quota: name("p10_77_0_2"),
            },
        ),
        (
            "add-elem6",
            NftOp::AddElem {
                map: "peers6",
                key: v6(),
                quota: name("p10_77_0_2"),
            },
        ),
        (
            "del-elem4",
            NftOp::DelElem {
                map: "peers4",
                key: v4(),
            },
        ),
        (
            "del-elem6",
            NftOp::DelElem {
                map: "peers6",
                key: v6(),
            },
        ),
        (
            "del-quota",
            NftOp::DelQuota {
                name: name("p10_77_0_2"),
            },
        ),
    ];
    for (file, op) in cases {
        let (want_ty, want) = captured(file);
        let (ty, got) = ours(&op);
        assert_eq!(ty, want_ty, "{file}");
        assert_eq!(got[..4], want[..4], "{file}: nfgenmsg");
        // nft also names the set by its id in its own cache (NFTA_SET_ELEM_LIST_SET_ID); the
        // kernel finds it by name first, so the message here leaves the id out.
        let set_id = |a: &Vec<u8>| ty == nft_type(NFT_MSG_NEWSETELEM) && a[2] == 4 && a[3] == 0;
        let want: Vec<_> = top(&want).into_iter().filter(|a| !set_id(a)).collect();
        assert_eq!(top(&got), want, "{file}");
    }
}

#[test]
fn a_batch_is_framed_and_only_the_last_operation_asks_for_an_ack() {
    let mut w = Writer::default();
    w.batch_begin(7);
    w.op(&NftOp::DelQuota { name: "p1".into() }, 8);
    w.op(&NftOp::DelQuota { name: "p2".into() }, 9);
    w.ack_last();
    w.batch_end(10);
    let msgs: Vec<(u16, u16, u32, Vec<u8>)> = {
        let mut v = Vec::new();
        let mut at = 0;
        while at < w.buf.len() {
            let b = &w.buf[at..];
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            let flags = u16::from_ne_bytes([b[6], b[7]]);
            let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
            v.push((ty, flags, seq, b[16..20].to_vec()));
            at += len;
        }
        v
    };
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[0], (0x10, NLM_F_REQUEST, 7, vec![0, 0, 0, 10]));
    assert_eq!(msgs[1].1 & NLM_F_ACK, 0);
    assert_eq!(msgs[2].1 & NLM_F_ACK, NLM_F_ACK);
    assert_eq!(msgs[3], (0x11, NLM_F_REQUEST, 10, vec![0, 0, 0, 10]));
}

/// An error message as the kernel sends it with `NETLINK_CAP_ACK` and `NETLINK_EXT_ACK`.
fn error_msg(errno: i32, seq: u32, text: Option<&str>) -> Vec<u8> {
    let mut w = Writer::default();
    let flags = if text.is_some() {
        NLM_F_CAPPED | NLM_F_ACK_TLVS
    } else {
        NLM_F_CAPPED
    };
    w.begin(NLMSG_ERROR, flags, seq, 0, 0);
    // `begin` wrote a 4-byte nfgenmsg: it is the errno's place.
    let at = w.buf.len() - 4;
    w.buf[at..].copy_from_slice(&(-errno).to_ne_bytes());
    let mut echoed = Writer::default();
    echoed.begin(nft_type(NFT_MSG_NEWOBJ), NLM_F_REQUEST, seq, 1, 0);
    echoed.end();
    w.buf.extend_from_slice(&echoed.buf[..NLMSG_HDRLEN]);
    if let Some(t) = text {
        w.attr_str(NLMSGERR_ATTR_MSG, t);
    }
    w.end();
    w.buf
}

fn quota_msg(table: &str, name: &str, seq: u32) -> Vec<u8> {
    let mut w = Writer::default();
    w.begin(nft_type(NFT_MSG_NEWOBJ), NLM_F_MULTI, seq, 1, 0);
    w.attr_str(NFTA_OBJ_TABLE, table);
    w.attr_str(NFTA_OBJ_NAME, name);
    w.attr(NFTA_OBJ_TYPE, &NFT_OBJECT_QUOTA.to_be_bytes());
    w.nest(NFTA_OBJ_DATA);
    w.attr(NFTA_QUOTA_BYTES, &50_000u64.to_be_bytes());
    w.attr(NFTA_QUOTA_FLAGS, &NFT_QUOTA_F_INV.to_be_bytes());
    w.attr(NFTA_QUOTA_CONSUMED, &1234u64.to_be_bytes());
    w.unnest();
    w.end();
    w.buf
}

#[test]
fn replies_are_read_back() {
    let mut buf = quota_msg("waylume", "p10_77_0_2", 5);
    buf.extend(quota_msg("other", "p10_77_0_3", 5));
    buf.extend(error_msg(0, 6, None));
    buf.extend(error_msg(2, 7, Some("No such file")));
    let mut w = Writer::default();
    w.begin(NLMSG_DONE, NLM_F_MULTI, 5, 0, 0);
    w.end();
    buf.extend(w.buf);
    let r = parse(&buf).unwrap();
    assert_eq!(
        r,
        vec![
            Reply::Quota(QuotaReply {
                seq: 5,
                name: "p10_77_0_2".into(),
                bytes: 50_000,
                used: 1234,
                inv: true,
            }),
            Reply::Other,
            Reply::Ack {
                seq: 6,
                errno: 0,
                msg: None
            },
            Reply::Ack {
                seq: 7,
                errno: 2,
                msg: Some("No such file".into())
            },
            Reply::Done { seq: 5 },
        ]
    );
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    let good = quota_msg("waylume", "p1", 1);
    // A length past the end, a length below the header, and every truncation.
    let mut long = good.clone();
    long[0..4].copy_from_slice(&1000u32.to_ne_bytes());
    assert!(parse(&long).is_err());
    let mut short = good.clone();
    short[0..4].copy_from_slice(&3u32.to_ne_bytes());
    assert!(parse(&short).is_err());
    for n in 0..good.len() {
        let _ = parse(&good[..n]);
    }
    let mut bad_attr = good.clone();
    // An attribute that claims more than the message holds.
    bad_attr[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 6].copy_from_slice(&500u16.to_ne_bytes());
    assert_eq!(parse(&bad_attr).unwrap(), vec![Reply::Other]);
}
