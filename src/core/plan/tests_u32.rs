//! IPv6 shaping: the same classes reached through IPv6 u32 filters.
use std::net::Ipv6Addr;

use super::tests::{input, peer};
use super::u32::FilterSpec;
use super::*;

fn v6_input(peers: Vec<PeerPolicy>) -> PlanInput {
    let mut i = input(peers);
    i.subnet_v6 = Some("fd77::/64".parse().unwrap());
    i
}

/// Peer `10.77.0.last` with its IPv6 address as the pool derives it.
fn peer6(last: u8, down: Option<u32>, up: Option<u32>) -> PeerPolicy {
    let mut p = peer(last, down, up, None);
    p.addr_v6 = Some(Ipv6Addr::from(0xfd77_u128 << 112 | u128::from(last)));
    p
}

fn spec(net: &str) -> FilterSpec {
    FilterSpec {
        handle: (0x20, 0, 1),
        net: net.parse().unwrap(),
        hash: None,
        link: None,
        flowid: None,
    }
}

#[test]
fn match_keys_are_the_words_tc_makes_of_a_prefix() {
    assert_eq!(
        spec("10.77.0.0/22").keys(Dir::Down),
        vec![(0x0a4d_0000, 0xffff_fc00, 16)]
    );
    assert_eq!(
        spec("fd77::/64").keys(Dir::Down),
        vec![(0xfd77_0000, u32::MAX, 24), (0, u32::MAX, 28)]
    );
    // A partial last word is masked, the value too.
    assert_eq!(
        spec("fd77:0:0:ab00::/56").keys(Dir::Up),
        vec![(0xfd77_0000, u32::MAX, 8), (0xab00, 0xffff_ff00, 12)]
    );
    let host = spec("fd77::1:2/128").keys(Dir::Down);
    assert_eq!(host.len(), 4);
    assert_eq!(host[3], (0x0001_0002, u32::MAX, 36));
    assert_eq!(spec("fd77::/100").keys(Dir::Down)[3], (0, 0xf000_0000, 36));
}

#[test]
fn ipv6_filters_lead_to_the_same_class_in_both_directions() {
    let mut p = peer6(2, Some(2000), Some(1000));
    p.addr = "10.77.1.2".parse().unwrap();
    p.addr_v6 = Some("fd77::102".parse().unwrap());
    let plan = Plan::build(&v6_input(vec![p])).unwrap();
    let [down, up] = &plan.tc.devs[..] else {
        panic!()
    };
    for (dev, field, off) in [(down, "dst", 36), (up, "src", 20)] {
        let sets = dev.u32_sets();
        assert_eq!(sets.len(), 2);
        let (v4, v6) = (&sets[0], &sets[1]);
        assert_eq!((v4.family, v6.family), (Family::V4, Family::V6));
        // A /16: two levels, one second-level table per high byte of the host offset.
        assert_eq!(v6.tables.len(), 1 + 256);
        assert!(
            v6.tables
                .iter()
                .all(|t| *t < 0x800 && !v4.tables.contains(t))
        );
        let peer = &v6.filters[&(0x201, 2, 1)];
        assert_eq!(peer.flowid, v4.filters[&(0x101, 2, 1)].flowid);
        assert_eq!(peer.flowid.as_deref(), Some("1:102"));
        let line = peer.line(&dev.dev, dev.dir, None);
        assert!(
            line.ends_with(&format!(
                "prio 2 handle 201:2:1 protocol ipv6 u32 ht 201:2: match ip6 {field} fd77::102/128 flowid 1:102"
            )),
            "{line}"
        );
        let root = &v6.filters[&(ids::ROOT, 0, 1)];
        assert_eq!((root.hash, root.link), (Some((0xff00, off)), Some(0x20)));
        let link = &v6.filters[&(0x20, 1, 1)];
        assert_eq!(link.net.to_string(), "fd77::100/120");
        assert_eq!((link.hash, link.link), (Some((0xff, off)), Some(0x201)));
    }
}

#[test]
fn a_small_subnet_hashes_the_last_byte_once() {
    let mut i = v6_input(vec![]);
    i.subnet = "10.9.8.0/24".parse().unwrap();
    i.server_addr = "10.9.8.1".parse().unwrap();
    i.subnet_v6 = Some("fd00:9::/112".parse().unwrap());
    let mut p = peer(7, Some(500), None, None);
    p.addr = "10.9.8.7".parse().unwrap();
    p.addr_v6 = Some("fd00:9::7".parse().unwrap());
    i.peers = vec![p];
    let plan = Plan::build(&i).unwrap();
    let v6 = &plan.tc.devs[0].u32_sets()[1];
    assert_eq!(v6.tables, vec![0x20]);
    assert_eq!(v6.filters[&(ids::ROOT, 0, 1)].hash, Some((0xff, 36)));
    assert_eq!(v6.filters.len(), 2);
    assert!(v6.filters.contains_key(&(0x20, 7, 1)));
}

