//! The data plane through the daemon: a data cap that is exact and survives a restart, repair
//! after the firewall is flushed and after the interface is deleted, and a restart that loses
//! no packet of a client pinging every 10 ms. Needs root: `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::harness::{INTERNET, NodeLab};
use common::netns::{sh, wait_for};
use serde_json::Value;

/// `count` pings of `size` payload bytes, one at a time; how many came back.
fn pings(nl: &NodeLab, count: u32, size: u32) -> u32 {
    let out = nl.lab.exec(
        &nl.cli,
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-s",
            &size.to_string(),
            "-i",
            "0.05",
            "-W",
            "1",
            INTERNET,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(',')
        .find_map(|part| {
            part.trim()
                .strip_suffix(" received")
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn cap_used(d: &crate::harness::Daemon, id: &str) -> u64 {
    let (_, p) = d.cli(&["get", id]);
    p["stats"]["cap_used_bytes"].as_u64().unwrap()
}

#[test]
#[ignore = "needs root"]
fn cap_is_exact_survives_restart_and_the_node_repairs_itself() {
    let mut nl = NodeLab::new("q");
    let d = nl.daemon(&[]);
    let (pid, _n) = d.start(&mut nl.lab, "d1");
    // 1000-byte pings are 1028-byte IP packets each way: a cap of 20 such round trips.
    let cap = 20 * 2 * 1028;
    let (ok, peer) = d.cli(&["create", "--data-cap-bytes", &cap.to_string()]);
    assert!(ok, "{peer}");
    let id = peer["peer_id"].as_str().unwrap().to_string();
    nl.client(&peer, "c");
    wait_for("the tunnel", Duration::from_secs(15), || {
        nl.lab.ping(&nl.cli, INTERNET)
    });
    let table = nl
        .lab
        .exec(&nl.srv, &["nft", "list", "table", "inet", "waylume"]);
    assert!(table.status.success(), "the daemon installed its table");

    // Part of the cap, then a restart: what was used stays used.
    assert_eq!(pings(&nl, 8, 1000), 8);
    wait_for("cap usage", Duration::from_secs(5), || {
        cap_used(&d, &id) >= 8 * 2 * 1028
    });
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(20)), Some(0));
    // A lost table (as after a reboot) is rebuilt from the stored usage.
    sh(&[
        "ip", "netns", "exec", &nl.srv, "nft", "delete", "table", "inet", "waylume",
    ]);
    let (pid, _n) = d.start(&mut nl.lab, "d2");
    wait_for("the table again", Duration::from_secs(10), || {
        nl.lab
            .exec(&nl.srv, &["nft", "list", "table", "inet", "waylume"])
            .status
            .success()
    });
    let before = cap_used(&d, &id);
    assert!(before >= 8 * 2 * 1028, "usage carried over: {before}");

    // The rest of the cap passes, then nothing: exact to one packet per direction.
    let got = pings(&nl, 20, 1000);
    assert!(
        (11..=13).contains(&got),
        "{got} replies after {before} of {cap} bytes used"
    );
    let (_, p) = d.cli(&["get", &id]);
    assert_eq!(p["stats"]["capped"], Value::Bool(true), "{}", p["stats"]);
    assert_eq!(pings(&nl, 3, 1000), 0, "capped");
    // Raising the cap re-opens the peer.
    let (ok, _) = d.cli(&["data-cap", &id, &(cap * 2).to_string()]);
    assert!(ok);
    assert_eq!(pings(&nl, 3, 1000), 3, "re-opened");

    // Firewall flushed from outside: repaired within the reconcile interval, cap intact.
    let used = cap_used(&d, &id);
    sh(&["ip", "netns", "exec", &nl.srv, "nft", "flush", "ruleset"]);
    let t = Instant::now();
    wait_for("repair after nft flush", Duration::from_secs(10), || {
        nl.lab
            .exec(&nl.srv, &["nft", "list", "table", "inet", "waylume"])
            .status
            .success()
    });
    wait_for("traffic after nft flush", Duration::from_secs(10), || {
        nl.lab.ping(&nl.cli, INTERNET)
    });
    eprintln!(
        "traffic back {:.1} s after the flush",
        t.elapsed().as_secs_f64()
    );
    assert!(
        cap_used(&d, &id) >= used,
        "the restored quota keeps what was used"
    );

    // Interface deleted from outside: re-created with its peers within the interval.
    sh(&["ip", "-n", &nl.srv, "link", "del", &nl.wg_srv]);
    let t = Instant::now();
    let back = common::netns::poll(Duration::from_secs(10), || nl.lab.ping(&nl.cli, INTERNET));
    let log = std::fs::read_to_string(nl.lab.dir.path().join("d2.log")).unwrap();
    assert!(back, "no traffic 10 s after the link was deleted:\n{log}");
    eprintln!(
        "traffic back {:.1} s after the link was deleted",
        t.elapsed().as_secs_f64()
    );
    let m = nl
        .lab
        .exec(&nl.srv, &["curl", "-s", "http://127.0.0.1:3000/metrics"]);
    let metrics = String::from_utf8_lossy(&m.stdout);
    let repairs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("waylume_reconcile_repairs_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(repairs >= 2, "{metrics}");
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(20)), Some(0));
}

#[test]
#[ignore = "needs root"]
fn a_daemon_restart_loses_no_packet() {
    let mut nl = NodeLab::new("r");
    let d = nl.daemon(&[]);
    let (pid, _n) = d.start(&mut nl.lab, "d1");
    let (ok, peer) = d.cli(&[
        "create",
        "--download-kbps",
        "10000",
        "--upload-kbps",
        "10000",
    ]);
    assert!(ok, "{peer}");
    nl.client(&peer, "c");
    wait_for("the tunnel", Duration::from_secs(15), || {
        nl.lab.ping(&nl.cli, INTERNET)
    });
    // 600 pings 10 ms apart (6 s) while the daemon stops and starts again.
    let log = nl.lab.dir.path().join("ping.log");
    let cli = nl.cli.clone();
    let ping = nl.lab.spawn(
        &cli,
        &[
            "ping", "-n", "-q", "-c", "600", "-i", "0.01", "-W", "1", INTERNET,
        ],
        &[],
        &log,
    );
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(20)), Some(0));
    let (_pid2, _n2) = d.start(&mut nl.lab, "d2");
    assert_eq!(
        nl.lab.wait_exit(ping, Duration::from_secs(30)),
        Some(0),
        "every ping answered"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("600 packets transmitted, 600 received"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root"]
fn teardown_on_stop_removes_interface_rules_and_classes() {
    let mut nl = NodeLab::new("t");
    let d = nl.daemon(&[("WAYLUME_TEARDOWN_ON_STOP", "true")]);
    let (pid, _n) = d.start(&mut nl.lab, "d1");
    let (ok, peer) = d.cli(&["create", "--download-kbps", "2000"]);
    assert!(ok, "{peer}");
    let ifb = format!("ifb-{}", nl.wg_srv)
        .chars()
        .take(15)
        .collect::<String>();
    let present =
        |lab: &common::netns::Lab, argv: &[&str]| lab.exec(&nl.srv, argv).status.success();
    wait_for("the data plane", Duration::from_secs(10), || {
        present(&nl.lab, &["nft", "list", "table", "inet", "waylume"])
            && present(&nl.lab, &["ip", "link", "show", &ifb])
    });
    let classes = nl
        .lab
        .exec(&nl.srv, &["tc", "class", "show", "dev", &nl.wg_srv]);
    assert!(String::from_utf8_lossy(&classes.stdout).contains("rate 2Mbit"));
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(20)), Some(0));
    assert!(
        !present(&nl.lab, &["ip", "link", "show", &nl.wg_srv]),
        "interface removed"
    );
    assert!(
        !present(&nl.lab, &["ip", "link", "show", &ifb]),
        "IFB removed"
    );
    assert!(
        !present(&nl.lab, &["nft", "list", "table", "inet", "waylume"]),
        "table removed"
    );
}

