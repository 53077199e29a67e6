use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::ids::{Layout, Slot, quota_name, quota_owner};
use super::*;

pub(crate) fn peer(last: u8, down: Option<u32>, up: Option<u32>, cap: Option<u64>) -> PeerPolicy {
    PeerPolicy {
        addr: Ipv4Addr::new(10, 77, 0, last),
        addr_v6: None,
        download_kbps: down,
        upload_kbps: up,
        cap_bytes: cap,
        used_bytes: 0,
    }
}

pub(crate) fn input(peers: Vec<PeerPolicy>) -> PlanInput {
    PlanInput {
        iface: "wl0".into(),
        ifb: "wl0-ifb".into(),
        subnet: "10.77.0.0/16".parse().unwrap(),
        subnet_v6: None,
        server_addr: Ipv4Addr::new(10, 77, 0, 1),
        outward: Some("eth0".into()),
        isolate: true,
        blocked_v4: vec![
            "169.254.0.0/16".parse().unwrap(),
            "192.168.1.0/24".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        ],
        blocked_v6: vec![],
        shaping: true,
        peers,
    }
}

#[test]
fn quota_names_round_trip_and_reject_foreign_names() {
    let a = Ipv4Addr::new(10, 77, 3, 200);
    assert_eq!(quota_name(a), "p10_77_3_200");
    assert_eq!(quota_owner("p10_77_3_200"), Some(a));
    assert_eq!(quota_owner("p10_77_3"), None);
    assert_eq!(quota_owner("p010_77_3_200"), None);
    assert_eq!(quota_owner("x10_77_3_200"), None);
}

#[test]
fn slots_cover_the_first_65533_hosts_only() {
    let net: ipnet::Ipv4Net = "10.0.0.0/8".parse().unwrap();
    assert_eq!(Slot::of(net, Ipv4Addr::new(10, 0, 0, 1)), None, "server");
    let s = Slot::of(net, Ipv4Addr::new(10, 0, 1, 2)).unwrap();
    assert_eq!((s.minor, s.b3, s.b4), (0x102, 1, 2));
    assert_eq!(s.classid(), "1:102");
    assert!(Slot::of(net, Ipv4Addr::new(10, 0, 255, 254)).is_some());
    assert_eq!(Slot::of(net, Ipv4Addr::new(10, 0, 255, 255)), None);
    assert_eq!(Slot::of(net, Ipv4Addr::new(10, 1, 0, 2)), None);
    assert_eq!(Slot::of(net, Ipv4Addr::new(11, 0, 0, 2)), None);
}

#[test]
fn layouts_hash_one_level_up_to_a_24_and_two_levels_above() {
    let small = Layout::of("10.9.8.0/24".parse().unwrap());
    assert!(!small.two_level);
    let mid = Layout::of("10.9.8.0/22".parse().unwrap());
    assert!(mid.two_level);
    assert_eq!(mid.third_bytes, vec![8, 9, 10, 11]);
    let big = Layout::of("10.0.0.0/8".parse().unwrap());
    assert_eq!(big.net.to_string(), "10.0.0.0/16");
    assert_eq!(big.third_bytes.len(), 256);
}

#[test]
fn bad_peers_are_refused() {
    let mut i = input(vec![peer(2, Some(0), None, None)]);
    assert!(matches!(
        Plan::build(&i),
        Err(PlanError::BadLimit { kbps: 0, .. })
    ));
    i.peers = vec![peer(2, None, Some(MAX_KBPS + 1), None)];
    assert!(matches!(Plan::build(&i), Err(PlanError::BadLimit { .. })));
    i.peers = vec![peer(1, None, None, None)];
    assert_eq!(
        Plan::build(&i),
        Err(PlanError::ServerAddress(Ipv4Addr::new(10, 77, 0, 1)))
    );
    i.peers = vec![peer(2, None, None, None), peer(2, None, None, None)];
    assert!(matches!(Plan::build(&i), Err(PlanError::Duplicate(_))));
    let mut outside = peer(2, None, None, None);
    outside.addr = Ipv4Addr::new(10, 78, 0, 2);
    i.peers = vec![outside];
    assert!(matches!(Plan::build(&i), Err(PlanError::OutsideSubnet(_))));
    i.peers = vec![];
    i.iface = "a b".into();
    assert!(matches!(Plan::build(&i), Err(PlanError::BadInterface(_))));
}

