//! Progress of long operations (restoring thousands of peers at start, the data-plane bench) on
//! one self-overwriting line of a terminal's stderr. Anywhere else — the journal, a file, a
//! pipe — it writes nothing: the log line at the end of the operation is the record.
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Whether progress lines are wanted: stderr is a terminal and not the journal's stream.
pub fn live() -> bool {
    wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("JOURNAL_STREAM").is_some(),
    )
}

fn wanted(terminal: bool, journal: bool) -> bool {
    terminal && !journal
}

/// The text of one progress line (without the carriage return and erase that precede it).
pub fn line(label: &str, done: u64, total: u64, detail: &str) -> String {
    let mut s = format!("{label}: {done}/{total}");
    if let Some(pct) = done.saturating_mul(100).checked_div(total) {
        s.push_str(&format!(" ({pct}%)"));
    }
    if !detail.is_empty() {
        s.push_str(" — ");
        s.push_str(detail);
    }
    s
}

/// A count of steps towards a total, redrawn at most ten times a second.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    live: bool,
    drawn: Option<Instant>,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        Progress::shown(label, total, live())
    }

    fn shown(label: impl Into<String>, total: u64, live: bool) -> Progress {
        Progress {
            label: label.into(),
            total,
            done: 0,
            live,
            drawn: None,
        }
    }

    /// One more step done; `detail` says what comes next.
    pub fn step(&mut self, detail: &str) {
        self.done = (self.done + 1).min(self.total);
        self.draw(detail, true);
    }

    /// `done` steps done so far.
    pub fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        self.draw("", false);
    }

    fn draw(&mut self, detail: &str, always: bool) {
        if !self.live {
            return;
        }
        let due = self
            .drawn
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if always || due {
            let mut err = std::io::stderr().lock();
            let text = line(&self.label, self.done, self.total, detail);
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
            self.drawn = Some(Instant::now());
        }
    }
}

impl Drop for Progress {
    /// Erases the line, so what is printed next starts clean.
    fn drop(&mut self) {
        if self.live && self.drawn.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

/// Awaits `work`, showing `label` and the time spent on a terminal once it takes more than
/// half a second (a quick start shows nothing).
pub async fn while_running<T>(label: &str, work: impl std::future::Future<Output = T>) -> T {
    if !live() {
        return work.await;
    }
    let start = Instant::now();
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut drawn = false;
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                let secs = start.elapsed().as_secs_f64();
                if secs >= 0.5 {
                    let _ = write!(std::io::stderr().lock(), "\r\x1b[2K{label}… {secs:.1} s");
                    drawn = true;
                }
            }
        }
    };
    if drawn {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_terminal_outside_the_journal_gets_progress() {
        assert!(wanted(true, false));
        assert!(!wanted(true, true));
        assert!(!wanted(false, false));
    }

    #[test]
    fn lines_say_how_far_and_what_next() {
        assert_eq!(line("restoring", 0, 0, ""), "restoring: 0/0");
        assert_eq!(
            line("bench", 3, 12, "5000 peers, run 1/3"),
            "bench: 3/12 (25%) — 5000 peers, run 1/3"
        );
        assert_eq!(line("x", 12, 12, ""), "x: 12/12 (100%)");
    }

    #[test]
    fn a_hidden_progress_writes_nothing_and_counts_within_its_total() {
        let mut p = Progress::shown("t", 2, false);
        p.step("a");
        p.step("b");
        p.step("c");
        assert_eq!(p.done, 2);
        assert!(p.drawn.is_none());
    }
}
