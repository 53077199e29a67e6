//! IPv6 shaping through the daemon: a create installs the peer's IPv6 filters, the reconcile
//! loop restores one deleted from outside in a single repair and leaves it alone after, and a
//! delete removes them. Needs root: `cargo test --test lab -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use common::netns::{sh, wait_for};

use crate::harness::NodeLab;
use crate::shaping6::{A6, SUBNET6};

/// A counter from the node's `/metrics`.
fn metric(nl: &NodeLab, name: &str) -> u64 {
    let m = nl
        .lab
        .exec(&nl.srv, &["curl", "-s", "http://127.0.0.1:3000/metrics"]);
    String::from_utf8_lossy(&m.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
#[ignore = "needs root"]
fn the_node_shapes_ipv6_and_its_reconcile_restores_a_deleted_filter_once() {
    let mut nl = NodeLab::new("s6c");
    let d = nl.daemon(&[("WAYLUME_SUBNET_V6", SUBNET6)]);
    let (pid, _n) = d.start(&mut nl.lab, "d1");
    let (ok, peer) = d.cli(&["create", "--download-kbps", "2000", "--upload-kbps", "1000"]);
    assert!(ok, "{peer}");
    assert_eq!(peer["address_v6"].as_str(), Some(A6), "{peer}");
    let id = peer["peer_id"].as_str().unwrap().to_string();
    let wg = nl.wg_srv.clone();
    let ifb: String = format!("ifb-{wg}").chars().take(15).collect();
    let filters = |dev: &str| {
        let out = nl.lab.exec(
            &nl.srv,
            &[
                "tc", "filter", "show", "dev", dev, "parent", "1:", "prio", "2",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The create itself installs the IPv6 filter on both devices: destination on the
    // interface, source on the IFB, the whole address.
    for (dev, at) in [(&wg, 36), (&ifb, 20)] {
        let f = filters(dev);
        assert!(f.contains("fh 200:2:1") && f.contains("flowid 1:2"), "{f}");
        assert!(
            f.contains(&format!("match 00000002/ffffffff at {at}")),
            "{f}"
        );
    }

    // Deleted from outside: back within a reconcile pass, repaired once, then left alone.
    let repairs = metric(&nl, "waylume_reconcile_repairs_total");
    sh(&[
        "ip", "netns", "exec", &nl.srv, "tc", "filter", "del", "dev", &wg, "parent", "1:", "prio",
        "2", "handle", "200:2:1", "protocol", "ipv6", "u32",
    ]);
    assert!(!filters(&wg).contains("flowid 1:2"));
    wait_for("the IPv6 filter back", Duration::from_secs(10), || {
        filters(&wg).contains("flowid 1:2")
    });
    wait_for("the repair counted", Duration::from_secs(5), || {
        metric(&nl, "waylume_reconcile_repairs_total") > repairs
    });
    let repaired = metric(&nl, "waylume_reconcile_repairs_total");
    let runs = metric(&nl, "waylume_reconcile_runs_total");
    wait_for("three more passes", Duration::from_secs(15), || {
        metric(&nl, "waylume_reconcile_runs_total") >= runs + 3
    });
    assert_eq!(
        metric(&nl, "waylume_reconcile_repairs_total"),
        repaired,
        "a pass after the repair found something to change"
    );

    // Deleting the peer leaves no filter of it in either family.
    let (ok, del) = d.cli(&["delete", &id]);
    assert!(ok, "{del}");
    for dev in [&wg, &ifb] {
        let out = nl.lab.exec(
            &nl.srv,
            &["tc", "filter", "show", "dev", dev, "parent", "1:"],
        );
        let all = String::from_utf8_lossy(&out.stdout);
        assert!(!all.contains("flowid 1:2"), "{all}");
    }
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(20)), Some(0));
}