#[test]
fn full_table_script_holds_every_peer_object_once() {
    let mut p2 = peer(2, Some(2000), None, Some(50_000));
    p2.used_bytes = 1234;
    p2.addr_v6 = Some("fd00::2".parse::<Ipv6Addr>().unwrap());
    let plan = Plan::build(&input(vec![p2, peer(3, None, None, None)])).unwrap();
    let s = render_table(&plan.nft, false);
    assert!(s.contains("add quota inet waylume p10_77_0_2 { until 50000 bytes used 1234 bytes }"));
    assert!(s.contains(&format!(
        "p10_77_0_3 {{ until {UNLIMITED_QUOTA} bytes used 0 bytes }}"
    )));
    assert!(s.contains(
        "add element inet waylume peers4 { 10.77.0.2 : \"p10_77_0_2\", 10.77.0.3 : \"p10_77_0_3\" }"
    ));
    assert!(s.contains("add element inet waylume peers6 { fd00::2 : \"p10_77_0_2\" }"));
    // Overlapping blocked prefixes are merged (nft refuses overlaps in an interval set).
    assert!(s.contains("add element inet waylume blocked4 { 169.254.0.0/16, 192.168.0.0/16 }"));
    assert!(s.contains("oifname \"eth0\" ip saddr 10.77.0.0/16 masquerade"));
    assert!(!s.starts_with("delete"));
    assert!(render_table(&plan.nft, true).starts_with("delete table inet waylume\n"));
}

#[test]
fn isolation_off_leaves_node_and_peers_reachable() {
    let mut i = input(vec![]);
    i.isolate = false;
    let plan = Plan::build(&i).unwrap();
    let s = render_table(&plan.nft, false);
    assert!(!s.contains("oifname \"wl0\" drop comment \"wl:iso"));
    assert!(!s.contains("iifname \"wl0\" drop comment \"wl:node-deny"));
    assert!(s.contains("wl:quota-up-ip:"), "caps still apply");
}

#[test]
fn rule_comments_change_when_the_rule_text_changes() {
    let a = Plan::build(&input(vec![])).unwrap();
    let mut i = input(vec![]);
    i.outward = Some("eth1".into());
    let b = Plan::build(&i).unwrap();
    let masq = |p: &Plan| p.nft.chains[2].rules[0].comment.clone();
    assert_ne!(masq(&a), masq(&b));
    assert_eq!(a.nft.chains[0].rules, b.nft.chains[0].rules);
}

#[test]
fn tc_plan_shapes_each_direction_separately() {
    let plan = Plan::build(&input(vec![
        peer(2, Some(2000), None, None),
        peer(3, None, Some(500), None),
        peer(4, None, None, Some(1)),
    ]))
    .unwrap();
    let [down, up] = &plan.tc.devs[..] else {
        panic!()
    };
    assert_eq!(down.dev, "wl0");
    assert_eq!(down.classes.keys().collect::<Vec<_>>(), vec![&2]);
    assert_eq!(up.classes.keys().collect::<Vec<_>>(), vec![&3]);
    assert_eq!(down.redirect_to.as_deref(), Some("wl0-ifb"));
    assert_eq!(up.redirect_to, None);
}

