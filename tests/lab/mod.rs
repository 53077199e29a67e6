//! Network-namespace lab for privileged tests: namespaces joined by veths, processes started
//! inside them, and a guard that removes all of it. Traffic stays inside the namespaces made here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs argv, panicking with its stderr when it fails.
pub fn sh(argv: &[&str]) -> String {
    let out = run(argv);
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// Waits until `f` holds, checking every 50 ms; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(
        poll(limit, f),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Whether `f` comes to hold within `limit`, checking every 50 ms.
pub fn poll(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A set of namespaces with a common, machine-unique prefix; removed on drop.
pub struct Lab {
    pub prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// `tag` keeps tests that run in parallel apart; the pid keeps concurrent runs apart.
    pub fn new(tag: &str) -> Lab {
        let prefix = format!("wl{}{}", tag, std::process::id() % 100_000);
        sweep(&format!("wl{tag}"));
        Lab {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A namespace named `<prefix>-<name>` with loopback up.
    pub fn netns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        sh(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair between two namespaces, each end addressed and up.
    pub fn link(&self, a: &str, a_addr: &str, b: &str, b_addr: &str) {
        let n = self.namespaces.len();
        let (ea, eb) = (
            format!("{}a{n}", self.prefix),
            format!("{}b{n}", self.prefix),
        );
        let (ea, eb) = (
            ea.chars().take(15).collect::<String>(),
            eb.chars().take(15).collect::<String>(),
        );
        sh(&[
            "ip", "link", "add", &ea, "netns", a, "type", "veth", "peer", "name", &eb, "netns", b,
        ]);
        sh(&["ip", "-n", a, "addr", "add", a_addr, "dev", &ea]);
        sh(&["ip", "-n", b, "addr", "add", b_addr, "dev", &eb]);
        sh(&["ip", "-n", a, "link", "set", &ea, "up"]);
        sh(&["ip", "-n", b, "link", "set", &eb, "up"]);
    }

    /// An interface name unique to this lab (≤ 15 bytes; the wireguard-go socket is global).
    pub fn ifname(&self, tag: &str) -> String {
        format!("{}{tag}", self.prefix).chars().take(15).collect()
    }

    pub fn spawn(&mut self, ns: &str, argv: &[&str], env: &[(&str, &str)], log: &Path) -> u32 {
        let f = std::fs::File::create(log).unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Waits for the child with `pid` to exit and returns its exit code.
    pub fn wait_exit(&mut self, pid: u32, limit: Duration) -> Option<i32> {
        let i = self.children.iter().position(|c| c.id() == pid)?;
        let mut child = self.children.remove(i);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("pid {pid} did not exit within {limit:?}");
    }

    pub fn exec(&self, ns: &str, argv: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        run(&full)
    }

    /// `ping` from `ns` to `dst`: one echo, one second.
    pub fn ping(&self, ns: &str, dst: &str) -> bool {
        self.exec(ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", dst])
            .status
            .success()
    }
}

fn kill_pid(pid: &str) {
    let _ = Command::new("kill").args(["-9", pid]).output();
}

/// Removes what an earlier, interrupted run with this tag left behind.
fn sweep(tag: &str) {
    let list = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or("");
        if ns.starts_with(tag) {
            remove_ns(ns);
        }
    }
}

fn remove_ns(ns: &str) {
    // Deleting a namespace does not stop its processes: kill each by pid first.
    let pids = run(&["ip", "netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        kill_pid(pid);
    }
    let _ = run(&["ip", "netns", "del", ns]);
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            remove_ns(ns);
        }
        if let Ok(dir) = std::fs::read_dir("/run/wireguard") {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

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

// The daemon under test and its clients.

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
/// client 100.64.1.2 — 100.64.1.1 server 198.18.2.1 — 198.18.2.2 internet. The internet side
/// uses the benchmarking range (198.18.0.0/15), so the node does not count it among the host's
/// private networks that peers must not reach; it exists only inside these namespaces.
pub struct NodeLab {
    pub lab: Lab,
    pub srv: String,
    pub cli: String,
    pub net: String,
    pub wg_srv: String,
}

pub const INTERNET: &str = "198.18.2.2";

impl NodeLab {
    pub fn new(tag: &str) -> NodeLab {
        let mut lab = Lab::new(tag);
        let srv = lab.netns("srv");
        let cli = lab.netns("cli");
        let net = lab.netns("net");
        lab.link(&cli, "100.64.1.2/24", &srv, "100.64.1.1/24");
        lab.link(&srv, "198.18.2.1/24", &net, "198.18.2.2/24");
        sh(&["ip", "-n", &srv, "route", "add", "default", "via", INTERNET]);
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
            "198.18.2.0/24",
        );
        ifname
    }
}

impl Lab {
    /// A veth between the host and `ns`, for a test that serves something to the namespace from
    /// the host (or reaches it from there). Removed with the namespace.
    pub fn host_link(&self, ns: &str, host_addr: &str, ns_addr: &str) {
        let (eh, en) = (format!("{}h", self.prefix), format!("{}n", self.prefix));
        let (eh, en) = (
            eh.chars().take(15).collect::<String>(),
            en.chars().take(15).collect::<String>(),
        );
        sh(&[
            "ip", "link", "add", &eh, "type", "veth", "peer", "name", &en, "netns", ns,
        ]);
        sh(&["ip", "addr", "add", host_addr, "dev", &eh]);
        sh(&["ip", "-n", ns, "addr", "add", ns_addr, "dev", &en]);
        sh(&["ip", "link", "set", &eh, "up"]);
        sh(&["ip", "-n", ns, "link", "set", &en, "up"]);
    }
}
