//! `nft` and `tc` that hang: killed at their deadline, reported, and peer changes refused with
//! 503 meanwhile instead of queueing; nothing half-made is left behind.
use std::time::Duration;

use serde_json::Value;

use crate::harness::NodeLab;
use common::netns::{sh, wait_for};

use super::*;

/// A directory with `nft` and `tc` that run the real tools, or hang while `hang` exists
/// (writing their pid to `pids` first).
fn stubs(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("stub-bin");
    std::fs::create_dir(&bin).unwrap();
    let (hang, pids) = (dir.join("hang"), dir.join("pids"));
    for tool in ["nft", "tc"] {
        let real = sh(&["sh", "-c", &format!("command -v {tool}")]);
        let script = format!(
            "#!/bin/sh\nif [ -e {hang} ]; then echo $$ >> {pids}; exec sleep 600; fi\nexec {real} \"$@\"\n",
            hang = hang.display(),
            pids = pids.display(),
            real = real.trim(),
        );
        let p = bin.join(tool);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin, hang, pids)
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
#[ignore = "needs root"]
fn a_hung_nft_is_killed_reported_and_peer_changes_get_503_meanwhile() {
    let mut nl = NodeLab::new("hn");
    let (bin, hang, pids) = stubs(nl.lab.dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let d = nl.daemon(&[("PATH", &path), ("WAYLUME_COMMAND_TIMEOUT_SECS", "10")]);
    let (_pid, _notify) = start(&d, &mut nl.lab, "hung", &[]);
    let (ok, first) = d.cli(&["create", "--session-id", "before"]);
    assert!(ok, "{first}");

    std::fs::write(&hang, "").unwrap();
    // A create that runs into the hang (its speed limit goes through `tc`; quotas and maps go
    // over netlink); it comes back once the stuck tool is killed.
    let d2 = nl.daemon(&[("PATH", &path)]);
    let stuck = std::thread::spawn(move || {
        d2.cli(&["create", "--session-id", "stuck", "--download-kbps", "1000"])
    });
    wait_for("a hung tool", Duration::from_secs(20), || {
        std::fs::read_to_string(&pids).is_ok_and(|p| !p.trim().is_empty())
    });
    // Once it has hung for a while, peer changes are refused at once with 503, not queued
    // behind it; reads still answer from the published view.
    let base = "http://127.0.0.1:3000";
    wait_for(
        "the hang to show in /metrics",
        Duration::from_secs(20),
        || metric(&nl.srv, base, "waylume_commands_stuck") >= 1.0,
    );
    let (ok, refused) = d.cli(&["create", "--session-id", "meanwhile"]);
    assert!(!ok, "{refused}");
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    assert!(refused.to_string().contains("busy"), "{refused}");
    let (ok, list) = d.cli(&["list"]);
    assert!(ok, "{list}");
    let (ok, v) = stuck.join().unwrap();
    assert!(!ok, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");

    // Killed: every hung tool is gone, and the journal says which one hung.
    std::fs::remove_file(&hang).unwrap();
    let hung_pids = std::fs::read_to_string(&pids).unwrap();
    wait_for(
        "the hung tools to be killed",
        Duration::from_secs(30),
        || hung_pids.lines().all(|p| !alive(p.trim())),
    );
    let log = std::fs::read_to_string(nl.lab.dir.path().join("hung.log")).unwrap();
    assert!(log.contains("command hung; killed"), "{log}");

    // Back to normal; the refused and failed creates left no peer behind.
    let mut created = Value::Null;
    wait_for("a create to pass again", Duration::from_secs(30), || {
        let (ok, v) = d.cli(&["create", "--session-id", "after"]);
        created = v;
        ok
    });
    let (ok, list) = d.cli(&["list"]);
    assert!(ok);
    let mut sessions: Vec<&str> = list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["session_id"].as_str().unwrap())
        .collect();
    sessions.sort();
    assert_eq!(sessions, ["after", "before"], "{list}");
}
