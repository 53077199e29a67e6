use super::*;

fn fx(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/dataplane/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

fn wl0() -> ObservedDev {
    let mut d = ObservedDev::default();
    parse_qdiscs(&fx("tc-qdisc-wl0.json"), &mut d).unwrap();
    parse_classes(&fx("tc-class-wl0.txt"), &mut d).unwrap();
    parse_filters(&fx("tc-filter-wl0.json"), &mut d).unwrap();
    parse_ingress_filters(&fx("tc-ingress-wl0.json"), &mut d).unwrap();
    d
}

#[test]
fn parses_captured_qdiscs_and_classes() {
    let d = wl0();
    assert!(d.root_htb && !d.root_other && d.ingress);
    assert_eq!(d.leaves[&0x102], ("pfifo".to_string(), Some(32)));
    assert_eq!(d.leaves[&0x104], ("pfifo".to_string(), Some(1000)));
    assert_eq!(
        d.classes.keys().copied().collect::<Vec<_>>(),
        vec![1, 0x102, 0x104]
    );
    let c = &d.classes[&0x102];
    assert_eq!(c.parent.as_deref(), Some("1:1"));
    assert_eq!(c.rate, Rate::Text("2Mbit".into()));
    assert!(c.ceil.matches(2000 * 125));
    assert_eq!(d.classes[&1].parent, None);
}

#[test]
fn parses_captured_hash_tables_and_filters() {
    let d = wl0();
    assert_eq!(d.prios.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    let v4 = &d.prios[&1];
    assert_eq!((v4.kind.as_str(), v4.protocol.as_str()), ("u32", "ip"));
    // A /22: the top table and one table per third byte; the root is u32's own 800:.
    assert_eq!(v4.root, Some(0x800));
    assert_eq!(
        v4.tables.keys().copied().collect::<Vec<_>>(),
        vec![0x10, 0x100, 0x101, 0x102, 0x103]
    );
    assert!(v4.tables.values().all(|x| *x == 256));
    let peer = &v4.filters[&(0x101, 2, 1)];
    assert_eq!(peer.flowid.as_deref(), Some("1:102"));
    assert_eq!(peer.keys, vec![(0x0a4d_0102, 0xffff_ffff, 16)]);
    let root = &v4.filters[&(0x800, 0, 1)];
    assert_eq!(root.link, Some(0x10));
    assert_eq!(root.hash, Some((0xff00, 16)));
    let link = &v4.filters[&(0x10, 1, 1)];
    assert_eq!(link.link, Some(0x101));
    assert_eq!(link.hash, Some((0xff, 16)));
    assert_eq!(d.redirects, vec!["wl0-ifb".to_string()]);
}

#[test]
fn ipv6_filters_keep_every_match_key() {
    // tc prints one "match" key per 32-bit word in the same JSON object.
    let mut d = ObservedDev::default();
    parse_filters(&fx("tc-filter-wl0-v6peer.json"), &mut d).unwrap();
    let v6 = &d.prios[&2];
    assert_eq!(v6.protocol, "ipv6");
    // The second priority's root is numbered by the kernel after the first.
    assert_eq!(v6.root, Some(0x801));
    assert_eq!(
        v6.tables.keys().copied().collect::<Vec<_>>(),
        vec![0x20, 0x200, 0x201, 0x202, 0x203]
    );
    let root = &v6.filters[&(0x801, 0, 1)];
    assert_eq!(
        root.keys,
        vec![(0xfd77_0000, 0xffff_ffff, 24), (0, 0xffff_ffff, 28)]
    );
    assert_eq!((root.hash, root.link), (Some((0xff00, 36)), Some(0x20)));
    let link = &v6.filters[&(0x20, 1, 1)];
    assert_eq!(link.keys.len(), 4);
    assert_eq!(link.keys[3], (0x100, 0xffff_ff00, 36));
    let peer = &v6.filters[&(0x201, 2, 1)];
    assert_eq!(
        peer.keys,
        vec![
            (0xfd77_0000, 0xffff_ffff, 24),
            (0, 0xffff_ffff, 28),
            (0, 0xffff_ffff, 32),
            (0x102, 0xffff_ffff, 36)
        ]
    );
    assert_eq!(peer.flowid.as_deref(), Some("1:102"));
    // The IPv4 half is untouched by the IPv6 one.
    assert_eq!(d.prios[&1].filters[&(0x101, 2, 1)].keys.len(), 1);
}

#[test]
fn a_priority_without_filters_is_still_seen() {
    let mut d = ObservedDev::default();
    let json = r#"[{"protocol":"all","pref":7,"kind":"basic","chain":0}]"#;
    parse_filters(json, &mut d).unwrap();
    let p = &d.prios[&7];
    assert_eq!((p.kind.as_str(), p.protocol.as_str()), ("basic", "all"));
    assert!(p.filters.is_empty() && p.root.is_none());
}

#[test]
fn json_classes_carry_bytes_per_second() {
    let mut d = ObservedDev::default();
    let json = r#"[{"class":"htb","handle":"1:2","parent":"1:1","leaf":"2:","prio":0,"rate":250000,"ceil":250000}]"#;
    parse_classes(json, &mut d).unwrap();
    assert_eq!(d.classes[&2].rate, Rate::Bytes(250_000));
}

#[test]
fn empty_and_broken_output() {
    let mut d = ObservedDev::default();
    parse_filters("", &mut d).unwrap();
    assert!(d.prios.is_empty());
    assert!(parse_qdiscs("Cannot find device", &mut d).is_err());
}
