//! The one place that runs external commands: an argv (never a shell string), optional stdin
//! for batches, and errors that carry the argv and what the tool said on stderr.
use std::io::Write as _;
use std::process::{Command, Stdio};

/// A command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub argv: Vec<String>,
    pub stdin: Option<String>,
}

impl Cmd {
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
}

impl RunError {
    /// The tool's own complaint, for callers that treat some failures as answers
    /// (e.g. "No such file or directory" for a table that does not exist).
    pub fn stderr(&self) -> &str {
        match self {
            RunError::Spawn { .. } => "",
            RunError::Failed { stderr, .. } => stderr,
        }
    }
}

/// The seam between the data plane and the operating system; tests pass a fake.
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion; `Ok` carries stdout, a non-zero exit is an error.
    fn run(&self, cmd: &Cmd) -> Result<String, RunError>;
}

/// Runs commands on this host, optionally behind a fixed prefix such as
/// `ip netns exec NAME` (how the lab drives a server namespace).
#[derive(Debug, Clone, Default)]
pub struct SystemRunner {
    prefix: Vec<String>,
}

impl SystemRunner {
    pub fn new() -> SystemRunner {
        SystemRunner::default()
    }

    pub fn in_netns(ns: &str) -> SystemRunner {
        SystemRunner {
            prefix: ["ip", "netns", "exec", ns].map(String::from).to_vec(),
        }
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
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (&cmd.stdin, child.stdin.take()) {
            // A tool that exits early closes the pipe; its exit status says why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
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
