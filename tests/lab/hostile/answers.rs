//! Sealed and signed answers through the real daemon on a public bind, opened by a real
//! WireGuard client; a captured request played again after a restart.
use std::time::Duration;

use crate::harness::{INTERNET, NodeLab};
use common::netns::{sh, wait_for};

use super::*;

#[test]
#[ignore = "needs root"]
fn sealed_answers_open_to_a_working_tunnel_and_a_replay_after_restart_is_refused() {
    let mut nl = NodeLab::new("ha");
    let d = nl.daemon(&[("WAYLUME_API_BIND", "0.0.0.0")]);
    let (pid, notify) = start(&d, &mut nl.lab, "answers1", &[]);
    let base = "http://100.64.1.1:3000";

    // On the wire: no key, no preshared key, no config.
    let create = sign("POST", "/api/peers", br#"{"session_id":"sealed-1"}"#);
    let captured = sign("POST", "/api/peers", br#"{"session_id":"captured"}"#);
    let answers = send_from(&nl.cli, base, vec![create, captured.clone()]);
    let wire = String::from_utf8_lossy(&answers[0].body).into_owned();
    assert_eq!(answers[0].status, 201, "{wire}");
    for leak in [
        "private_key",
        "preshared_key",
        "PrivateKey",
        "PresharedKey",
        "[Interface]",
    ] {
        assert!(!wire.contains(leak), "{leak} in clear: {wire}");
    }
    // Opened, it is a config a real client connects with.
    let peer = answers[0].opened();
    let ifname = nl.client(&peer, "c");
    wait_for("ping through the tunnel", Duration::from_secs(15), || {
        nl.lab.ping(&nl.cli, INTERNET)
    });
    let _ = ifname;
    // The operator client verifies the same answers on its own.
    let (ok, list) = d.cli(&["list"]);
    assert!(ok, "{list}");
    assert!(!list.to_string().contains("preshared_key\":\""), "{list}");
    let (ok, _) = d.cli(&["delete", answers[1].opened()["peer_id"].as_str().unwrap()]);
    assert!(ok);

    // Restart; the captured create comes again, well within its 60 s window.
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert!(notify.wait("STOPPING=1", Duration::from_secs(10)));
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(15)), Some(0));
    let (_pid2, _n2) = start(&d, &mut nl.lab, "answers2", &[]);
    let again = send_from(&nl.cli, base, vec![captured]);
    let text = String::from_utf8_lossy(&again[0].body).into_owned();
    assert_eq!(again[0].status, 401, "{text}");
    assert!(text.contains("restarted"), "{text}");
    // A fresh request passes at once, even within the second of the replayed one.
    let (ok, list) = d.cli(&["list"]);
    assert!(ok, "{list}");
    assert_eq!(list["peers"].as_array().unwrap().len(), 1, "{list}");
    assert!(!list.to_string().contains("captured"), "{list}");
}