#[test]
#[ignore = "needs root"]
fn the_daemon_adopts_state_made_before_it_started() {
    let mut nl = NodeLab::new("m");
    let (srv, wg) = (nl.srv.clone(), nl.wg_srv.clone());
    let ifb = format!("ifb-{wg}").chars().take(15).collect::<String>();
    let state = nl.lab.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // State left by an earlier setup (an older module that declared the link, another tool, a
    // previous daemon): the key, the interface with its address, the IFB with the HTB roots and
    // the redirect, an empty table. The daemon adopts it rather than building it twice.
    let key = sh(&["wg", "genkey"]);
    std::fs::write(state.join("private.key"), &key).unwrap();
    let keyfile = state.join("private.key").display().to_string();
    let _ = nl.lab.exec(&srv, &["wireguard-go", &wg]);
    let ns = |args: &[&str]| {
        let mut argv = vec!["ip", "netns", "exec", srv.as_str()];
        argv.extend_from_slice(args);
        sh(&argv)
    };
    ns(&[
        "wg",
        "set",
        &wg,
        "private-key",
        &keyfile,
        "listen-port",
        "51820",
    ]);
    ns(&["ip", "addr", "add", "10.77.0.1/16", "dev", &wg]);
    ns(&["ip", "link", "set", &wg, "up"]);
    ns(&["ip", "link", "add", &ifb, "type", "ifb"]);
    ns(&["ip", "link", "set", &ifb, "up"]);
    for dev in [&wg, &ifb] {
        ns(&[
            "tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "0",
            "r2q", "10",
        ]);
    }
    ns(&[
        "tc", "qdisc", "add", "dev", &wg, "handle", "ffff:", "ingress",
    ]);
    ns(&[
        "tc", "filter", "add", "dev", &wg, "parent", "ffff:", "prio", "1", "protocol", "all",
        "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", &ifb,
    ]);
    ns(&["nft", "add", "table", "inet", "waylume"]);

    let d = nl.daemon(&[("WAYLUME_STATE_DIR", &state.display().to_string())]);
    let (_pid, _n) = d.start(&mut nl.lab, "d1");
    let (ok, peer) = d.cli(&["create", "--download-kbps", "2000"]);
    assert!(ok, "{peer}");
    assert_eq!(
        peer["server_public_key"].as_str().unwrap(),
        sh(&["sh", "-c", &format!("wg pubkey < {keyfile}")]).trim(),
        "the existing key is the node's key"
    );
    nl.client(&peer, "c");
    wait_for("the tunnel", Duration::from_secs(15), || {
        nl.lab.ping(&nl.cli, INTERNET)
    });
    let roots = ns(&["tc", "qdisc", "show", "dev", &wg]);
    assert_eq!(roots.matches("qdisc htb 1: root").count(), 1, "{roots}");
    let filters = ns(&["tc", "filter", "show", "dev", &wg, "parent", "ffff:"]);
    assert_eq!(
        filters.matches("mirred").count(),
        1,
        "one redirect: {filters}"
    );
    let log = std::fs::read_to_string(nl.lab.dir.path().join("d1.log")).unwrap();
    assert!(
        log.contains("0 peers restored") && !log.contains("interface created"),
        "{log}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_network_the_host_joins_while_running_is_fenced() {
    let mut nl = NodeLab::new("zf");
    let d = nl.daemon(&[]);
    let (_pid, _n) = d.start(&mut nl.lab, "d1");
    let (ok, peer) = d.cli(&["create"]);
    assert!(ok, "{peer}");
    let wg_cli = nl.client(&peer, "c");
    // A host on 203.0.113.0/24 that the node reaches through its default route, for now.
    let far = "203.0.113.2";
    sh(&[
        "ip",
        "-n",
        &nl.net,
        "addr",
        "add",
        "203.0.113.2/32",
        "dev",
        "lo",
    ]);
    sh(&[
        "ip",
        "-n",
        &nl.cli,
        "route",
        "add",
        "203.0.113.0/24",
        "dev",
        &wg_cli,
    ]);
    wait_for("the tunnel", Duration::from_secs(15), || {
        nl.lab.ping(&nl.cli, INTERNET)
    });
    assert!(nl.lab.ping(&nl.cli, far), "not fenced yet");

    // The node gets an address in that network on its uplink: the network is now the host's.
    let uplink = sh(&[
        "ip",
        "-n",
        &nl.srv,
        "-o",
        "addr",
        "show",
        "to",
        "198.18.2.1",
    ]);
    let uplink = uplink.split_whitespace().nth(1).unwrap().to_string();
    sh(&[
        "ip",
        "-n",
        &nl.srv,
        "addr",
        "add",
        "203.0.113.1/24",
        "dev",
        &uplink,
    ]);
    let fenced = || {
        sh(&[
            "ip", "netns", "exec", &nl.srv, "nft", "list", "set", "inet", "waylume", "blocked4",
        ])
        .contains("203.0.113.0/24")
    };
    wait_for("the fence to follow", Duration::from_secs(10), fenced);
    assert!(!nl.lab.ping(&nl.cli, far), "fenced once the host is in it");
    assert!(nl.lab.ping(&nl.cli, INTERNET), "the rest still reachable");

    // And the other way: the address goes, the network opens again.
    sh(&[
        "ip",
        "-n",
        &nl.srv,
        "addr",
        "del",
        "203.0.113.1/24",
        "dev",
        &uplink,
    ]);
    wait_for("the fence to open", Duration::from_secs(10), || !fenced());
    wait_for("the far host again", Duration::from_secs(10), || {
        nl.lab.ping(&nl.cli, far)
    });
}
