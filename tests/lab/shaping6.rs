//! IPv6 shaping against real tc and wireguard-go: a limited peer's IPv6 traffic goes through the
//! class of its IPv4 address, at its rate; filters deleted from outside come back at the next
//! reconcile, and a removed peer leaves nothing behind. The daemon's side: `node_shaping6`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use common::netns::wait_for;
use common::tunnels::*;
use waylume::core::plan::{PeerChange, PeerPolicy, PlanInput, Rate};
use waylume::sys::dataplane::fenced_networks;

pub const SUBNET6: &str = "fd77::/64";
pub const A6: &str = "fd77::2";
/// What iperf3 receives through a 2 and a 4 Mbit/s limit over IPv6: a little below the limit,
/// which counts IP bytes (IPv6 headers are 20 bytes longer than IPv4's), and never above it.
const AT_2: std::ops::RangeInclusive<f64> = 1.75..=2.2;
const AT_4: std::ops::RangeInclusive<f64> = 3.5..=4.4;
/// The internet host's IPv6 address, one hop behind the node's uplink network.
const INET6: &str = "2001:db8:2::2";

/// The tunnel lab with IPv6: the node's prefix on the tunnel, peer A at the host offset of its
/// IPv4 address, and an uplink network to the internet host.
fn v6_lab(tag: &str) -> TunnelLab {
    let lab = TunnelLab::new(tag);
    let (srv, a, inet) = (lab.srv.clone(), lab.a.clone(), lab.inet.clone());
    // `ip -n NS` and the rest of the command as words.
    let ip = |ns: &str, rest: &str| {
        let mut argv = vec!["ip", "-n", ns];
        argv.extend(rest.split_whitespace());
        must(&argv);
    };
    ip(&srv, &format!("addr add fd77::1/64 dev {} nodad", lab.wg_s));
    ip(&a, &format!("addr add fd77::2/64 dev {} nodad", lab.wg_a));
    ip(&a, &format!("route add 2001:db8::/32 dev {}", lab.wg_a));
    ip(&srv, "addr add 2001:db8:1::1/64 dev vi-s nodad");
    ip(&inet, "addr add 2001:db8:1::2/64 dev vi-c nodad");
    ip(&inet, "addr add 2001:db8:2::2/128 dev lo");
    ip(&srv, "route add default via 2001:db8:1::2");
    let a_key = lab.keys[1].1.clone();
    lab.s(&[
        "wg",
        "set",
        &lab.wg_s,
        "peer",
        &a_key,
        "allowed-ips",
        "10.77.0.2/32,fd77::2/128",
    ]);
    let s_key = lab.keys[0].1.clone();
    lab.ns(
        &a,
        &[
            "wg",
            "set",
            &lab.wg_a,
            "peer",
            &s_key,
            "allowed-ips",
            "0.0.0.0/0,::/0",
        ],
    )
    .unwrap();
    lab
}

/// The daemon's input with the IPv6 prefix: its own networks are carved out of the fence.
fn input6(lab: &TunnelLab, peers: Vec<PeerPolicy>) -> PlanInput {
    let mut input = lab.input(peers);
    let v6 = SUBNET6.parse().unwrap();
    let tunnel = [ipnet::IpNet::V4(input.subnet), ipnet::IpNet::V6(v6)];
    let (v4, blocked6) = fenced_networks(lab.runner.as_ref(), &tunnel, &[]).unwrap();
    input.subnet_v6 = Some(v6);
    input.blocked_v4 = v4;
    input.blocked_v6 = blocked6;
    input
}

fn limited_a(kbps: u32) -> PeerPolicy {
    PeerPolicy {
        addr_v6: Some(A6.parse().unwrap()),
        download_kbps: Some(kbps),
        upload_kbps: Some(kbps),
        ..policy(A)
    }
}

