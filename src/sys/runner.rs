//! The one place that runs external commands: an argv (never a shell string), optional stdin
//! for batches, a deadline, and errors that carry the argv and what the tool said on stderr.
//!
//! A tool that hangs (a wedged netlink socket, a lock held by another `nft`) is killed with its
//! whole process group when its deadline passes, and the calls still running are visible through
//! [`InFlight`], so the API can refuse policy changes while one is stuck instead of queueing
//! them behind it.
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long one `nft`/`tc`/`ip` call may take. Batches for thousands of peers finish in well
/// under a second; anything near this is hung.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// A command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub argv: Vec<String>,
    pub stdin: Option<String>,
}

impl Cmd {
    /// A listing that changes nothing (`nft list …`, `tc … show`, `ip … show`).
    pub fn is_read(&self) -> bool {
        self.stdin.is_none()
            && self
                .argv
                .iter()
                .any(|a| matches!(a.as_str(), "list" | "show" | "monitor"))
    }

    pub fn new<I, S>(argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            stdin: None,
        }
    }

    pub fn stdin(mut self, input: impl Into<String>) -> Cmd {
        self.stdin = Some(input.into());
        self
    }

    pub fn display(&self) -> String {
        self.argv.join(" ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run `{argv}`: {source}")]
    Spawn {
        argv: String,
        source: std::io::Error,
    },
    #[error("`{argv}` failed ({status}): {stderr}")]
    Failed {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("`{argv}` did not finish within {} s and was killed", after.as_secs())]
    TimedOut { argv: String, after: Duration },
}

impl RunError {
    /// The tool's own complaint, for callers that treat some failures as answers
    /// (e.g. "No such file or directory" for a table that does not exist).
    pub fn stderr(&self) -> &str {
        match self {
            RunError::Spawn { .. } | RunError::TimedOut { .. } => "",
            RunError::Failed { stderr, .. } => stderr,
        }
    }
}

/// The seam between the data plane and the operating system; tests pass a fake.
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion; `Ok` carries stdout, a non-zero exit is an error.
    fn run(&self, cmd: &Cmd) -> Result<String, RunError>;
}

/// The commands running right now, with their start times; shared by every runner of a process.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Start, argv, and whether the call changes anything (reads are left out of `stuck`).
    calls: Mutex<BTreeMap<u64, (Instant, String, bool)>>,
    next: AtomicU64,
    timeouts: AtomicU64,
}

impl InFlight {
    /// A call that changes the kernel and has run for longer than `after`, if any: its argv.
    /// Reads (`nft list`, `tc show`) are left out: a full listing grows with the peers and runs
    /// off the node's thread, so a slow one holds no change up.
    pub fn stuck(&self, after: Duration) -> Option<String> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls
            .values()
            .find(|(t, _, write)| *write && t.elapsed() > after)
            .map(|(_, argv, _)| argv.clone())
    }

    /// How many calls that change the kernel have run longer than `after`.
    pub fn stuck_count(&self, after: Duration) -> usize {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls
            .values()
            .filter(|(t, _, write)| *write && t.elapsed() > after)
            .count()
    }

    /// Calls killed at their deadline since start.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    fn enter(self: &Arc<Self>, cmd: &Cmd, argv: &str) -> Entered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (Instant::now(), argv.to_string(), !cmd.is_read()));
        Entered(self.clone(), id)
    }
}

/// Removes a call from [`InFlight`] however it ends.
struct Entered(Arc<InFlight>, u64);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// Runs commands on this host, optionally behind a fixed prefix such as
/// `ip netns exec NAME` (how the lab drives a server namespace).
#[derive(Debug, Clone)]
pub struct SystemRunner {
    prefix: Vec<String>,
    timeout: Duration,
    in_flight: Arc<InFlight>,
}

impl Default for SystemRunner {
    fn default() -> SystemRunner {
        SystemRunner {
            prefix: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            in_flight: Arc::default(),
        }
    }
}

impl SystemRunner {
    pub fn new() -> SystemRunner {
        SystemRunner::default()
    }

