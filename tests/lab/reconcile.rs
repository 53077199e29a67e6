//! Reconcile against the real data plane (wireguard-go, nftables, tc) while the API changes
//! peers, with the loop running every second and after every change. Only drift counts as a
//! repair: create/delete traffic leaves `waylume_reconcile_repairs_total` at 0, and a deleted
//! interface afterwards still counts, so the counter is shown able to move.
use std::time::Duration;

use common::netns::{poll, sh};

use crate::harness::NodeLab;

const PAIRS: usize = 200;

fn repairs(nl: &NodeLab) -> u64 {
    let m = nl
        .lab
        .exec(&nl.srv, &["curl", "-s", "http://127.0.0.1:3000/metrics"]);
    let metrics = String::from_utf8_lossy(&m.stdout);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("waylume_reconcile_repairs_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no repair counter in {metrics}"))
}

#[test]
#[ignore = "needs root"]
fn api_changes_count_no_repairs_and_drift_still_does() {
    let mut nl = NodeLab::new("z");
    let d = nl.daemon(&[]);
    let (pid, _n) = d.start(&mut nl.lab, "d1");
    // Two clients at once, as an Edge Function serving many users would be.
    std::thread::scope(|scope| {
        for c in 0..2 {
            let d = &d;
            scope.spawn(move || {
                for i in 0..PAIRS / 2 {
                    // Limited and capped: each change writes nft and tc as well as WireGuard.
                    let (ok, peer) = d.cli(&[
                        "create",
                        "--download-kbps",
                        "2000",
                        "--data-cap-bytes",
                        "1000000",
                    ]);
                    assert!(ok, "client {c}, create {i}: {peer}");
                    let (ok, v) = d.cli(&["delete", peer["peer_id"].as_str().unwrap()]);
                    assert!(ok, "client {c}, delete {i}: {v}");
                }
            });
        }
    });
    let log = || std::fs::read_to_string(nl.lab.dir.path().join("d1.log")).unwrap_or_default();
    assert_eq!(repairs(&nl), 0, "{}", log());
    assert!(!log().contains("reconcile repaired"), "{}", log());

    sh(&["ip", "-n", &nl.srv, "link", "del", &nl.wg_srv]);
    let repaired = poll(Duration::from_secs(10), || repairs(&nl) >= 1);
    assert!(repaired, "the deleted interface not repaired:\n{}", log());
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(20)), Some(0));
}