#[test]
fn peers_without_a_matching_ipv6_address_get_no_ipv6_filter() {
    let mut foreign = peer6(3, Some(1000), None);
    foreign.addr_v6 = Some("fd99::3".parse().unwrap());
    let plan = Plan::build(&v6_input(vec![
        peer6(2, Some(1000), None),
        foreign,
        peer(4, Some(1000), None, None),
    ]))
    .unwrap();
    let sets = plan.tc.devs[0].u32_sets();
    let peers = |s: &u32::U32Set| {
        s.filters
            .values()
            .filter_map(|f| f.flowid.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(peers(&sets[0]), vec!["1:2", "1:3", "1:4"]);
    assert_eq!(peers(&sets[1]), vec!["1:2"]);

    // A prefix whose host part cannot hold the offsets: no IPv6 filters at all.
    let mut i = v6_input(vec![peer6(2, Some(1000), None)]);
    i.subnet_v6 = Some("fd77::/120".parse().unwrap());
    assert_eq!(Plan::build(&i).unwrap().tc.devs[0].u32_sets().len(), 1);
    // No prefix: nothing changes for IPv4.
    let plain = Plan::build(&input(vec![peer(2, Some(1000), None, None)])).unwrap();
    assert_eq!(plain.tc.devs[0].u32_sets().len(), 1);
}

#[test]
fn peer_batches_add_and_remove_the_ipv6_filter_and_leave_the_class() {
    let i = v6_input(vec![]);
    let p = peer6(9, Some(2000), Some(3000));
    let add = peer_batch(&i, &PeerChange::Add(p.clone()), None).unwrap();
    assert_eq!(add.tc.len(), 8, "{:#?}", add.tc);
    let wl0: Vec<_> = add.tc.iter().filter(|l| l.contains("dev wl0 ")).collect();
    assert!(wl0[0].starts_with("class replace dev wl0 parent 1:1 classid 1:9"));
    assert!(wl0[2].contains("prio 1 handle 100:9:1") && wl0[2].contains("flowid 1:9"));
    assert!(
        wl0[3].contains("prio 2 handle 200:9:1 protocol ipv6")
            && wl0[3].contains("match ip6 dst fd77::9/128 flowid 1:9"),
        "{}",
        wl0[3]
    );

    // A new rate changes the class only; the filters stay.
    let faster = PeerPolicy {
        download_kbps: Some(4000),
        ..p.clone()
    };
    let change = PeerChange::Update {
        before: p.clone(),
        after: faster,
    };
    let upd = peer_batch(&i, &change, None).unwrap();
    assert_eq!(upd.tc.len(), 2);
    assert!(upd.tc[0].starts_with("class change dev wl0"));

    // Removal: both filters; the class stays for the next peer at this address.
    let rm = peer_batch(&i, &PeerChange::Remove(p.clone()), None).unwrap();
    let wl0: Vec<_> = rm.tc.iter().filter(|l| l.contains("dev wl0 ")).collect();
    assert_eq!(
        wl0,
        vec![
            "filter del dev wl0 parent 1: prio 1 handle 100:9:1 protocol ip u32",
            "filter del dev wl0 parent 1: prio 2 handle 200:9:1 protocol ipv6 u32",
        ]
    );
    assert_eq!(rm.tc.len(), 4);

    // The IPv6 address arriving later adds just its filter (and its map entry).
    let v4_only = PeerPolicy {
        addr_v6: None,
        ..p.clone()
    };
    let change = PeerChange::Update {
        before: v4_only.clone(),
        after: p.clone(),
    };
    let gained = peer_batch(&i, &change, None).unwrap();
    assert_eq!(gained.tc.len(), 2);
    assert!(
        gained
            .tc
            .iter()
            .all(|l| l.starts_with("filter replace") && l.contains("ipv6"))
    );
    let lost = peer_batch(
        &i,
        &PeerChange::Update {
            before: p,
            after: v4_only.clone(),
        },
        None,
    )
    .unwrap();
    assert!(
        lost.tc
            .iter()
            .all(|l| l.starts_with("filter del") && l.contains("prio 2"))
    );
    assert_eq!(lost.tc.len(), 2);

    // A peer without an IPv6 address: what it always was.
    let plain = peer_batch(&i, &PeerChange::Add(v4_only), None).unwrap();
    assert_eq!(plain.tc.len(), 6);
    assert!(plain.tc.iter().all(|l| !l.contains("ipv6")));
}
