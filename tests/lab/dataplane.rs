//! Privileged lab tests of the data plane: real nftables, tc and wireguard-go inside network
//! namespaces created here. Run with `cargo test --test lab dataplane -- --ignored`.

use std::time::Duration;

use common::netns::wait_for;
use common::tunnels::*;
use waylume::core::plan::{PeerChange, PeerPolicy};
use waylume::sys::dataplane::Dataplane;

#[test]
#[ignore = "needs root"]
fn isolation_matrix_and_idempotent_apply() {
    let mut lab = TunnelLab::new("piso");
    // Something listening on the node's tunnel address, like the API.
    lab.spawn(
        &lab.srv.clone(),
        &["iperf3", "-s", "-B", "10.77.0.1", "-p", "3000"],
    );
    wait_for("listener", Duration::from_secs(5), || {
        lab.tcp_connects(&lab.srv, "10.77.0.1", 3000)
    });
    // Before the plan: everything reaches everything (the checks below can fail).
    assert!(lab.reaches(&lab.a, "10.77.0.3"), "A→B before isolation");
    assert!(lab.reaches(&lab.a, METADATA), "A→metadata before isolation");
    assert!(
        lab.tcp_connects(&lab.a, "10.77.0.1", 3000),
        "A→API before isolation"
    );

    let dp = lab.dataplane();
    let input = lab.input(vec![policy(A), policy(B)]);
    assert_eq!(input.outward.as_deref(), Some("vi-s"));
    let first = dp.apply(&input).unwrap();
    assert!(!first.is_empty());

    assert!(lab.reaches(&lab.a, INET), "A→internet");
    assert!(lab.reaches(&lab.a, "10.77.0.1"), "A→node ping");
    assert!(!lab.reaches(&lab.a, "10.77.0.3"), "A→B must be dropped");
    assert!(!lab.reaches(&lab.b, "10.77.0.2"), "B→A must be dropped");
    assert!(
        !lab.reaches(&lab.a, METADATA),
        "A→169.254.169.254 must be dropped"
    );
    assert!(
        !lab.reaches(&lab.a, "10.100.2.2"),
        "A→host private network must be dropped"
    );
    assert!(
        !lab.tcp_connects(&lab.a, "10.77.0.1", 3000),
        "A→API port must be dropped"
    );
    assert!(
        !lab.tcp_connects(&lab.a, "10.100.1.1", 3000),
        "A→node's other address dropped"
    );

    // The same plan again: observed, compared, nothing written.
    lab.runner.writes.lock().unwrap().clear();
    let second = dp.apply(&input).unwrap();
    assert!(second.is_empty(), "{:?}", second.changes);
    assert!(lab.runner.writes.lock().unwrap().is_empty());
}

/// A lab with an iperf3 server on the internet host, A limited to 2 Mbit/s both ways and B
/// unlimited, applied in full.
fn limited_lab(tag: &str) -> (TunnelLab, Dataplane, PeerPolicy) {
    let mut lab = TunnelLab::new(tag);
    lab.spawn(
        &lab.inet.clone(),
        &["iperf3", "-s", "-B", INET, "-p", "5201"],
    );
    let dp = lab.dataplane();
    let limited = PeerPolicy {
        download_kbps: Some(2000),
        upload_kbps: Some(2000),
        ..policy(A)
    };
    dp.apply(&lab.input(vec![limited.clone(), policy(B)]))
        .expect("the plan applies");
    wait_for("iperf3 server", Duration::from_secs(5), || {
        lab.tcp_connects(&lab.a, INET, 5201)
    });
    (lab, dp, limited)
}

/// A's download held to a 4 Mbit/s limit and its upload unlimited, measured with iperf3; the
/// two rates in Mbit/s.
fn down_at_4_up_free(lab: &TunnelLab) -> (f64, f64) {
    let down = lab.iperf(&lab.a, 5201, true);
    assert!(
        (3.6..=4.4).contains(&down),
        "download {down} Mbit/s, limit 4"
    );
    let up = lab.iperf(&lab.a, 5201, false);
    assert!(up > 4.4, "upload unlimited, got {up} Mbit/s");
    (down, up)
}

#[test]
#[ignore = "needs root"]
fn speed_limits_both_directions_and_live_change() {
    let (lab, dp, limited) = limited_lab("prate");

    let up = lab.iperf(&lab.a, 5201, false);
    let down = lab.iperf(&lab.a, 5201, true);
    assert!((1.8..=2.2).contains(&up), "upload {up} Mbit/s, limit 2");
    assert!(
        (1.8..=2.2).contains(&down),
        "download {down} Mbit/s, limit 2"
    );

    // A live change touches only A's class; A's session stays up.
    let faster = PeerPolicy {
        download_kbps: Some(4000),
        upload_kbps: None,
        ..limited.clone()
    };
    let input2 = lab.input(vec![faster.clone(), policy(B)]);
    dp.apply_change(
        &input2,
        &PeerChange::Update {
            before: limited,
            after: faster,
        },
    )
    .unwrap();
    let (down2, up2) = down_at_4_up_free(&lab);
    assert!(
        dp.apply(&input2).unwrap().is_empty(),
        "fast path left the plan in place"
    );
    eprintln!("measured: up {up:.3} down {down:.3} down@4 {down2:.3} up unlimited {up2:.1} Mbit/s");
}

