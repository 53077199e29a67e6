//! The daemon under test in a network-namespace lab: started as `waylume-server serve` with a
//! NOTIFY_SOCKET, driven through its own `peers` client, and reached by real WireGuard clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::netns::{Lab, sh};
use serde_json::Value;

/// A NOTIFY_SOCKET for a daemon: receives what it tells systemd.
pub struct Notify {
    sock: UnixDatagram,
    pub path: PathBuf,
    pub seen: Vec<String>,
}

impl Notify {
    pub fn new(dir: &Path, name: &str) -> Notify {
        let path = dir.join(name);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notify {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits until a message containing `line` (e.g. `READY=1`) arrives.
    pub fn wait(&mut self, line: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == line);
                self.seen.push(msg);
                if hit {
                    return true;
                }
            }
        }
        false
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_waylume-server");
pub const SECRET: &str = "1ab5ec2e7f0a5191e0123456789abcdef1ab5ec2e7f0a5191e0123456789abcd";

pub struct Daemon<'a> {
    pub ns: String,
    pub env: Vec<(&'a str, String)>,
}

impl Daemon<'_> {
    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// Starts the daemon with its output in `<lab dir>/<name>.log`; returns once it is READY.
    pub fn start(&self, lab: &mut Lab, name: &str) -> (u32, Notify) {
        let log = lab.dir.path().join(format!("{name}.log"));
        let log = log.as_path();
        let name = format!("notify-{name}");
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
    pub fn cli(&self, args: &[&str]) -> (bool, Value) {
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
pub fn client_up(lab: &Lab, ns: &str, ifname: &str, config: &str, address: &str, route: &str) {
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

/// The usual lab: a client namespace and an "internet" namespace on either side of the server
/// namespace, where the daemon runs with the userspace backend. Underlay addresses:
/// client 100.64.1.2 — 100.64.1.1 server 198.18.2.1 — 198.18.2.2 internet, which also holds
/// 198.19.2.2, one hop away: the node fences every network it has an address in, so what peers
/// reach stands behind its default route, as the internet does. Benchmarking range
/// (198.18.0.0/15), only inside these namespaces.
pub struct NodeLab {
    pub lab: Lab,
    pub srv: String,
    pub cli: String,
    pub net: String,
    pub wg_srv: String,
}

pub const INTERNET: &str = "198.19.2.2";

impl NodeLab {
    pub fn new(tag: &str) -> NodeLab {
        let mut lab = Lab::new(tag);
        let srv = lab.netns("srv");
        let cli = lab.netns("cli");
        let net = lab.netns("net");
        lab.link(&cli, "100.64.1.2/24", &srv, "100.64.1.1/24");
        lab.link(&srv, "198.18.2.1/24", &net, "198.18.2.2/24");
        sh(&[
            "ip",
            "-n",
            &net,
            "addr",
            "add",
            "198.19.2.2/32",
            "dev",
            "lo",
        ]);
        sh(&[
            "ip",
            "-n",
            &srv,
            "route",
            "add",
            "default",
            "via",
            "198.18.2.2",
        ]);
        let wg_srv = lab.ifname("s");
        NodeLab {
            lab,
            srv,
            cli,
            net,
            wg_srv,
        }
    }

    /// The daemon's environment; `extra` adds or overrides variables.
    pub fn daemon<'a>(&self, extra: &[(&'a str, &str)]) -> Daemon<'a> {
        let state = self.lab.dir.path().join("state");
        let mut env: Vec<(&'a str, String)> = vec![
            ("SERVER_ID", "lab-node".into()),
            ("WAYLUME_API_SECRET", SECRET.into()),
            ("WAYLUME_API_BIND", "127.0.0.1".into()),
            ("WAYLUME_INTERFACE", self.wg_srv.clone()),
            ("WAYLUME_WG_BACKEND", "userspace".into()),
            ("WAYLUME_SUBNET", "10.77.0.0/16".into()),
            ("WAYLUME_STATE_DIR", state.display().to_string()),
            ("WAYLUME_RECONCILE_INTERVAL_SECS", "1".into()),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k, v.to_string()));
        }
        Daemon {
            ns: self.srv.clone(),
            env,
        }
    }

    /// Brings up a client for a created peer, reaching the server over the underlay link and
    /// the internet namespace through the tunnel.
    pub fn client(&self, peer: &Value, tag: &str) -> String {
        let config = peer["config"]
            .as_str()
            .unwrap()
            .replace(peer["endpoint"].as_str().unwrap(), "100.64.1.1:51820");
        let ifname = self.lab.ifname(tag);
        let addr = peer["address"].as_str().unwrap();
        client_up(
            &self.lab,
            &self.cli,
            &ifname,
            &config,
            addr,
            "198.18.0.0/15",
        );
        ifname
    }
}
