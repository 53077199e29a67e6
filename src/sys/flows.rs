//! Enforces inspection's per-flow decisions (`block`, `throttle`) on its own thread: the capture
//! thread only hands decisions over a channel, and this thread writes them with `nft`. It also
//! re-creates its table when something outside removed it (a flushed ruleset).
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::core::plan::flows;
use crate::sys::capture::FlowDecision;
use crate::sys::runner::{Cmd, Runner};

/// How often the table is checked when no decision comes in.
const CHECK_EVERY: Duration = Duration::from_secs(5);

pub struct FlowEnforcer {
    tx: Sender<FlowDecision>,
}

impl FlowEnforcer {
    pub fn start(runner: Arc<dyn Runner>) -> std::io::Result<FlowEnforcer> {
        let (tx, rx) = mpsc::channel::<FlowDecision>();
        std::thread::Builder::new()
            .name("flow-policy".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let result = match rx.recv_timeout(CHECK_EVERY) {
                        Ok(d) => {
                            ensure_table(runner.as_ref()).and_then(|()| apply(runner.as_ref(), &d))
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
        Ok(FlowEnforcer { tx })
    }

    /// Hands a decision to the enforcing thread; never blocks.
    pub fn submit(&self, d: &FlowDecision) {
        let _ = self.tx.send(d.clone());
    }
}

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
    if listed.is_ok() {
        // Present but not as planned: start it again rather than patch it.
        let _ = runner.run(&Cmd::new([
            "nft",
            "delete",
            "table",
            "inet",
            flows::FLOW_TABLE,
        ]));
    }
    runner
        .run(&Cmd::new(["nft", "-f", "-"]).stdin(flows::table()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn apply(runner: &dyn Runner, d: &FlowDecision) -> Result<(), String> {
    let Some(script) = flows::element(d.action, d.l4, &d.a, &d.b) else {
        return Ok(());
    };
    runner
        .run(&Cmd::new(["nft", "-f", "-"]).stdin(script))
        .map(|_| ())
        .map_err(|e| e.to_string())?;
    log::debug!("{} flow of {}: {:?}", d.protocol, d.peer, d.action);
    Ok(())
}
