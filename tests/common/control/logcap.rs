//! Captures log lines so tests can count what an operator would see in the journal. One logger
//! per test binary; tests tell their lines apart by the server id in them.
use std::sync::{Mutex, OnceLock};

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    // Printed too: a failing test's output then shows what the journal would.
    #[allow(clippy::print_stderr)]
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = r.args().to_string();
            eprintln!("[{}] {line}", r.level());
            if let Ok(mut l) = LINES.lock() {
                l.push((r.level(), line));
            }
        }
    }
    fn flush(&self) {}
}

pub fn install() {
    INSTALLED.get_or_init(|| {
        if log::set_boxed_logger(Box::new(Capture)).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    });
}

/// Lines (info and up) that mention `needle`, oldest first.
pub fn lines(needle: &str) -> Vec<(log::Level, String)> {
    LINES
        .lock()
        .map(|l| {
            l.iter()
                .filter(|(_, m)| m.contains(needle))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}
