//! A network-namespace lab: a server, two clients and an "internet" host, joined by veths, with
//! wireguard-go tunnels. Everything lives in namespaces the lab creates and is removed by PID
//! and by name when the lab is dropped.
#![allow(dead_code, clippy::unwrap_used)]
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use waylume::core::plan::{PeerPolicy, PlanInput};
use waylume::sys::dataplane::{Dataplane, default_route_interface, fenced_networks};
use waylume::sys::nft::NfSocket;
use waylume::sys::runner::{Cmd, RunError, Runner, SystemRunner};

pub const SUBNET: &str = "10.77.0.0/16";
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// One hop behind the "internet" namespace's address: the node fences the networks it is in.
pub const INET: &str = "198.19.0.2";
pub const METADATA: &str = "169.254.169.254";

/// Records every command that writes to the kernel (`nft -f`, `tc -batch`), then runs it.
pub struct Recording {
    inner: SystemRunner,
    pub writes: Mutex<Vec<Cmd>>,
    pub calls: AtomicUsize,
}

impl Runner for Recording {
    fn run(&self, cmd: &Cmd) -> Result<String, RunError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if cmd.stdin.is_some() {
            self.writes.lock().unwrap().push(cmd.clone());
        }
        self.inner.run(cmd)
    }
}

pub struct Lab {
    pub tag: String,
    pub srv: String,
    pub a: String,
    pub b: String,
    pub inet: String,
    pub wg_s: String,
    pub wg_a: String,
    pub wg_b: String,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
    pub runner: Arc<Recording>,
    pub keys: Vec<(String, String)>,
}

