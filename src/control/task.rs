//! The control plane's loop. One task does everything in sequence (register, heartbeat, usage),
//! so there is no shared mutable state. A failed call is not retried on the spot: the next
//! heartbeat or report comes early, after a backoff delay, and carries fresh numbers.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::error::ControlError;
use super::health::Channel;
use super::outbox::{FK_VIOLATION, SESSIONS, SESSIONS_KEY, Sender};
use super::rows::{Heartbeat, ServerRow, SessionRow};
use super::{ControlPlane, NodeSource, NodeStatus, SessionUsage};

const SERVERS: &str = "waylume_servers";

pub(super) struct Task {
    cp: ControlPlane,
    source: Arc<dyn NodeSource>,
    /// The row exists as far as this node knows.
    registered: bool,
    heartbeat_failures: u32,
    usage_failures: u32,
    /// What each session (by peer id) looked like when last accepted by Supabase; only changes
    /// are re-sent.
    sent: HashMap<String, SessionUsage>,
    /// Outbox entries Supabase refused for good; skipped until the next start.
    parked: HashSet<i64>,
    /// Set when a usage report found the server row missing.
    heartbeat_now: bool,
}

impl Task {
    pub fn new(cp: ControlPlane, source: Arc<dyn NodeSource>) -> Task {
        Task {
            cp,
            source,
            registered: false,
            heartbeat_failures: 0,
            usage_failures: 0,
            sent: HashMap::new(),
            parked: HashSet::new(),
            heartbeat_now: false,
        }
    }

