use std::collections::BTreeMap;

use super::*;

fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize((v.len() + 3) & !3, 0);
    v
}

fn nested(ty: u16, inner: &[Vec<u8>]) -> Vec<u8> {
    attr(ty | 0x8000, &inner.concat())
}

fn msg(handle: u32, parent: u32, info: u32, kind: &str, options: Option<Vec<u8>>) -> Vec<u8> {
    let mut b = vec![0u8; TCMSG_LEN];
    b[4..8].copy_from_slice(&7i32.to_ne_bytes());
    b[8..12].copy_from_slice(&handle.to_ne_bytes());
    b[12..16].copy_from_slice(&parent.to_ne_bytes());
    b[16..20].copy_from_slice(&info.to_ne_bytes());
    b.extend(attr(TCA_KIND, format!("{kind}\0").as_bytes()));
    if let Some(o) = options {
        b.extend(o);
    }
    b
}

fn htb_parms(rate: u32, ceil: u32) -> Vec<u8> {
    let mut p = vec![0u8; 44];
    p[8..12].copy_from_slice(&rate.to_ne_bytes());
    p[20..24].copy_from_slice(&ceil.to_ne_bytes());
    attr(TCA_HTB_PARMS, &p)
}

/// `tcm_info` of a filter: priority in the high half, the ethertype in network order below.
fn info(prio: u16, ethertype: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(u16::from_ne_bytes(ethertype.to_be_bytes()))
}

fn sel(hmask: u32, hoff: i16, keys: &[(u32, u32, i32)]) -> Vec<u8> {
    let mut s = vec![0u8; 16];
    s[0] = 1;
    s[2] = keys.len() as u8;
    s[10..12].copy_from_slice(&hoff.to_ne_bytes());
    s[12..16].copy_from_slice(&hmask.to_be_bytes());
    for (val, mask, off) in keys {
        s.extend_from_slice(&mask.to_be_bytes());
        s.extend_from_slice(&val.to_be_bytes());
        s.extend_from_slice(&off.to_ne_bytes());
        s.extend_from_slice(&0i32.to_ne_bytes());
    }
    attr(TCA_U32_SEL, &s)
}

#[test]
fn classids_and_protocols_read_as_tc_prints_them() {
    assert_eq!(classid(0x0001_0002), "1:2");
    assert_eq!(classid(0x0001_0000), "1:");
    assert_eq!(classid(0x0000_0102), ":102");
    assert_eq!(classid(TC_H_ROOT), "root");
    assert_eq!(classid(0), "none");
    assert_eq!(protocol(info(1, 0x0800)), "ip");
    assert_eq!(protocol(info(2, 0x86dd)), "ipv6");
    assert_eq!(protocol(info(1, 0x0003)), "all");
    assert_eq!(protocol(info(1, 0x88cc)), "0x88cc");
}

#[test]
fn qdiscs_give_the_root_the_ingress_and_each_leaf_with_its_limit() {
    let mut dev = ObservedDev::default();
    qdisc(&msg(PARENT_ROOT, TC_H_ROOT, 0, "htb", None), &mut dev).unwrap();
    qdisc(
        &msg(PARENT_INGRESS, 0xFFFF_FFF1, 0, "ingress", None),
        &mut dev,
    )
    .unwrap();
    let fifo = attr(TCA_OPTIONS, &166u32.to_ne_bytes());
    qdisc(
        &msg(0x0102_0000, 0x0001_0102, 0, "pfifo", Some(fifo)),
        &mut dev,
    )
    .unwrap();
    qdisc(&msg(0x0103_0000, 0x0001_0103, 0, "sfq", None), &mut dev).unwrap();
    assert!(dev.root_htb && !dev.root_other && dev.ingress);
    assert_eq!(dev.leaves[&0x102], ("pfifo".to_string(), Some(166)));
    assert_eq!(dev.leaves[&0x103], ("sfq".to_string(), None));

    // The kernel's default root (handle 0) is not foreign; any other is.
    let mut other = ObservedDev::default();
    qdisc(&msg(0, TC_H_ROOT, 0, "noqueue", None), &mut other).unwrap();
    assert!(!other.root_htb && !other.root_other);
    qdisc(
        &msg(0x0005_0000, TC_H_ROOT, 0, "fq_codel", None),
        &mut other,
    )
    .unwrap();
    assert!(other.root_other);
}