#[test]
#[ignore = "needs root"]
fn cap_is_exact_survives_restart_and_reopens() {
    let lab = TunnelLab::new("pcap");
    let dp = lab.dataplane();
    let capped = PeerPolicy {
        cap_bytes: Some(50_000),
        ..policy(B)
    };
    let input = lab.input(vec![policy(A), capped.clone()]);
    dp.apply(&input).unwrap();
    // 1000-byte pings: request and reply are both charged, 2000 bytes a round trip.
    let got = lab.pings(&lab.b, INET, 40, 1000);
    assert!((24..=25).contains(&got), "{got} of 40 passed, 25 expected");
    assert!(
        lab.reaches(&lab.b, "10.77.0.1"),
        "capped peer keeps its tunnel to the node"
    );
    let used = dp.usage().unwrap()[&B];
    // The kernel keeps counting dropped packets but reports at most the limit.
    assert_eq!(used, 50_000);

    // A daemon restart that finds the table gone: a fresh data plane and the stored count.
    lab.s(&["nft", "delete", "table", "inet", "waylume"]);
    let dp = lab.dataplane();
    let restored = PeerPolicy {
        used_bytes: used,
        ..capped.clone()
    };
    let input = lab.input(vec![policy(A), restored.clone()]);
    dp.apply(&input).unwrap();
    assert_eq!(dp.usage().unwrap()[&B], used, "used N restored");
    assert_eq!(
        lab.pings(&lab.b, INET, 5, 1000),
        0,
        "still capped after restart"
    );

    // Raising the cap re-opens the peer for exactly the difference.
    let used_now = dp.usage().unwrap()[&B];

    let raised = PeerPolicy {
        cap_bytes: Some(used_now + 20_000),
        ..restored.clone()
    };
    let input = lab.input(vec![policy(A), raised.clone()]);
    dp.apply_change(
        &input,
        &PeerChange::Update {
            before: restored,
            after: raised,
        },
    )
    .unwrap();
    let got = lab.pings(&lab.b, INET, 20, 1000);
    assert!(
        (9..=10).contains(&got),
        "{got} of 20 passed after raising by 20,000, 10 expected"
    );
}

#[test]
#[ignore = "needs root"]
fn reconcile_repairs_flushed_ruleset_and_deleted_interface() {
    let mut lab = TunnelLab::new("prep");
    let dp = std::sync::Arc::new(lab.dataplane());
    let limited = PeerPolicy {
        download_kbps: Some(2000),
        cap_bytes: Some(10_000_000),
        ..policy(A)
    };
    let input = lab.input(vec![limited, policy(B)]);
    dp.apply(&input).unwrap();
    assert!(lab.pings(&lab.a, INET, 5, 1000) == 5);
    let used = dp.usage().unwrap()[&A];
    assert!(used >= 10_000);

    lab.s(&["nft", "flush", "ruleset"]);
    assert!(lab.reaches(&lab.a, "10.77.0.3"), "flushed: isolation gone");
    let repaired = dp.apply(&input).unwrap();
    assert!(!repaired.is_empty());
    assert!(!lab.reaches(&lab.a, "10.77.0.3"), "isolation back");
    assert!(
        dp.usage().unwrap()[&A] >= used,
        "used carried over the flush"
    );

    lab.s(&["ip", "link", "del", &lab.wg_s.clone()]);
    // What the daemon does when its interface disappears: start it again with its peers.
    lab.server_wg();
    let repaired = dp.apply(&input).unwrap();
    assert!(
        repaired.changes.iter().any(|c| c.starts_with("tc:")),
        "{:?}",
        repaired.changes
    );
    wait_for("tunnel back", Duration::from_secs(10), || {
        lab.reaches(&lab.a, INET)
    });
    let classes = lab.s(&["tc", "class", "show", "dev", &lab.wg_s.clone()]);
    assert!(
        classes.contains("1:2 parent 1:1") && classes.contains("rate 2Mbit"),
        "{classes}"
    );

    lab.runner.writes.lock().unwrap().clear();
    assert!(dp.apply(&input).unwrap().is_empty());
    assert!(lab.runner.writes.lock().unwrap().is_empty());
}

