//! The reconcile loop: every interval, and right after each API change, bring the interface,
//! the peers and the data plane back to the stored state, fold the counters in, and remove
//! expired and idle peers. Quiet when nothing changed; each repair is logged and counted, a
//! failure is logged when it first appears and when it clears.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::{Notify, watch};

use crate::app::unix_now;
use crate::core::registry::Selector;
use crate::inspection::Inspection;
use crate::metrics::Metrics;
use crate::node::Node;

/// Every interval: repair the interface and peers, fold counters, remove expired and idle
/// peers. Tells the watchdog only after a pass that worked.
pub async fn run(
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    inspection: Option<Arc<Inspection>>,
    every: Duration,
    trigger: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // Counters are folded every pass but written every sixth: a crash loses nothing the kernel
    // still counts (the next fold picks it up), and API calls rarely wait on the write.
    let mut pass_no = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = trigger.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let n = node.clone();
        pass_no += 1;
        let persist = pass_no.is_multiple_of(6);
        let pass = tokio::task::spawn_blocking(move || {
            let repairs = n.reconcile(persist)?;
            for (id, why) in n.due_for_removal(unix_now()) {
                if let Err(e) = n.delete(&Selector::Id(id), why) {
                    log::warn!("removing an {why:?} peer failed: {e}");
                }
            }
            Ok::<_, crate::node::NodeError>(repairs)
        })
        .await;
        metrics.reconcile_runs.fetch_add(1, Ordering::Relaxed);
        match pass {
            Ok(Ok(repairs)) => {
                if failing {
                    log::info!("reconcile recovered");
                    failing = false;
                }
                if repairs.interface_created
                    && let Some(i) = &inspection
                {
                    i.restart();
                }
                if repairs.any() {
                    metrics.reconcile_repairs.fetch_add(1, Ordering::Relaxed);
                    log::warn!("reconcile repaired the data plane: {repairs:?}");
                }
                metrics.dataplane_ok.store(true, Ordering::Relaxed);
                let (peers, _) = node.count();
                crate::app::notify(&[
                    NotifyState::Watchdog,
                    NotifyState::Status(&format!("{peers} peers")),
                ]);
            }
            Ok(Err(e)) => {
                metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
                metrics.dataplane_ok.store(false, Ordering::Relaxed);
                if !failing {
                    log::error!("reconcile failed: {e}");
                    failing = true;
                }
            }
            Err(e) => log::error!("reconcile task failed: {e}"),
        }
    }
}