    fn id(&self) -> &str {
        self.cp.node.server_id.as_str()
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut next_beat = Instant::now();
        let mut next_usage = Instant::now() + self.cp.usage_interval;
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                () = sleep_until(next_beat.min(next_usage)) => {}
            }
            if Instant::now() >= next_beat {
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break,
                    wait = self.heartbeat() => next_beat = Instant::now() + wait,
                }
            }
            if Instant::now() >= next_usage {
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break,
                    wait = self.report_usage() => next_usage = Instant::now() + wait,
                }
            }
            if std::mem::take(&mut self.heartbeat_now) {
                next_beat = Instant::now();
            }
        }
        self.stop().await;
    }

    /// Registers if the row is not known to exist, else PATCHes it; an empty PATCH answer means
    /// someone deleted the row, so register again at once. Returns the wait until the next beat.
    async fn heartbeat(&mut self) -> Duration {
        let snap = self.source.snapshot();
        let now = SystemTime::now();
        let mut result = Ok(());
        if self.registered {
            let body = Heartbeat::new(&snap, now);
            let patch = self
                .cp
                .rest
                .patch_eq(SERVERS, "id", self.id(), "id,status", &body);
            match patch.await {
                Ok(rows) if rows.is_empty() => {
                    log::info!(
                        "supabase: {} has no row in {SERVERS}; registering again",
                        self.id()
                    );
                    self.set_registered(false);
                }
                Ok(rows) => {
                    let status = rows.first().and_then(|r| r.get("status"));
                    let drained = status.and_then(|s| s.as_str()) == Some("draining");
                    self.cp.health.set_operator_draining(self.id(), drained);
                }
                Err(e) => result = Err(e),
            }
        }
        if !self.registered && result.is_ok() {
            let row = ServerRow::new(&self.cp.node, &snap, self.cp.heartbeat_interval, now);
            result = self.cp.rest.upsert(SERVERS, "id", &row).await;
            if result.is_ok() {
                self.set_registered(true);
                // A re-created row has lost its sessions (ON DELETE CASCADE): send them all.
                self.sent.clear();
            }
        }
        match result {
            Ok(()) => {
                self.heartbeat_failures = 0;
                self.cp.health.ok(Channel::Heartbeat, self.id(), now);
                self.cp.heartbeat_interval
            }
            Err(e) => {
                let wait = self.failed(Channel::Heartbeat, &e);
                wait.unwrap_or(self.cp.heartbeat_interval)
            }
        }
    }

    /// Sends the sessions that changed since Supabase last accepted them, in batches.
    async fn report_usage(&mut self) -> Duration {
        if !self.registered {
            // Rows would only bounce off the foreign key; the heartbeat registers first.
            return self.cp.usage_interval;
        }
        let all = self.source.usage();
        let changed: Vec<SessionUsage> = all
            .iter()
            .filter(|u| self.sent.get(&u.peer_id) != Some(*u))
            .cloned()
            .collect();
        for chunk in changed.chunks(self.cp.timing.usage_batch.max(1)) {
            let rows: Vec<SessionRow> = chunk
                .iter()
                .map(|u| SessionRow::new(self.id(), u))
                .collect();
            if let Err(e) = self.cp.rest.upsert(SESSIONS, SESSIONS_KEY, &rows).await {
                return self.usage_failed(&e);
            }
            for u in chunk {
                self.sent.insert(u.peer_id.clone(), u.clone());
            }
            // Per batch: a later batch failing must not hide that this one arrived.
            self.source.usage_reported(chunk);
        }
        let live: HashSet<&str> = all.iter().map(|u| u.peer_id.as_str()).collect();
        self.sent.retain(|k, _| live.contains(k.as_str()));
        // After the live rows: a removed peer's final row is newer than any live one read before.
        let mut sender = Sender {
            rest: &self.cp.rest,
            source: self.source.as_ref(),
            server_id: self.cp.node.server_id.as_str(),
            batch: self.cp.timing.usage_batch,
            parked: &mut self.parked,
            health: &self.cp.health,
        };
        if let Err(e) = sender.send_all().await {
            return self.usage_failed(&e);
        }
        self.usage_failures = 0;
        self.cp
            .health
            .ok(Channel::Usage, self.id(), SystemTime::now());
        self.cp.usage_interval
    }

    fn usage_failed(&mut self, e: &ControlError) -> Duration {
        if e.code() == Some(FK_VIOLATION) {
            log::info!(
                "supabase: {} has no row in {SERVERS}; registering again",
                self.id()
            );
            self.set_registered(false);
            self.heartbeat_now = true;
        }
        let wait = self.failed(Channel::Usage, e);
        wait.unwrap_or(self.cp.usage_interval)
    }

    /// Counts a failure and picks the next wait: a backoff delay for retryable errors, `None`
    /// (the regular interval) for the rest.
    fn failed(&mut self, ch: Channel, e: &ControlError) -> Option<Duration> {
        let attempts = match ch {
            Channel::Heartbeat => &mut self.heartbeat_failures,
            Channel::Usage => &mut self.usage_failures,
        };
        let retry = e.is_retryable().then(|| {
            self.cp
                .timing
                .backoff
                .next(*attempts, rand::random::<f64>(), e.retry_after())
        });
        *attempts = attempts.saturating_add(1);
        self.cp
            .health
            .fail(ch, self.cp.node.server_id.as_str(), e, retry);
        retry
    }

    fn set_registered(&mut self, registered: bool) {
        self.registered = registered;
        self.cp.health.set_registered(registered);
    }

    /// `status = offline` first, so that the fleet stops sending sessions here at once; then a
    /// last usage report with what is left of the shutdown budget (anything it cannot send
    /// stays in the store's outbox or is re-read from the live counters on the next start). The
    /// PATCH is sent even if this run never registered: a row from the previous run may still
    /// say online.
    async fn stop(mut self) {
        let budget = self.cp.timing.shutdown_budget;
        let deadline = Instant::now() + budget;
        self.mark_offline(deadline).await;
        if self.registered
            && tokio::time::timeout_at(deadline, self.report_usage())
                .await
                .is_err()
        {
            log::warn!("supabase: {} final usage report timed out", self.id());
        }
    }

    async fn mark_offline(&self, deadline: Instant) {
        let budget = self.cp.timing.shutdown_budget;
        let mut snap = self.source.snapshot();
        snap.status = NodeStatus::Offline;
        let body = Heartbeat::new(&snap, SystemTime::now());
        let patch = self.cp.rest.patch_eq(SERVERS, "id", self.id(), "id", &body);
        match tokio::time::timeout_at(deadline, patch).await {
            Ok(Ok(rows)) if rows.is_empty() => {
                log::info!("supabase: {} has no row to mark offline", self.id());
            }
            Ok(Ok(_)) => log::info!("supabase: {} marked offline", self.id()),
            Ok(Err(e)) => log::warn!("supabase: {} could not be marked offline: {e}", self.id()),
            Err(_) => log::warn!(
                "supabase: {} could not be marked offline within {:.1} s",
                self.id(),
                budget.as_secs_f64()
            ),
        }
    }
}

/// Resolves once shutdown is requested or the sender is gone.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // wait_for returns an error only when the sender was dropped: stop then, too.
    let _ = rx.wait_for(|stop| *stop).await;
}
