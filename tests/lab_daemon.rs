//! The daemon end to end in network namespaces: a server namespace running `waylume-server` with
//! the userspace backend, a client namespace using the config `peers create` returns with the
//! real `wg` tools, and an "internet" namespace behind the server.
//!
//! Needs root, `wireguard-go`, `wg`, `wg-quick`, `ping`: run with `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lab;

use std::path::Path;
use std::time::Duration;

use lab::{Lab, Notify, sh, wait_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_waylume-server");
const SECRET: &str = "lab-secret-for-signing-0123456789";

struct Daemon<'a> {
    ns: String,
    env: Vec<(&'a str, String)>,
}

impl Daemon<'_> {
    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn start(&self, lab: &mut Lab, log: &Path) -> (u32, Notify) {
        let name = format!("notify-{}", log.file_name().unwrap().to_string_lossy());
        let mut notify = Notify::new(lab.dir.path(), &name);
        let mut env = self.env();
        let sock = notify.path.display().to_string();
        env.push(("NOTIFY_SOCKET", &sock));
        let pid = lab.spawn(&self.ns, &[BIN, "serve"], &env, log);
        let ready = notify.wait("READY=1", Duration::from_secs(30));
        assert!(
            ready,
            "daemon not READY: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        (pid, notify)
    }

    /// `waylume-server peers ...` in the server namespace; the parsed JSON and the exit status.
    fn cli(&self, args: &[&str]) -> (bool, Value) {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.ns, BIN, "peers"]).args(args);
        for (k, v) in self.env() {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v)
    }
}

/// Brings a client interface up from a wg-quick file with the real tools.
fn client_up(lab: &Lab, ns: &str, ifname: &str, config: &str, address: &str, route: &str) {
    let conf = lab.dir.path().join(format!("{ifname}.conf"));
    std::fs::write(&conf, config).unwrap();
    let stripped = sh(&["wg-quick", "strip", conf.to_str().unwrap()]);
    let plain = lab.dir.path().join(format!("{ifname}.plain"));
    std::fs::write(&plain, stripped).unwrap();
    let log = lab.dir.path().join(format!("wggo-{ifname}.log"));
    let out = lab.exec(ns, &["wireguard-go", ifname]);
    assert!(
        out.status.success(),
        "wireguard-go: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = log;
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "wg",
        "setconf",
        ifname,
        plain.to_str().unwrap(),
    ]);
    sh(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{address}/32"),
        "dev",
        ifname,
    ]);
    sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
    sh(&["ip", "-n", ns, "route", "add", route, "dev", ifname]);
}

#[test]
#[ignore = "needs root"]
fn peer_lifecycle_and_restart_with_real_clients() {
    let started = std::time::Instant::now();
    let mut lab = Lab::new("d");
    let srv = lab.netns("srv");
    let cli = lab.netns("cli");
    let net = lab.netns("net");
    lab.link(&cli, "100.64.1.2/24", &srv, "100.64.1.1/24");
    lab.link(&srv, "100.64.2.1/24", &net, "100.64.2.2/24");
    sh(&[
        "ip",
        "-n",
        &srv,
        "route",
        "add",
        "default",
        "via",
        "100.64.2.2",
    ]);
    sh(&[
        "ip",
        "-n",
        &net,
        "route",
        "add",
        "10.77.0.0/16",
        "via",
        "100.64.2.1",
    ]); // TEMP until NAT
    sh(&[
        "ip",
        "netns",
        "exec",
        &srv,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]); // TEMP
    let wg_srv = lab.ifname("s");
    let state = lab.dir.path().join("state");
    let d = Daemon {
        ns: srv.clone(),
        env: vec![
            ("SERVER_ID", "lab-node".into()),
            ("WAYLUME_API_SECRET", SECRET.into()),
            ("WAYLUME_API_BIND", "127.0.0.1".into()),
            ("WAYLUME_INTERFACE", wg_srv.clone()),
            ("WAYLUME_WG_BACKEND", "userspace".into()),
            ("WAYLUME_SUBNET", "10.77.0.0/16".into()),
            ("WAYLUME_STATE_DIR", state.display().to_string()),
            ("WAYLUME_RECONCILE_INTERVAL_SECS", "1".into()),
        ],
    };
    let log1 = lab.dir.path().join("daemon1.log");
    let (pid, _n) = d.start(&mut lab, &log1);

    // The endpoint comes from the server's default-route address.
    let (ok, p1) = d.cli(&["create", "--session-id", "lab-1"]);
    assert!(ok, "{p1}");
    assert_eq!(p1["endpoint"], "100.64.2.1:51820");
    assert_eq!(p1["address"], "10.77.0.2");
    // The client reaches the server over the underlay link, not the default route.
    let config = p1["config"]
        .as_str()
        .unwrap()
        .replace("100.64.2.1:51820", "100.64.1.1:51820");
    let wg_cli = lab.ifname("c");
    client_up(&lab, &cli, &wg_cli, &config, "10.77.0.2", "100.64.2.0/24");
    wait_for("ping through the tunnel", Duration::from_secs(15), || {
        lab.ping(&cli, "100.64.2.2")
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
    assert_eq!(
        lab.wait_exit(pid, Duration::from_secs(20)),
        Some(0),
        "{}",
        std::fs::read_to_string(&log1).unwrap()
    );
    assert!(
        lab.ping(&cli, "100.64.2.2"),
        "traffic passes while the daemon is stopped"
    );
    let log2 = lab.dir.path().join("daemon2.log");
    let (pid2, _n2) = d.start(&mut lab, &log2);
    let (ok, list) = d.cli(&["list"]);
    assert!(ok);
    assert_eq!(list["peers"].as_array().unwrap().len(), 2, "{list}");
    wait_for("ping after restart", Duration::from_secs(10), || {
        lab.ping(&cli, "100.64.2.2")
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
    assert!(!lab.ping(&cli, "100.64.2.2"), "no traffic after delete");
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
