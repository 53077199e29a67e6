//! The daemon end to end in network namespaces: a server namespace running `waylume-server` with
//! the userspace backend, a client namespace using the config `peers create` returns with the
//! real `wg` tools, and an "internet" namespace behind the server.
//!
//! Needs root, `wireguard-go`, `wg`, `wg-quick`, `ping`: run with `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::harness::{BIN, INTERNET, NodeLab, client_up};
use common::netns::{Lab, sh, wait_for};

#[test]
#[ignore = "needs root"]
fn peer_lifecycle_and_restart_with_real_clients() {
    let started = std::time::Instant::now();
    let nl = NodeLab::new("d");
    let d = nl.daemon(&[]);
    let NodeLab {
        mut lab,
        srv,
        cli,
        wg_srv,
        ..
    } = nl;
    let log1 = lab.dir.path().join("daemon1.log");
    let (pid, mut notify) = d.start(&mut lab, "daemon1");
    // systemd hears more than READY: the reconcile loop's watchdog pings and a status line.
    assert!(
        notify.wait("WATCHDOG=1", Duration::from_secs(10)),
        "{:?}",
        notify.seen
    );
    assert!(notify.seen.iter().any(|m| {
        m.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("peers"))
    }));

    // The endpoint comes from the server's default-route address.
    let (ok, p1) = d.cli(&["create", "--session-id", "lab-1"]);
    assert!(ok, "{p1}");
    assert_eq!(p1["endpoint"], "198.18.2.1:51820");
    assert_eq!(p1["address"], "10.77.0.2");
    // The client reaches the server over the underlay link, not the default route.
    let config = p1["config"]
        .as_str()
        .unwrap()
        .replace("198.18.2.1:51820", "100.64.1.1:51820");
    let wg_cli = lab.ifname("c");
    client_up(&lab, &cli, &wg_cli, &config, "10.77.0.2", "198.18.0.0/15");
    wait_for("ping through the tunnel", Duration::from_secs(15), || {
        lab.ping(&cli, INTERNET)
    });
    // The server's source-NAT makes the internet host answer to the server, not to 10.77/16.
    let hs = sh(&[
        "ip",
        "netns",
        "exec",
        &cli,
        "wg",
        "show",
        &wg_cli,
        "latest-handshakes",
    ]);
    assert!(
        hs.split_whitespace().nth(1).is_some_and(|t| t != "0"),
        "{hs}"
    );

    // Restart: SIGTERM, exit 0, the data plane stays, and the peer is restored.
    let (ok, p2) = d.cli(&["create", "--session-id", "lab-2"]);
    assert!(ok, "{p2}");
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert!(
        notify.wait("STOPPING=1", Duration::from_secs(10)),
        "{:?}",
        notify.seen
    );
    assert_eq!(
        lab.wait_exit(pid, Duration::from_secs(20)),
        Some(0),
        "{}",
        std::fs::read_to_string(&log1).unwrap()
    );
    assert!(
        lab.ping(&cli, INTERNET),
        "traffic passes while the daemon is stopped"
    );
    let (pid2, _n2) = d.start(&mut lab, "daemon2");
    let (ok, list) = d.cli(&["list"]);
    assert!(ok);
    assert_eq!(list["peers"].as_array().unwrap().len(), 2, "{list}");
    wait_for("ping after restart", Duration::from_secs(10), || {
        lab.ping(&cli, INTERNET)
    });
    let (ok, got) = d.cli(&["get", p1["peer_id"].as_str().unwrap()]);
    assert!(ok);
    assert!(
        got["stats"]["rx_bytes"].as_u64().unwrap() > 0,
        "usage counted: {got}"
    );

    // Delete: the peer leaves WireGuard and traffic stops.
    let (ok, del) = d.cli(&["delete", p1["peer_id"].as_str().unwrap()]);
    assert!(ok, "{del}");
    let peers = sh(&["ip", "netns", "exec", &srv, "wg", "show", &wg_srv, "peers"]);
    assert!(
        !peers.contains(p1["public_key"].as_str().unwrap()),
        "{peers}"
    );
    assert!(!lab.ping(&cli, INTERNET), "no traffic after delete");
    let (ok, missing) = d.cli(&["get", p1["peer_id"].as_str().unwrap()]);
    assert!(!ok);
    assert_eq!(missing["error"]["code"], "not_found");

    // An unsigned request is refused by the running daemon.
    let out = lab.exec(
        &srv,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:3000/api/peers",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    sh(&["kill", "-TERM", &pid2.to_string()]);
    assert_eq!(lab.wait_exit(pid2, Duration::from_secs(20)), Some(0));
    eprintln!("lab test took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
#[ignore = "needs root"]
fn no_kernel_module_and_no_wireguard_go_is_one_clear_line() {
    if std::path::Path::new("/sys/module/wireguard").exists() {
        eprintln!("skipped: this kernel has WireGuard, so the daemon would use it");
        return;
    }
    let mut lab = Lab::new("n");
    let srv = lab.netns("srv");
    let ifname = lab.ifname("s");
    let state = lab.dir.path().join("state").display().to_string();
    let log = lab.dir.path().join("daemon.log");
    let env = [
        ("PATH", "/usr/sbin:/sbin"),
        ("SERVER_ID", "lab"),
        ("WAYLUME_INTERFACE", ifname.as_str()),
        ("WAYLUME_STATE_DIR", state.as_str()),
        ("WAYLUME_ENDPOINT", "192.0.2.1:51820"),
    ];
    let pid = lab.spawn(&srv, &[BIN, "serve"], &env, &log);
    let code = lab.wait_exit(pid, Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(1), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(
        errors[0].contains("no WireGuard kernel module") && errors[0].contains("wireguard-go"),
        "{text}"
    );
}
