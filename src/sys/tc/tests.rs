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
    // A /22: the top table, one table per third byte, and u32's own root 800:.
    assert_eq!(
        d.tables.keys().copied().collect::<Vec<_>>(),
        vec![0x10, 0x100, 0x101, 0x102, 0x103, 0x800]
    );
    assert!(d.tables.values().filter(|x| **x == 256).count() == 5);
    let peer = &d.filters[&(0x101, 2, 1)];
    assert_eq!(peer.flowid.as_deref(), Some("1:102"));
    assert_eq!(
        (peer.value, peer.mask, peer.off),
        (Some(0x0a4d_0102), Some(0xffff_ffff), Some(16))
    );
    let root = &d.filters[&(0x800, 0, 1)];
    assert_eq!(root.link, Some(0x10));
    assert_eq!(root.hash, Some((0xff00, 16)));
    let link = &d.filters[&(0x10, 1, 1)];
    assert_eq!(link.link, Some(0x101));
    assert_eq!(link.hash, Some((0xff, 16)));
    assert_eq!(d.redirects, vec!["wl0-ifb".to_string()]);
}

#[test]
fn upload_filters_key_on_the_source() {
    let mut d = ObservedDev::default();
    parse_qdiscs(&fx("tc-qdisc-ifb.json"), &mut d).unwrap();
    parse_filters(&fx("tc-filter-ifb.json"), &mut d).unwrap();
    assert!(!d.ingress);
    let f = &d.filters[&(0x101, 3, 1)];
    assert_eq!((f.off, f.flowid.as_deref()), (Some(12), Some("1:103")));
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
    assert!(d.filters.is_empty());
    assert!(parse_qdiscs("Cannot find device", &mut d).is_err());
}