#[test]
fn rate_text_is_what_tc_prints() {
    // Captured from `tc class show` (iproute2 6.1).
    for (kbit, shown) in [
        (2000u64, "2Mbit"),
        (1234, "1234Kbit"),
        (1500, "1500Kbit"),
        (1_000_000, "1Gbit"),
        (99_999_999, "99999Mbit"),
        (8, "8Kbit"),
        (100_000_000, "100Gbit"),
    ] {
        assert_eq!(rate_text(kbit * 125), shown);
        assert!(Rate::Text(shown.into()).matches(kbit * 125));
    }
    assert!(!Rate::Text("2Mbit".into()).matches(2001 * 125));
    assert!(Rate::Bytes(250_000).matches(250_000));
}

#[test]
fn peer_batches_touch_one_peer() {
    let many: Vec<_> = (2..200)
        .map(|i| peer(i, Some(1000), Some(1000), None))
        .collect();
    let i = input(many);
    let add = peer_batch(
        &i,
        &PeerChange::Add(peer(201, Some(2000), Some(3000), Some(10))),
        None,
    )
    .unwrap();
    let text = render_ops(&add.nft);
    assert_eq!(add.nft.len(), 2, "{text}");
    assert!(text.contains("add quota inet waylume p10_77_0_201 { until 10 bytes used 0 bytes }"));
    assert!(text.contains("add element inet waylume peers4 { 10.77.0.201 : \"p10_77_0_201\" }"));
    assert_eq!(add.tc.len(), 6);
    assert!(
        add.tc[0].starts_with("class replace dev wl0 parent 1:1 classid 1:c9 htb rate 2000kbit")
    );
    assert!(add.tc[2].contains("handle 100:c9:1") && add.tc[2].contains("flowid 1:c9"));
    assert!(add.tc[5].contains("match ip src 10.77.0.201/32"));

    let before = peer(201, Some(2000), Some(3000), Some(10));
    let after = PeerPolicy {
        download_kbps: Some(4000),
        upload_kbps: None,
        cap_bytes: None,
        ..before.clone()
    };
    let upd = peer_batch(
        &i,
        &PeerChange::Update {
            before: before.clone(),
            after,
        },
        None,
    )
    .unwrap();
    assert_eq!(
        render_ops(&upd.nft).trim(),
        format!(
            "add quota inet waylume p10_77_0_201 {{ until {UNLIMITED_QUOTA} bytes used 0 bytes }}"
        )
    );
    assert!(upd.tc[0].starts_with("class change dev wl0"));
    assert!(upd.tc[2].starts_with("filter del dev wl0-ifb parent 1: prio 1 handle 100:c9:1"));
    // The upload class stays, with nothing leading to it.
    assert_eq!(upd.tc.len(), 3, "{:#?}", upd.tc);

    let rm = peer_batch(&i, &PeerChange::Remove(before), None).unwrap();
    let text = render_ops(&rm.nft);
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            "delete element inet waylume peers4 { 10.77.0.201 }",
            "delete quota inet waylume p10_77_0_201"
        ]
    );
    // Its two filters; both classes stay for the next peer at this address.
    assert_eq!(rm.tc.len(), 2, "{:#?}", rm.tc);
    assert!(rm.tc.iter().all(|l| l.starts_with("filter del")));

    let same = peer(5, Some(1000), Some(1000), None);
    assert!(
        peer_batch(
            &i,
            &PeerChange::Update {
                before: same.clone(),
                after: same
            },
            None
        )
        .unwrap()
        .is_empty()
    );
}

#[test]
fn diff_of_absent_table_creates_it_with_the_newest_used() {
    let mut p = peer(2, None, None, Some(100_000));
    p.used_bytes = 10;
    let plan = Plan::build(&input(vec![p])).unwrap();
    let remembered = BTreeMap::from([("p10_77_0_2".to_string(), 5000u64)]);
    let d = diff_nft(&plan.nft, None, &remembered);
    assert!(
        d.script
            .contains("p10_77_0_2 { until 100000 bytes used 5000 bytes }"),
        "{}",
        d.script
    );
}
