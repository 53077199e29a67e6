//! Network-namespace lab for privileged tests: namespaces joined by veths, processes started
//! inside them, and a guard that removes all of it. Traffic stays inside the namespaces made here.
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    links: usize,
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
            links: 0,
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
    pub fn link(&mut self, a: &str, a_addr: &str, b: &str, b_addr: &str) {
        self.links += 1;
        let n = self.links;
        self.veth(
            (a, &format!("v{n}a"), a_addr),
            (b, &format!("v{n}b"), b_addr),
        );
    }

    /// A veth pair with the given end names (each lives only in its namespace, so the names
    /// need not be unique on the host), each end addressed and up.
    pub fn veth(&self, (a, ea, a_addr): (&str, &str, &str), (b, eb, b_addr): (&str, &str, &str)) {
        sh(&[
            "ip", "link", "add", ea, "netns", a, "type", "veth", "peer", "name", eb, "netns", b,
        ]);
        sh(&["ip", "-n", a, "addr", "add", a_addr, "dev", ea]);
        sh(&["ip", "-n", b, "addr", "add", b_addr, "dev", eb]);
        sh(&["ip", "-n", a, "link", "set", ea, "up"]);
        sh(&["ip", "-n", b, "link", "set", eb, "up"]);
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

/// Removes what an earlier, interrupted run with this tag left behind: namespaces named
/// `<tag><digits>-…` only, so a tag never sweeps another tag's lab that shares its first letters,
/// and only when no process with that pid runs any more, so a concurrent run keeps its lab.
fn sweep(tag: &str) {
    let list = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or("");
        let ours = ns
            .strip_prefix(tag)
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, _)| {
                !pid.is_empty()
                    && pid.bytes().all(|b| b.is_ascii_digit())
                    && !std::path::Path::new("/proc").join(pid).exists()
            });
        if ours {
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
