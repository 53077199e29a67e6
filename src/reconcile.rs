//! The reconcile loop: every interval and on demand, bring the kernel back to the plan
//! (observe → plan → apply → verify). Quiet when nothing changed; each repair is logged once,
//! a failure is logged when it first appears and when it clears. Counts feed `/metrics`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::core::plan::PlanInput;
use crate::sys::dataplane::{Applied, Dataplane, DataplaneError};

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileStats {
    pub runs: u64,
    /// Runs that found the kernel different from the plan and changed it.
    pub repairs: u64,
    pub failures: u64,
}

pub struct Reconciler {
    dataplane: Arc<Dataplane>,
    runs: AtomicU64,
    repairs: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Where the loop gets the desired state each time; `None` skips the run (e.g. not ready).
pub type DesiredFn = dyn Fn() -> Option<PlanInput> + Send + Sync;

impl Reconciler {
    pub fn new(dataplane: Arc<Dataplane>) -> Reconciler {
        Reconciler {
            dataplane,
            runs: AtomicU64::new(0),
            repairs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn dataplane(&self) -> &Arc<Dataplane> {
        &self.dataplane
    }

    pub fn stats(&self) -> ReconcileStats {
        ReconcileStats {
            runs: self.runs.load(Ordering::Relaxed),
            repairs: self.repairs.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// One pass; blocking (runs `nft`/`tc`).
    pub fn run_once(&self, input: &PlanInput) -> Result<Applied, DataplaneError> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let result = self.dataplane.apply(input);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(applied) => {
                if last.take().is_some() {
                    log::info!(target: "reconcile", "data plane in place again");
                }
                if !applied.is_empty() {
                    self.repairs.fetch_add(1, Ordering::Relaxed);
                    log::warn!(target: "reconcile", "repaired: {}", applied.changes.join(", "));
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let msg = e.to_string();
                if last.as_deref() != Some(msg.as_str()) {
                    log::error!(target: "reconcile", "{msg} (retrying every interval)");
                    *last = Some(msg);
                }
            }
        }
        result
    }

    /// Runs until `stop` turns true: every `interval`, and at once when `trigger` is notified.
    pub async fn run(
        self: Arc<Self>,
        desired: Arc<DesiredFn>,
        interval: Duration,
        trigger: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = trigger.notified() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            let Some(input) = desired() else { continue };
            let me = Arc::clone(&self);
            // `nft`/`tc` are child processes: keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.run_once(&input)).await;
        }
    }
}

#[cfg(test)]
mod tests;