/// Receiver-side Mbit/s of a 3-second iperf3 run from peer A to the internet host over IPv6.
fn iperf6(lab: &TunnelLab, reverse: bool) -> f64 {
    let mut argv = vec!["iperf3", "-6", "-c", INET6, "-p", "5202", "-t", "3", "-J"];
    if reverse {
        argv.push("-R");
    }
    // The server takes one client at a time and may still be closing the previous test.
    let mut last = String::new();
    for _ in 0..5 {
        match lab.ns(&lab.a, &argv) {
            Ok(out) => {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                return v["end"]["sum_received"]["bits_per_second"]
                    .as_f64()
                    .unwrap()
                    / 1e6;
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{last}")
}

/// Bytes sent by class `1:2` (peer A) on `dev`, from `tc -s class show`.
fn class_bytes(lab: &TunnelLab, dev: &str) -> u64 {
    let out = lab.s(&["tc", "-s", "class", "show", "dev", dev, "classid", "1:2"]);
    out.split("Sent ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counters for 1:2 on {dev}: {out}"))
}

fn v6_filters(lab: &TunnelLab, dev: &str) -> String {
    lab.s(&[
        "tc", "filter", "show", "dev", dev, "parent", "1:", "prio", "2",
    ])
}

/// Bytes the class sent during `f`, and what `f` returned.
fn through_class(lab: &TunnelLab, dev: &str, f: impl FnOnce() -> f64) -> (u64, f64) {
    let before = class_bytes(lab, dev);
    let r = f();
    (class_bytes(lab, dev) - before, r)
}

/// Bytes a run of `mbit` Mbit/s for 3 s carried, of which the class must have carried most.
fn carried(mbit: f64) -> u64 {
    (mbit * 1e6 / 8.0 * 3.0 * 0.8) as u64
}

#[test]
#[ignore = "needs root"]
fn ipv6_traffic_is_held_to_the_peers_limit_in_its_class() {
    let mut lab = v6_lab("s6a");
    lab.spawn(
        &lab.inet.clone(),
        &["iperf3", "-s", "-B", INET6, "-p", "5202"],
    );
    let dp = lab.dataplane();
    let input = input6(&lab, vec![limited_a(2000), policy(B)]);
    dp.apply(&input).unwrap();
    wait_for("iperf3 over IPv6", Duration::from_secs(10), || {
        lab.tcp_connects(&lab.a, &format!("[{INET6}]"), 5202)
    });
    let ifb = input.ifb.clone();
    let wg = lab.wg_s.clone();

    let (up_bytes, up) = through_class(&lab, &ifb, || iperf6(&lab, false));
    let (down_bytes, down) = through_class(&lab, &wg, || iperf6(&lab, true));
    assert!(AT_2.contains(&up), "IPv6 upload {up} Mbit/s, limit 2");
    assert!(AT_2.contains(&down), "IPv6 download {down} Mbit/s, limit 2");
    assert!(up_bytes >= carried(up), "upload class carried {up_bytes}");
    assert!(
        down_bytes >= carried(down),
        "download class carried {down_bytes}"
    );
    eprintln!(
        "measured IPv6: up {up:.3} down {down:.3} Mbit/s; class 1:2 carried {up_bytes} up, {down_bytes} down"
    );
    lab.runner.writes.lock().unwrap().clear();
    assert!(
        dp.apply(&input).unwrap().is_empty(),
        "steady: nothing to repair"
    );
    assert!(lab.runner.writes.lock().unwrap().is_empty());

    // The IPv6 filters deleted from outside: IPv6 traffic escapes the class (this is what the
    // filters are for), until the next reconcile puts them back.
    lab.s(&[
        "tc", "filter", "del", "dev", &wg, "parent", "1:", "prio", "2",
    ]);
    assert!(!v6_filters(&lab, &wg).contains("flowid"));
    let (escaped_bytes, escaped) = through_class(&lab, &wg, || iperf6(&lab, true));
    assert!(escaped > 4.0, "unfiltered IPv6 download {escaped} Mbit/s");
    // What the class still sends is the tail of the previous run's queue, not this run.
    assert!(
        escaped_bytes < carried(escaped) / 20,
        "class carried {escaped_bytes} of a {escaped} Mbit/s unfiltered run"
    );
    let repaired = dp.apply(&input).unwrap();
    assert!(!repaired.is_empty());
    assert!(v6_filters(&lab, &wg).contains("flowid 1:2"));
    let (_, down2) = through_class(&lab, &wg, || iperf6(&lab, true));
    assert!(
        AT_2.contains(&down2),
        "repaired IPv6 download {down2} Mbit/s"
    );
    assert!(dp.apply(&input).unwrap().is_empty(), "no repair twice");

    // The IPv4 priority deleted while the IPv6 one stays: its hash tables outlive it, unlisted,
    // and could not be added again. The reconcile rebuilds the device's filters, both families.
    lab.s(&[
        "tc", "filter", "del", "dev", &ifb, "parent", "1:", "prio", "1",
    ]);
    assert!(!dp.apply(&input).unwrap().is_empty());
    assert!(dp.apply(&input).unwrap().is_empty(), "no repair twice");
    assert!(v6_filters(&lab, &ifb).contains("flowid 1:2"));
    let (up_bytes, up6) = through_class(&lab, &ifb, || iperf6(&lab, false));
    assert!(AT_2.contains(&up6), "rebuilt IPv6 upload {up6} Mbit/s");
    assert!(up_bytes >= carried(up6));
    lab.spawn(
        &lab.inet.clone(),
        &["iperf3", "-s", "-B", INET, "-p", "5201"],
    );
    wait_for("iperf3 over IPv4", Duration::from_secs(5), || {
        lab.tcp_connects(&lab.a, INET, 5201)
    });
    let up4 = lab.iperf(&lab.a, 5201, false);
    assert!((1.8..=2.2).contains(&up4), "IPv4 upload {up4} Mbit/s");
    eprintln!(
        "measured: escaped {escaped:.1}, repaired {down2:.3}, rebuilt: IPv6 up {up6:.3}, IPv4 up {up4:.3} Mbit/s"
    );
}

#[test]
#[ignore = "needs root"]
fn per_peer_changes_carry_the_ipv6_filter_and_removal_leaves_no_filter() {
    let mut lab = v6_lab("s6b");
    lab.spawn(
        &lab.inet.clone(),
        &["iperf3", "-s", "-B", INET6, "-p", "5202"],
    );
    let dp = lab.dataplane();
    let input = input6(&lab, vec![policy(B)]);
    dp.apply(&input).unwrap();
    let wg = lab.wg_s.clone();
    let ifb = input.ifb.clone();

    // Create, through the per-peer path only.
    let a = limited_a(2000);
    let with_a = input6(&lab, vec![a.clone(), policy(B)]);
    dp.apply_change(&with_a, &PeerChange::Add(a.clone()))
        .unwrap();
    wait_for("iperf3 over IPv6", Duration::from_secs(10), || {
        lab.tcp_connects(&lab.a, &format!("[{INET6}]"), 5202)
    });
    let (bytes, down) = through_class(&lab, &wg, || iperf6(&lab, true));
    assert!(AT_2.contains(&down), "IPv6 download {down} Mbit/s");
    assert!(bytes >= carried(down));
    assert!(dp.apply(&with_a).unwrap().is_empty(), "fast path = plan");

    // Set limit: the class changes, the IPv6 filter stays.
    let faster = limited_a(4000);
    let with_faster = input6(&lab, vec![faster.clone(), policy(B)]);
    dp.apply_change(
        &with_faster,
        &PeerChange::Update {
            before: a,
            after: faster.clone(),
        },
    )
    .unwrap();
    let down4 = iperf6(&lab, true);
    assert!(AT_4.contains(&down4), "IPv6 download {down4} Mbit/s");
    assert!(dp.apply(&with_faster).unwrap().is_empty());

    // Delete: no filter of A, IPv4 or IPv6, on either device; its class stays with nothing
    // leading to it, for the next peer at this address.
    dp.apply_change(&input, &PeerChange::Remove(faster))
        .unwrap();
    for dev in [&wg, &ifb] {
        let filters = lab.s(&["tc", "filter", "show", "dev", dev, "parent", "1:"]);
        assert!(!filters.contains("flowid 1:2"), "{filters}");
    }
    assert!(
        dp.apply(&input).unwrap().is_empty(),
        "nothing left to clean"
    );
    eprintln!("measured: IPv6 down {down:.3} Mbit/s at 2, {down4:.3} at 4");
}

/// The data plane's two ways of reading tc agree on real state: `tc -j` (iproute2's JSON, or
/// text for classes) and rtnetlink dumps parsed in-process, which the daemon uses.
#[test]
#[ignore = "needs root"]
fn tc_reads_the_same_over_netlink_and_from_tc() {
    use std::sync::Arc;
    use waylume::sys::policy::{KernelEnforcer, PeerEnforcer};
    let lab = v6_lab("s6nl");
    let input = input6(&lab, vec![limited_a(2000), policy(B)]);
    lab.dataplane().apply(&input).unwrap();
    // A class left by a removed peer and spares made ahead are read too.
    let enforcer = KernelEnforcer::new(
        lab.dataplane(),
        PlanInput {
            peers: vec![],
            ..input.clone()
        },
    );
    assert!(enforcer.check(input.peers.clone()).unwrap().is_none());
    let spares = ["10.77.0.9".parse().unwrap(), "10.77.0.10".parse().unwrap()];
    assert_eq!(enforcer.make_spares(&spares).unwrap(), 8);

    let by_tc = lab.dataplane();
    let by_netlink = lab.dataplane().with_tc_read(Arc::new(tc_socket(&lab.srv)));
    for dev in [lab.wg_s.clone(), input.ifb.clone()] {
        let mut a = by_tc.observe_dev(&dev).unwrap().unwrap();
        let mut b = by_netlink.observe_dev(&dev).unwrap().unwrap();
        assert!(b.root_htb, "{dev}: {b:#?}");
        assert!(!b.prios.is_empty() && b.prios.values().all(|p| !p.filters.is_empty()));
        assert!(b.classes.len() >= 4, "{dev}: parent, A and the spares");
        // Rates: `tc` of this iproute2 may print classes as text; netlink gives bytes/s.
        assert_eq!(
            a.classes.keys().collect::<Vec<_>>(),
            b.classes.keys().collect::<Vec<_>>()
        );
        for (m, c) in &b.classes {
            let Rate::Bytes(rate) = c.rate else {
                panic!("{dev} 1:{m:x}: {c:?}")
            };
            let Rate::Bytes(ceil) = c.ceil else {
                panic!("{dev} 1:{m:x}: {c:?}")
            };
            let t = &a.classes[m];
            assert!(
                t.rate.matches(rate) && t.ceil.matches(ceil),
                "{dev} 1:{m:x}: {t:?} vs {c:?}"
            );
            assert_eq!(t.parent, c.parent, "{dev} 1:{m:x}");
        }
        a.classes.clear();
        b.classes.clear();
        assert_eq!(a, b, "{dev}");
    }
    assert!(by_netlink.observe_dev("nosuchdev0").unwrap().is_none());
}
