//! journald when the service runs under systemd with its output connected to the journal,
//! stderr otherwise. The level comes from `WAYLUME_LOG` (error, warn, info, debug, trace).
use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// Drops the netlink crates' chatter about attributes newer than they know; it says nothing
/// about this node and would repeat on every request.
struct Filtered<L>(L);

fn wanted(m: &Metadata) -> bool {
    m.level() <= log::max_level()
        && (!m.target().starts_with("netlink_") || m.level() == log::Level::Error)
}

impl<L: Log> Log for Filtered<L> {
    fn enabled(&self, m: &Metadata) -> bool {
        wanted(m) && self.0.enabled(m)
    }

    fn log(&self, r: &Record) {
        if wanted(r.metadata()) {
            self.0.log(r);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, r: &Record) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{:<5} {}", r.level(), r.args());
    }

    fn flush(&self) {}
}

pub fn init() {
    let level = std::env::var("WAYLUME_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some()
        && systemd_journal_logger::connected_to_journal();
    let logger: Box<dyn Log> = match systemd_journal_logger::JournalLog::new() {
        Ok(j) if journal => Box::new(Filtered(j.with_syslog_identifier("waylume-server".into()))),
        _ => Box::new(Filtered(Stderr)),
    };
    let _ = log::set_boxed_logger(logger);
    log::set_max_level(level);
}
