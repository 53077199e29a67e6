//! The data-plane lab on top of [`Lab`]: a server, two clients and an "internet" host, joined by
//! veths, with wireguard-go tunnels, and a runner inside the server namespace that records what
//! it writes. Everything lives in the lab's namespaces and goes with it.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use waylume::core::plan::{PeerPolicy, PlanInput};
use waylume::sys::dataplane::{Dataplane, default_route_interface, fenced_networks};
use waylume::sys::nft::NfSocket;
use waylume::sys::runner::{Cmd, RunError, Runner, SystemRunner};

use crate::netns::{Lab, wait_for};

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

pub struct TunnelLab {
    pub lab: Lab,
    pub srv: String,
    pub a: String,
    pub b: String,
    pub inet: String,
    pub wg_s: String,
    pub wg_a: String,
    pub wg_b: String,
    pub runner: Arc<Recording>,
    pub keys: Vec<(String, String)>,
    /// wireguard-go processes started so far.
    wg_started: usize,
}

fn output(argv: &[&str], out: std::process::Output) -> Result<String, String> {
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
    crate::netns::sh(argv)
}

impl TunnelLab {
    /// `tag`: ≤ 5 characters, unique per test (interface names are machine-wide for the UAPI
    /// sockets).
    pub fn new(tag: &str) -> TunnelLab {
        let mut lab = Lab::new(tag);
        let (srv, a, b, inet) = (
            lab.netns("srv"),
            lab.netns("a"),
            lab.netns("b"),
            lab.netns("inet"),
        );
        let runner = Arc::new(Recording {
            inner: SystemRunner::in_netns(&srv),
            writes: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
        });
        let mut t = TunnelLab {
            wg_s: lab.ifname("s"),
            wg_a: lab.ifname("a"),
            wg_b: lab.ifname("b"),
            lab,
            srv,
            a,
            b,
            inet,
            runner,
            keys: Vec::new(),
            wg_started: 0,
        };
        t.underlay();
        t.tunnels();
        t
    }

    pub fn ns(&self, ns: &str, argv: &[&str]) -> Result<String, String> {
        output(argv, self.lab.exec(ns, argv))
    }

    pub fn s(&self, argv: &[&str]) -> String {
        self.ns(&self.srv, argv).unwrap_or_else(|e| panic!("{e}"))
    }

    fn underlay(&mut self) {
        let links = [
            ("va-s", &self.a, "va-c", "10.100.1.1/24", "10.100.1.2/24"),
            ("vb-s", &self.b, "vb-c", "10.100.2.1/24", "10.100.2.2/24"),
            ("vi-s", &self.inet, "vi-c", "198.18.0.1/24", "198.18.0.2/24"),
        ];
        for (s_if, peer_ns, c_if, s_addr, c_addr) in links {
            self.lab
                .veth((&self.srv, s_if, s_addr), (peer_ns, c_if, c_addr));
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
        let path = self.lab.dir.path().join(format!("{name}.key"));
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
        let log = self
            .lab
            .dir
            .path()
            .join(format!("wireguard-go-{ifname}.log"));
        self.lab
            .spawn(ns, &["wireguard-go", "-f", ifname], &[], &log);
        self.wg_started += 1;
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
            && self.wg_started > 2;
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
        let n = self.lab.dir.path().read_dir().map_or(0, |d| d.count());
        let log = self.lab.dir.path().join(format!("spawn-{n}.log"));
        self.lab.spawn(ns, argv, &[], &log);
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

/// An nf_tables netlink socket of namespace `ns`: opened on a thread that entered it (a socket
/// belongs to the namespace it was created in; the thread ends, the process never moves).
/// A route netlink socket for tc reads, opened inside `ns`.
pub fn tc_socket(ns: &str) -> waylume::sys::tc::TcSocket {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            waylume::sys::tc::TcSocket::open().unwrap()
        })
        .join()
        .unwrap()
    })
}

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