    pub fn in_netns(ns: &str) -> SystemRunner {
        SystemRunner {
            prefix: ["ip", "netns", "exec", ns].map(String::from).to_vec(),
            ..SystemRunner::default()
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> SystemRunner {
        self.timeout = timeout;
        self
    }

    /// Reports into `in_flight` (shared with the API and other runners).
    pub fn with_in_flight(mut self, in_flight: Arc<InFlight>) -> SystemRunner {
        self.in_flight = in_flight;
        self
    }

    pub fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<String, RunError> {
        let argv: Vec<&String> = self.prefix.iter().chain(cmd.argv.iter()).collect();
        let shown = cmd.display();
        let Some((prog, args)) = argv.split_first() else {
            return Err(RunError::Spawn {
                argv: shown,
                source: std::io::Error::other("empty argv"),
            });
        };
        let spawn_err = |source| RunError::Spawn {
            argv: shown.clone(),
            source,
        };
        let mut child = Command::new(prog)
            .args(args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a kill reaches whatever it started too.
            .process_group(0)
            .spawn()
            .map_err(spawn_err)?;
        let _entered = self.in_flight.enter(cmd, &shown);
        let pid = child.id();
        if let (Some(input), Some(mut pipe)) = (cmd.stdin.clone(), child.stdin.take()) {
            // In a thread: a hung tool stops reading, and a batch larger than the pipe buffer
            // would block here past the deadline. A tool that exits early closes the pipe; its
            // exit status says why.
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(self.timeout) {
            Ok(out) => out.map_err(spawn_err)?,
            Err(_) => {
                kill_group(pid);
                // The pipes close with the group; the waiter then finishes and reaps the child.
                let _ = rx.recv();
                self.in_flight.timeouts.fetch_add(1, Ordering::Relaxed);
                log::error!(argv = shown.as_str(); "command hung; killed after {:?}", self.timeout);
                return Err(RunError::TimedOut {
                    argv: shown,
                    after: self.timeout,
                });
            }
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(RunError::Failed {
            argv: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn kill_group(pid: u32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH: it ended on its own just now; nothing left to kill.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_stdin_and_returns_stdout() {
        let out = SystemRunner::new()
            .run(&Cmd::new(["cat"]).stdin("batch line\n"))
            .unwrap();
        assert_eq!(out, "batch line\n");
    }

    #[test]
    fn failure_carries_argv_and_stderr() {
        let err = SystemRunner::new()
            .run(&Cmd::new(["sh", "-c", "echo nope >&2; exit 3"]))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("nope"), "{text}");
        assert_eq!(err.stderr(), "nope");
    }

    #[test]
    fn a_hung_command_and_its_children_are_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let runner = SystemRunner::new().with_timeout(Duration::from_millis(300));
        // The child starts a grandchild that would keep the pipes open.
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let err = runner
            .run(&Cmd::new(["sh", "-c", script.as_str()]).stdin("x".repeat(1 << 20)))
            .unwrap_err();
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("sh -c"), "{err}");
        assert_eq!(runner.in_flight().timeouts(), 1);
        assert!(runner.in_flight().stuck(Duration::ZERO).is_none());
        let grandchild = std::fs::read_to_string(&pidfile).unwrap();
        let gone = || {
            !std::path::Path::new(&format!("/proc/{}", grandchild.trim())).exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", grandchild.trim()))
                    .unwrap_or_default()
                    .contains(") Z")
        };
        // SIGKILL reaches the group at once but takes effect on the other core's schedule:
        // wait for the grandchild to die, bounded well below its own 60 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gone() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(), "grandchild {grandchild} still running");
    }

    #[test]
    fn a_running_call_is_visible_as_stuck() {
        let runner = SystemRunner::new();
        let flight = runner.in_flight();
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("go");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let f = fifo.clone();
        let t = std::thread::spawn(move || runner.run(&Cmd::new(["cat", f.to_str().unwrap()])));
        let mut seen = None;
        while seen.is_none() {
            seen = flight.stuck(Duration::ZERO);
            std::thread::yield_now();
        }
        assert!(seen.unwrap().starts_with("cat "));
        assert_eq!(flight.stuck_count(Duration::ZERO), 1);
        assert_eq!(flight.stuck_count(Duration::from_secs(3600)), 0);
        std::fs::write(&fifo, "done").unwrap();
        assert_eq!(t.join().unwrap().unwrap(), "done");
        assert!(flight.stuck(Duration::ZERO).is_none());
    }

    #[test]
    fn a_slow_listing_does_not_count_as_stuck() {
        let runner = SystemRunner::new();
        let flight = runner.in_flight();
        // `sh -c 'sleep …' list`: a read by its argv (the word `list`), running for a while.
        let t = std::thread::spawn(move || runner.run(&Cmd::new(["sh", "-c", "sleep 1", "list"])));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while flight.calls.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(flight.calls.lock().unwrap().len(), 1);
        assert!(flight.stuck(Duration::ZERO).is_none());
        assert_eq!(flight.stuck_count(Duration::ZERO), 0);
        t.join().unwrap().unwrap();
        assert!(Cmd::new(["nft", "-j", "list", "table", "inet", "waylume"]).is_read());
        assert!(!Cmd::new(["nft", "-f", "-"]).stdin("list").is_read());
        assert!(!Cmd::new(["tc", "-batch", "-"]).is_read());
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = SystemRunner::new()
            .run(&Cmd::new(["/nonexistent/tool", "x"]))
            .unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent/tool x"));
    }
}

/// A scripted runner for tests: answers from a closure and records every command.
#[cfg(test)]
pub mod fake {
    use std::sync::Mutex;

    use super::{Cmd, RunError, Runner};

    type Answer = dyn Fn(&Cmd, &[Cmd]) -> Result<String, String> + Send + Sync;

    pub struct FakeRunner {
        answer: Box<Answer>,
        pub log: Mutex<Vec<Cmd>>,
    }

    impl FakeRunner {
        /// `answer(cmd, earlier_commands)`: stdout, or stderr of a failure.
        pub fn new(
            answer: impl Fn(&Cmd, &[Cmd]) -> Result<String, String> + Send + Sync + 'static,
        ) -> FakeRunner {
            FakeRunner {
                answer: Box::new(answer),
                log: Mutex::new(Vec::new()),
            }
        }

        pub fn writes(&self) -> Vec<Cmd> {
            let log = self.log.lock().unwrap();
            log.iter().filter(|c| c.stdin.is_some()).cloned().collect()
        }
    }

    impl Runner for FakeRunner {
        fn run(&self, cmd: &Cmd) -> Result<String, RunError> {
            let earlier = self.log.lock().unwrap().clone();
            let out = (self.answer)(cmd, &earlier);
            self.log.lock().unwrap().push(cmd.clone());
            out.map_err(|stderr| RunError::Failed {
                argv: cmd.display(),
                status: "exit status: 1".into(),
                stderr,
            })
        }
    }
}