#[test]
#[ignore = "needs root"]
fn a_daemon_restart_keeps_traffic_flowing() {
    let lab = TunnelLab::new("prst");
    let limited = PeerPolicy {
        download_kbps: Some(50_000),
        cap_bytes: Some(1 << 30),
        ..policy(A)
    };
    let input = lab.input(vec![limited, policy(B)]);
    lab.dataplane().apply(&input).unwrap();
    let a = lab.a.clone();
    // A client pinging every 10 ms through the tunnel while the daemon "restarts": a fresh
    // data plane (nothing remembered) observes the kernel and finds it complete.
    let pinger = std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &a, "ping", "-n", "-q", "-c", "300", "-i", "0.01", "-W", "1", INET,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    let probe = lab.dataplane();
    wait_for("pings flowing", Duration::from_secs(5), || {
        probe.usage().unwrap().get(&A).is_some_and(|u| *u > 10_000)
    });
    lab.runner.writes.lock().unwrap().clear();
    let restarted = lab.dataplane();
    assert!(restarted.apply(&input).unwrap().is_empty());
    assert!(lab.runner.writes.lock().unwrap().is_empty());
    let out = pinger.join().unwrap();
    assert!(out.contains("300 received"), "{out}");

    // `teardown_on_stop = true`: everything the plan made is gone, and a second teardown is fine.
    restarted.teardown(&input).unwrap();
    assert!(
        lab.ns(&lab.srv, &["nft", "list", "table", "inet", "waylume"])
            .is_err()
    );
    assert!(lab.ns(&lab.srv, &["ip", "link", "show", "wlifb0"]).is_err());
    let qd = lab.s(&["tc", "qdisc", "show", "dev", &lab.wg_s]);
    assert!(!qd.contains("htb") && !qd.contains("ingress"), "{qd}");
    restarted.teardown(&input).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_removed_peers_classes_stay_unused_and_the_next_peer_there_is_shaped_anew() {
    let (lab, dp, limited) = limited_lab("preuse");

    // A goes: its filters go, its classes stay, and a full check accepts them.
    let without = lab.input(vec![policy(B)]);
    dp.apply_change(&without, &PeerChange::Remove(limited))
        .unwrap();
    for dev in [lab.wg_s.clone(), without.ifb.clone()] {
        let class = lab.s(&["tc", "class", "show", "dev", &dev, "classid", "1:2"]);
        assert!(class.contains("rate 2Mbit"), "{dev}: {class}");
    }
    assert!(
        dp.apply(&without).unwrap().is_empty(),
        "a class no filter leads to is not drift"
    );

    // A new peer at the same address, limited on download only: the old download class takes
    // its new rate in place, and the old upload class, still at 2 Mbit/s, holds nothing back.
    let next = PeerPolicy {
        download_kbps: Some(4000),
        ..policy(A)
    };
    let with = lab.input(vec![next.clone(), policy(B)]);
    dp.apply_change(&with, &PeerChange::Add(next)).unwrap();
    let (down, up) = down_at_4_up_free(&lab);
    assert!(dp.apply(&with).unwrap().is_empty());
    eprintln!("measured after reuse: down {down:.3} Mbit/s (limit 4), up {up:.1} Mbit/s");
}

#[test]
#[ignore = "needs root"]
fn spare_classes_made_ahead_are_taken_over_by_the_next_peer() {
    use waylume::sys::policy::{KernelEnforcer, PeerEnforcer};
    let mut lab = TunnelLab::new("pspare");
    lab.spawn(
        &lab.inet.clone(),
        &["iperf3", "-s", "-B", INET, "-p", "5201"],
    );
    let base = lab.input(vec![]);
    let enforcer = KernelEnforcer::new(lab.dataplane(), base.clone());
    let repair = enforcer.check(vec![policy(B)]).unwrap().unwrap();
    enforcer.repair(&repair).unwrap();
    assert!(enforcer.check(vec![policy(B)]).unwrap().is_none());

    // The next addresses get classes and queues on both devices; every line is taken.
    let spare = "10.77.0.9".parse().unwrap();
    assert_eq!(enforcer.make_spares(&[A, spare]).unwrap(), 8);
    for dev in [lab.wg_s.clone(), base.ifb.clone()] {
        let classes = lab.s(&["tc", "class", "show", "dev", &dev]);
        for id in ["1:2 ", "1:9 "] {
            assert!(
                classes.contains(&format!("class htb {id}parent 1:1 leaf")),
                "{dev}: {classes}"
            );
        }
    }
    assert!(
        enforcer.check(vec![policy(B)]).unwrap().is_none(),
        "spares are not drift"
    );

    // A takes its spare: limited on download only, the spare's upload class limits nothing.
    let a = PeerPolicy {
        download_kbps: Some(4000),
        ..policy(A)
    };
    enforcer.change(&PeerChange::Add(a.clone())).unwrap();
    wait_for("iperf3 server", Duration::from_secs(5), || {
        lab.tcp_connects(&lab.a, INET, 5201)
    });
    let (down, up) = down_at_4_up_free(&lab);
    assert!(enforcer.check(vec![a, policy(B)]).unwrap().is_none());
    eprintln!("measured through a spare: down {down:.3} Mbit/s (limit 4), up {up:.1} Mbit/s");
}
