//! Enforces inspection's per-flow decisions (`block`, `throttle`) on its own thread: the capture
//! thread only hands decisions over a bounded queue, and this thread writes them with `nft`,
//! all that waited in one batch. It also re-creates its table when something outside removed
//! it (a flushed ruleset): checked every few seconds, and at once when a batch fails.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use crate::core::classify::Action;
use crate::core::plan::flows;
use crate::sys::capture::FlowDecision;
use crate::sys::runner::{Cmd, Runner};

/// How often the table is checked when no decision comes in.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Decisions waiting for `nft`; when full, new ones are dropped and counted (the capture never
/// waits for `nft`).
pub const QUEUE: usize = 4096;
/// Decisions written by one `nft -f`.
const BATCH: usize = 512;

pub struct FlowEnforcer {
    tx: SyncSender<FlowDecision>,
    dropped: Arc<AtomicU64>,
}

impl FlowEnforcer {
    pub fn start(runner: Arc<dyn Runner>) -> std::io::Result<FlowEnforcer> {
        let (tx, rx) = mpsc::sync_channel::<FlowDecision>(QUEUE);
        std::thread::Builder::new()
            .name("flow-policy".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let result = match rx.recv_timeout(CHECK_EVERY) {
                        Ok(first) => {
                            let mut batch = vec![first];
                            batch.extend(rx.try_iter().take(BATCH - 1));
                            apply(runner.as_ref(), &batch)
                        }
                        Err(RecvTimeoutError::Timeout) => ensure_table(runner.as_ref()),
                        Err(RecvTimeoutError::Disconnected) => return,
                    };
                    match (result, failing) {
                        (Err(e), false) => {
                            log::error!("flow policy: {e}");
                            failing = true;
                        }
                        (Ok(()), true) => {
                            log::info!("flow policy: in place again");
                            failing = false;
                        }
                        _ => {}
                    }
                }
            })?;
        Ok(FlowEnforcer {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Hands a `block` or `throttle` decision to the enforcing thread; never blocks. `report`
    /// needs nothing from the kernel and is not queued.
    pub fn submit(&self, d: &FlowDecision) {
        if d.action == Action::Report {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(d.clone())
            && self.dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            log::warn!("flow policy: queue full, decisions dropped");
        }
    }

    /// Decisions dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes a batch in one `nft -f`; when that fails (the table is gone or incomplete, as after an
/// upgrade from a version without the tunnel sets), makes the table complete and retries once.
fn apply(runner: &dyn Runner, batch: &[FlowDecision]) -> Result<(), String> {
    let script: String = batch
        .iter()
        .filter_map(|d| flows::element(d.action, d.l4, d.tunnel, &d.a, &d.b))
        .collect();
    if script.is_empty() {
        return Ok(());
    }
    let write = || {
        runner
            .run(&Cmd::new(["nft", "-f", "-"]).stdin(script.clone()))
            .map(|_| ())
    };
    if write().is_err() {
        ensure_table(runner)?;
        write().map_err(|e| e.to_string())?;
    }
    for d in batch {
        log::debug!("{} flow of {}: {:?}", d.protocol, d.peer, d.action);
    }
    Ok(())
}

/// Makes the table complete: one script that creates it, or brings an existing one up to date
/// keeping the decisions it holds (a node upgraded from a version without the tunnel sets).
/// Only when that fails (a chain or set of another shape) is the table deleted and made anew.
fn ensure_table(runner: &dyn Runner) -> Result<(), String> {
    let listed = runner.run(&Cmd::new([
        "nft",
        "list",
        "table",
        "inet",
        flows::FLOW_TABLE,
    ]));
    if listed.as_deref().is_ok_and(flows::table_complete) {
        return Ok(());
    }
    let make = || {
        runner
            .run(&Cmd::new(["nft", "-f", "-"]).stdin(flows::table()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match make() {
        Err(e) if listed.is_ok() => {
            log::warn!("flow policy: table not as planned ({e}), making it anew");
            let _ = runner.run(&Cmd::new([
                "nft",
                "delete",
                "table",
                "inet",
                flows::FLOW_TABLE,
            ]));
            make()
        }
        done => done,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::Receiver;

    use super::*;
    use crate::core::classify::{Endpoint, Protocol};
    use crate::core::packet::L4;
    use crate::sys::runner::fake::FakeRunner;

    fn decision(n: u16, action: Action) -> FlowDecision {
        let ep = |ip: &str, port| Endpoint {
            ip: ip.parse().unwrap(),
            port,
        };
        FlowDecision {
            peer: "10.0.0.2".parse().unwrap(),
            l4: L4::Tcp,
            a: ep("10.0.0.2", 10_000 + n),
            b: ep("192.0.2.9", 6881),
            protocol: Protocol::Bittorrent,
            tracker: false,
            action,
            hostname: None,
            tunnel: None,
        }
    }

    /// A runner whose first command waits until the test lets it go, so decisions pile up.
    fn gated() -> (Arc<FakeRunner>, mpsc::Sender<()>) {
        let (go, wait) = mpsc::channel::<()>();
        let wait: Mutex<Option<Receiver<()>>> = Mutex::new(Some(wait));
        let runner = FakeRunner::new(move |_, _| {
            if let Some(w) = wait.lock().unwrap().take() {
                let _ = w.recv();
            }
            Ok(String::new())
        });
        (Arc::new(runner), go)
    }

    fn elements(r: &FakeRunner) -> usize {
        r.writes()
            .iter()
            .map(|c| {
                c.stdin
                    .as_deref()
                    .unwrap_or("")
                    .matches("timeout 10m")
                    .count()
                    / 2
            })
            .sum()
    }

    #[test]
    fn only_enforcing_decisions_reach_nft_in_batches_without_listing() {
        let (runner, go) = gated();
        let e = FlowEnforcer::start(runner.clone()).unwrap();
        for n in 0..300 {
            e.submit(&decision(n, Action::Block));
            e.submit(&decision(n, Action::Report));
        }
        go.send(()).unwrap();
        while elements(&runner) < 300 {
            std::thread::yield_now();
        }
        let log = runner.log.lock().unwrap().clone();
        assert!(log.len() <= 2, "{} nft runs for 300 decisions", log.len());
        assert!(log.iter().all(|c| c.argv == ["nft", "-f", "-"]));
        assert_eq!(elements(&runner), 300);
        assert_eq!(e.dropped(), 0);
    }

    /// A table made by the version before the tunnel sets: brought up to date in place (its
    /// decisions kept), not deleted; deleted and made anew only when that fails.
    #[test]
    fn an_old_table_is_upgraded_in_place() {
        let old = "table inet waylume_flows {\n chain forward {\n  ip saddr . meta l4proto . ip daddr \
                   . th sport . th dport @block4 drop\n }\n}\n";
        let runner = FakeRunner::new(move |c, _| {
            Ok(if c.argv[1] == "list" {
                old.into()
            } else {
                String::new()
            })
        });
        ensure_table(&runner).unwrap();
        let log = runner.log.lock().unwrap().clone();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[1].stdin.as_deref(), Some(flows::table().as_str()));

        let complete = flows::table().replace("add rule inet waylume_flows forward ", "");
        let runner = FakeRunner::new(move |_, _| Ok(complete.clone()));
        ensure_table(&runner).unwrap();
        assert_eq!(
            runner.log.lock().unwrap().len(),
            1,
            "a complete table is left alone"
        );

        // The update fails once (a chain of another shape): delete, then make it again.
        let runner = FakeRunner::new(move |c, earlier| match c.argv[1].as_str() {
            "list" => Ok(old.into()),
            "-f" if !earlier.iter().any(|e| e.argv[1] == "delete") => Err("busy".into()),
            _ => Ok(String::new()),
        });
        ensure_table(&runner).unwrap();
        let argv: Vec<String> = runner
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.argv[1].clone())
            .collect();
        assert_eq!(argv, ["list", "-f", "delete", "-f"]);

        // No table at all: made, nothing deleted.
        let runner = FakeRunner::new(|c, _| match c.argv[1].as_str() {
            "list" => Err("No such file or directory".into()),
            _ => Ok(String::new()),
        });
        ensure_table(&runner).unwrap();
        let argv: Vec<String> = runner
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.argv[1].clone())
            .collect();
        assert_eq!(argv, ["list", "-f"]);
    }

    #[test]
    fn tunnelled_decisions_go_to_the_tunnel_sets() {
        let runner = Arc::new(FakeRunner::new(|_, _| Ok(String::new())));
        let e = FlowEnforcer::start(runner.clone()).unwrap();
        let mut d = decision(1, Action::Block);
        d.tunnel = Some(41);
        e.submit(&d);
        while runner.writes().is_empty() {
            std::thread::yield_now();
        }
        let w = runner.writes()[0].stdin.clone().unwrap();
        assert!(
            w.starts_with(
                "add element inet waylume_flows tunnel_block4 { 10.0.0.2 . 41 . 192.0.2.9 "
            ),
            "{w}"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (runner, go) = gated();
        let e = FlowEnforcer::start(runner.clone()).unwrap();
        let n = u16::try_from(QUEUE + BATCH).unwrap() + 100;
        for i in 0..n {
            e.submit(&decision(i, Action::Throttle));
        }
        // At most one batch left the queue before the runner held the thread up.
        assert!(e.dropped() >= 100, "dropped {}", e.dropped());
        go.send(()).unwrap();
        let written = u64::from(n) - e.dropped();
        while (elements(&runner) as u64) < written {
            std::thread::yield_now();
        }
    }
}