fn run(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{argv:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{argv:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn must(argv: &[&str]) -> String {
    run(argv).unwrap_or_else(|e| panic!("{e}"))
}

/// Removes namespaces left by an earlier run of the same test (killed before its guard ran).
fn sweep(prefix: &str) {
    let list = run(&["ip", "netns", "list"]).unwrap_or_default();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if ns.starts_with(prefix) {
            kill_ns_pids(ns);
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

fn kill_ns_pids(ns: &str) {
    let pids = run(&["ip", "netns", "pids", ns]).unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = run(&["kill", pid]);
    }
}

/// An nf_tables netlink socket of namespace `ns`: opened on a thread that entered it (a socket
/// belongs to the namespace it was created in; the thread ends, the process never moves).
pub fn nf_socket(ns: &str) -> NfSocket {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            NfSocket::open().unwrap()
        })
        .join()
        .unwrap()
    })
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Lab {
    /// `tag`: ≤ 5 characters, unique per test (names are machine-wide for the UAPI sockets).
    pub fn new(tag: &str) -> Lab {
        let prefix = format!("wldp-{tag}-");
        sweep(&prefix);
        let ns = |r: &str| format!("{prefix}{r}");
        let runner = Arc::new(Recording {
            inner: SystemRunner::in_netns(&ns("srv")),
            writes: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
        });
        let mut lab = Lab {
            tag: tag.into(),
            srv: ns("srv"),
            a: ns("a"),
            b: ns("b"),
            inet: ns("inet"),
            wg_s: format!("wd{tag}s"),
            wg_a: format!("wd{tag}a"),
            wg_b: format!("wd{tag}b"),
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
            runner,
            keys: Vec::new(),
        };
        lab.underlay();
        lab.tunnels();
        lab
    }

    pub fn ns(&self, ns: &str, argv: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(argv);
        run(&v)
    }

    pub fn s(&self, argv: &[&str]) -> String {
        self.ns(&self.srv, argv).unwrap_or_else(|e| panic!("{e}"))
    }

    fn underlay(&mut self) {
        for n in [&self.srv, &self.a, &self.b, &self.inet] {
            must(&["ip", "netns", "add", n]);
            must(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        let links = [
            ("va-s", &self.a, "va-c", "10.100.1.1/24", "10.100.1.2/24"),
            ("vb-s", &self.b, "vb-c", "10.100.2.1/24", "10.100.2.2/24"),
            ("vi-s", &self.inet, "vi-c", "198.18.0.1/24", "198.18.0.2/24"),
        ];
        for (s_if, peer_ns, c_if, s_addr, c_addr) in links {
            must(&[
                "ip", "link", "add", s_if, "netns", &self.srv, "type", "veth", "peer", "name",
                c_if, "netns", peer_ns,
            ]);
            must(&["ip", "-n", &self.srv, "addr", "add", s_addr, "dev", s_if]);
            must(&["ip", "-n", peer_ns, "addr", "add", c_addr, "dev", c_if]);
            must(&["ip", "-n", &self.srv, "link", "set", s_if, "up"]);
            must(&["ip", "-n", peer_ns, "link", "set", c_if, "up"]);
        }
        // The "internet" also holds the metadata address and, one hop away from the server, the
        // address peers reach; the server routes everything to it.
        must(&[
            "ip",
            "-n",
            &self.inet,
            "addr",
            "add",
            "198.19.0.2/32",
            "dev",
            "lo",
        ]);
        must(&[
            "ip",
            "-n",
            &self.inet,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "lo",
        ]);
        must(&[
            "ip",
            "-n",
            &self.srv,
            "route",
            "add",
            "default",
            "via",
            "198.18.0.2",
        ]);
        must(&[
            "ip",
            "-n",
            &self.inet,
            "route",
            "add",
            "10.0.0.0/8",
            "via",
            "198.18.0.1",
        ]);
        self.s(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }

    fn key(&self, name: &str) -> (String, String) {
        let k = must(&["wg", "genkey"]).trim().to_string();
        let path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&path, &k).unwrap();
        let out = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(k.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        (
            path.display().to_string(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }

    pub fn start_wg(&mut self, ns: &str, ifname: &str) {
        let sock = PathBuf::from(format!("/run/wireguard/{ifname}.sock"));
        let _ = std::fs::remove_file(&sock);
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "wireguard-go", "-f", ifname])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        wait_for("wireguard-go socket", Duration::from_secs(5), || {
            sock.exists()
        });
    }

    fn tunnels(&mut self) {
        self.keys = ["s", "a", "b"].iter().map(|n| self.key(n)).collect();
        let (srv, a, b) = (self.srv.clone(), self.a.clone(), self.b.clone());
        let (wg_s, wg_a, wg_b) = (self.wg_s.clone(), self.wg_a.clone(), self.wg_b.clone());
        self.start_wg(&a, &wg_a);
        self.start_wg(&b, &wg_b);
        self.server_wg();
        for (ns, wg, key, addr, endpoint) in [
            (
                &a,
                &wg_a,
                &self.keys[1].0,
                "10.77.0.2/16",
                "10.100.1.1:51820",
            ),
            (
                &b,
                &wg_b,
                &self.keys[2].0,
                "10.77.0.3/16",
                "10.100.2.1:51820",
            ),
        ] {
            self.ns(
                ns,
                &[
                    "wg",
                    "set",
                    wg,
                    "private-key",
                    key,
                    "peer",
                    &self.keys[0].1,
                    "endpoint",
                    endpoint,
                    "allowed-ips",
                    "0.0.0.0/0",
                    "persistent-keepalive",
                    "1",
                ],
            )
            .unwrap();
            must(&["ip", "-n", ns, "link", "set", wg, "mtu", "1420"]);
            must(&["ip", "-n", ns, "addr", "add", addr, "dev", wg]);
            must(&["ip", "-n", ns, "link", "set", wg, "up"]);
            for net in ["198.18.0.0/15", "169.254.169.254/32"] {
                must(&["ip", "-n", ns, "route", "add", net, "dev", wg]);
            }
        }
        let _ = srv;
        let _ = wg_s;
    }

    /// The server's interface with both peers: what the daemon does at start (and after the
    /// interface was deleted).
    pub fn server_wg(&mut self) {
        let (srv, wg_s) = (self.srv.clone(), self.wg_s.clone());
        let restart = self.keys.len() == 3
            && !self.s(&["wg", "show", "interfaces"]).contains(&wg_s)
            && self.children.len() > 2;
        self.start_wg(&srv, &wg_s);
        self.s(&[
            "wg",
            "set",
            &wg_s,
            "listen-port",
            "51820",
            "private-key",
            &self.keys[0].0,
            "peer",
            &self.keys[1].1,
            "allowed-ips",
            "10.77.0.2/32",
            "peer",
            &self.keys[2].1,
            "allowed-ips",
            "10.77.0.3/32",
        ]);
        must(&["ip", "-n", &srv, "link", "set", &wg_s, "mtu", "1420"]);
        must(&[
            "ip",
            "-n",
            &srv,
            "addr",
            "add",
            "10.77.0.1/16",
            "dev",
            &wg_s,
        ]);
        must(&["ip", "-n", &srv, "link", "set", &wg_s, "up"]);
        if restart {
            // The daemon knows its peers' last endpoints; a keepalive to each makes the node
            // start the handshake instead of waiting for the clients' 15-second rekey timer.
            for (ns, wg, key, ip) in [
                (&self.a, &self.wg_a, 1, "10.100.1.2"),
                (&self.b, &self.wg_b, 2, "10.100.2.2"),
            ] {
                let port = self.ns(ns, &["wg", "show", wg, "listen-port"]).unwrap();
                let ep = format!("{ip}:{}", port.trim());
                self.s(&[
                    "wg",
                    "set",
                    &wg_s,
                    "peer",
                    &self.keys[key].1,
                    "endpoint",
                    &ep,
                    "persistent-keepalive",
                    "25",
                ]);
            }
        }
    }

    pub fn dataplane(&self) -> Dataplane {
        Dataplane::new(self.runner.clone(), Arc::new(nf_socket(&self.srv)))
    }

    /// The plan input the daemon would build: host facts read from the server namespace.
    pub fn input(&self, peers: Vec<PeerPolicy>) -> PlanInput {
        let subnet = SUBNET.parse().unwrap();
        let outward = default_route_interface(self.runner.as_ref()).unwrap();
        let (blocked_v4, blocked_v6) =
            fenced_networks(self.runner.as_ref(), &[ipnet::IpNet::V4(subnet)], &[]).unwrap();
        PlanInput {
            iface: self.wg_s.clone(),
            ifb: "wlifb0".into(),
            subnet,
            subnet_v6: None,
            server_addr: SERVER,
            outward,
            isolate: true,
            blocked_v4,
            blocked_v6,
            shaping: true,
            peers,
        }
    }

    /// How many of `count` pings of `size` IP bytes from `ns` to `dst` were answered.
    pub fn pings(&self, ns: &str, dst: &str, count: u32, size: u32) -> u32 {
        let c = count.to_string();
        let s = (size - 28).to_string();
        let out = match self.ns(
            ns,
            &[
                "ping", "-n", "-q", "-c", &c, "-i", "0.05", "-W", "1", "-s", &s, dst,
            ],
        ) {
            Ok(o) | Err(o) => o,
        };
        out.split(',')
            .find_map(|p| {
                p.trim()
                    .strip_suffix(" received")
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn reaches(&self, ns: &str, dst: &str) -> bool {
        self.pings(ns, dst, 2, 84) > 0
    }

    /// Whether a TCP connection from `ns` to `dst:port` is accepted within 2 s (curl's
    /// connect time is zero when it never connected).
    pub fn tcp_connects(&self, ns: &str, dst: &str, port: u16) -> bool {
        let url = format!("telnet://{dst}:{port}");
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "curl",
                "-s",
                "--connect-timeout",
                "2",
                "-m",
                "1",
            ])
            .args(["-o", "/dev/null", "-w", "%{time_connect}", &url])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0.0);
        t > 0.0
    }

    /// Starts a long-running process inside a namespace; stopped when the lab is dropped.
    pub fn spawn(&mut self, ns: &str, argv: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Receiver-side Mbit/s of a 3-second iperf3 run from `ns` to the internet host
    /// (`reverse`: the internet host sends).
    pub fn iperf(&self, ns: &str, port: u16, reverse: bool) -> f64 {
        let p = port.to_string();
        let mut argv = vec!["iperf3", "-c", INET, "-p", &p, "-t", "3", "-J"];
        if reverse {
            argv.push("-R");
        }
        // The server takes one client at a time and may still be closing the previous test.
        let mut last = String::new();
        let mut out = None;
        // With -J its complaint ("the server is busy") is in the JSON on stdout: retry any failure.
        for _ in 0..5 {
            match self.ns(ns, &argv) {
                Ok(o) => {
                    out = Some(o);
                    break;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = out.unwrap_or_else(|| panic!("{last}"));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap()
            / 1e6
    }
}

/// A bare namespace with only `lo`, for tests that need a kernel but no traffic; deleted on drop.
pub struct BareNs {
    pub name: String,
    pub runner: Arc<SystemRunner>,
}

impl BareNs {
    /// `tag`: unique per test.
    pub fn new(tag: &str) -> BareNs {
        let name = format!("wldp-{tag}-bare");
        sweep(&name);
        must(&["ip", "netns", "add", &name]);
        must(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        BareNs {
            runner: Arc::new(SystemRunner::in_netns(&name)),
            name,
        }
    }

    pub fn run(&self, argv: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(argv);
        must(&v)
    }
}

impl Drop for BareNs {
    fn drop(&mut self) {
        kill_ns_pids(&self.name);
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.srv, &self.a, &self.b, &self.inet] {
            kill_ns_pids(ns);
        }
        for ns in [&self.srv, &self.a, &self.b, &self.inet] {
            for _ in 0..50 {
                if run(&["ip", "netns", "del", ns]).is_ok()
                    || !run(&["ip", "netns", "list"])
                        .unwrap_or_default()
                        .contains(ns.as_str())
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for w in [&self.wg_s, &self.wg_a, &self.wg_b] {
            let _ = std::fs::remove_file(format!("/run/wireguard/{w}.sock"));
        }
    }
}

pub fn policy(addr: Ipv4Addr) -> PeerPolicy {
    PeerPolicy {
        addr,
        addr_v6: None,
        download_kbps: None,
        upload_kbps: None,
        cap_bytes: None,
        used_bytes: 0,
    }
}