#[test]
fn classes_carry_their_parent_and_rates_in_bytes_per_second() {
    let mut dev = ObservedDev::default();
    // The parent class: past 32 bits, the rate comes in its own attribute.
    let big = 12_500_000_000u64.to_ne_bytes();
    let parent = nested(
        TCA_OPTIONS,
        &[
            htb_parms(u32::MAX, u32::MAX),
            attr(TCA_HTB_RATE64, &big),
            attr(TCA_HTB_CEIL64, &big),
        ],
    );
    class(
        &msg(0x0001_0001, TC_H_ROOT, 0, "htb", Some(parent)),
        &mut dev,
    )
    .unwrap();
    let peer = nested(TCA_OPTIONS, &[htb_parms(250_000, 250_000)]);
    class(
        &msg(0x0001_0102, 0x0001_0001, 0, "htb", Some(peer)),
        &mut dev,
    )
    .unwrap();
    // Not under our root: ignored.
    class(&msg(0x0002_0003, 0x0002_0001, 0, "htb", None), &mut dev).unwrap();
    assert_eq!(dev.classes.len(), 2);
    let p = &dev.classes[&1];
    assert_eq!(p.parent, None);
    assert!(p.rate.matches(12_500_000_000) && p.ceil.matches(12_500_000_000));
    let c = &dev.classes[&0x102];
    assert_eq!(c.parent.as_deref(), Some("1:1"));
    assert_eq!(
        (c.rate.clone(), c.ceil.clone()),
        (Rate::Bytes(250_000), Rate::Bytes(250_000))
    );
}

#[test]
fn filters_tables_and_roots_land_by_priority_and_handle() {
    let mut dev = ObservedDev::default();
    let v4 = info(1, 0x0800);
    // The priority's header, the kernel's root table, a table of ours, a link and a peer.
    filter(&msg(0, PARENT_ROOT, v4, "u32", None), &mut dev).unwrap();
    let divisor = |d: u32| {
        Some(nested(
            TCA_OPTIONS,
            &[attr(TCA_U32_DIVISOR, &d.to_ne_bytes())],
        ))
    };
    filter(
        &msg(0x8000_0000, PARENT_ROOT, v4, "u32", divisor(1)),
        &mut dev,
    )
    .unwrap();
    filter(
        &msg(0x1010_0000, PARENT_ROOT, v4, "u32", divisor(256)),
        &mut dev,
    )
    .unwrap();
    let link = nested(
        TCA_OPTIONS,
        &[
            sel(0x0000_00ff, 16, &[(0x0a4d_0100, 0xffff_ff00, 16)]),
            attr(TCA_U32_LINK, &0x1010_0000u32.to_ne_bytes()),
        ],
    );
    filter(
        &msg(0x8000_0801, PARENT_ROOT, v4, "u32", Some(link)),
        &mut dev,
    )
    .unwrap();
    let peer = nested(
        TCA_OPTIONS,
        &[
            attr(TCA_U32_CLASSID, &0x0001_0102u32.to_ne_bytes()),
            sel(0, 0, &[(0x0a4d_0102, 0xffff_ffff, 16)]),
        ],
    );
    filter(
        &msg(0x1010_2001, PARENT_ROOT, v4, "u32", Some(peer)),
        &mut dev,
    )
    .unwrap();

    let prio = &dev.prios[&1];
    assert_eq!((prio.kind.as_str(), prio.protocol.as_str()), ("u32", "ip"));
    assert_eq!(prio.root, Some(0x800));
    assert_eq!(prio.tables, BTreeMap::from([(0x101, 256)]));
    let l = &prio.filters[&(0x800, 0, 0x801)];
    assert_eq!(l.link, Some(0x101));
    assert_eq!(l.hash, Some((0xff, 16)));
    assert_eq!(l.keys, vec![(0x0a4d_0100, 0xffff_ff00, 16)]);
    let p = &prio.filters[&(0x101, 2, 1)];
    assert_eq!(p.flowid.as_deref(), Some("1:102"));
    assert_eq!((p.hash, p.link), (None, None));
    assert_eq!(p.keys, vec![(0x0a4d_0102, 0xffff_ffff, 16)]);
}

#[test]
fn a_mirred_action_names_its_target_by_ifindex() {
    let mut parms = vec![0u8; 28];
    parms[24..28].copy_from_slice(&9u32.to_ne_bytes());
    let act = nested(
        1,
        &[
            attr(TCA_ACT_KIND, b"mirred\0"),
            nested(TCA_ACT_OPTIONS, &[attr(TCA_MIRRED_PARMS, &parms)]),
        ],
    );
    let opts = nested(TCA_OPTIONS, &[nested(TCA_U32_ACT, &[act])]);
    let f = msg(
        0x8000_0800,
        PARENT_INGRESS,
        info(1, 0x0003),
        "u32",
        Some(opts),
    );
    assert_eq!(redirect_targets(&f), vec![9]);
    assert!(redirect_targets(&msg(0, PARENT_INGRESS, 0, "u32", None)).is_empty());
}

#[test]
fn truncated_messages_are_refused_not_misread() {
    let mut dev = ObservedDev::default();
    assert!(class(&[0u8; 10], &mut dev).is_none());
    let short_sel = nested(TCA_OPTIONS, &[attr(TCA_U32_SEL, &[1, 0, 3, 0])]);
    let f = msg(
        0x1010_2001,
        PARENT_ROOT,
        info(1, 0x0800),
        "u32",
        Some(short_sel),
    );
    assert!(filter(&f, &mut dev).is_none());
}
