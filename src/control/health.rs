//! How the link to Supabase is doing, for `/health`, `/metrics` and the journal. The journal gets
//! one line per state change (healthy → failing(kind) → healthy), not one per failed call: a node
//! cut off from Supabase for a day must not bury everything else in its log.
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::error::ControlError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum LinkState {
    /// Nothing has been tried yet.
    Starting,
    Healthy,
    /// `reason` is the failure kind (`HTTP 401`, `timeout`, `unreachable`, `HTTP 400 23502`…).
    Failing {
        reason: String,
    },
}

/// A copy of the control plane's state; cheap to take on every `/health` or `/metrics` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlHealth {
    /// Registration and heartbeats.
    pub heartbeat: LinkState,
    /// Usage reports.
    pub usage: LinkState,
    /// The server row is known to exist (registered since start or last seen by a heartbeat).
    pub registered: bool,
    /// Heartbeat failures since the last success.
    pub consecutive_failures: u32,
    /// Every failed registration or heartbeat since start (the `/metrics` counter).
    pub heartbeat_failures_total: u64,
    pub usage_failures_total: u64,
    /// Unix seconds of the last successful registration or heartbeat.
    pub last_heartbeat_ok_unix: Option<u64>,
    /// An operator set the row's status to `draining`: the fleet sends no new sessions here.
    pub operator_draining: bool,
    /// Outbox rows Supabase refused for good (kept in the store, retried after a restart).
    pub parked: u64,
}

impl ControlHealth {
    fn new() -> Self {
        ControlHealth {
            heartbeat: LinkState::Starting,
            usage: LinkState::Starting,
            registered: false,
            consecutive_failures: 0,
            heartbeat_failures_total: 0,
            usage_failures_total: 0,
            last_heartbeat_ok_unix: None,
            operator_draining: false,
            parked: 0,
        }
    }

    /// The fleet can see this node: its last registration or heartbeat went through.
    pub fn is_healthy(&self) -> bool {
        self.heartbeat == LinkState::Healthy
    }

    /// Lines for `/metrics`: whether the fleet sees this node, and its failures.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::api::metrics::family;
        use std::fmt::Write;
        family(
            out,
            "waylume_control_plane_up",
            "gauge",
            "1 when the last registration or heartbeat reached the fleet database.",
        );
        let _ = writeln!(
            out,
            "waylume_control_plane_up {}",
            u8::from(self.is_healthy())
        );
        for (name, help, v) in [
            (
                "waylume_heartbeat_failures_total",
                "Failed registrations and heartbeats.",
                self.heartbeat_failures_total,
            ),
            (
                "waylume_usage_report_failures_total",
                "Failed usage reports.",
                self.usage_failures_total,
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        if let Some(t) = self.last_heartbeat_ok_unix {
            let name = "waylume_heartbeat_last_success_timestamp_seconds";
            family(
                out,
                name,
                "gauge",
                "Unix time of the last successful heartbeat.",
            );
            let _ = writeln!(out, "{name} {t}");
        }
    }

    /// One word or phrase for `/health`: `starting`, `healthy`, or `failing: <kind>`, with
    /// an operator's drain and outbox rows Supabase refused in brackets.
    pub fn summary(&self) -> String {
        let mut s = match &self.heartbeat {
            LinkState::Starting => "starting".to_string(),
            LinkState::Healthy => "healthy".to_string(),
            LinkState::Failing { reason } => format!("failing: {reason}"),
        };
        let mut notes = Vec::new();
        if self.operator_draining {
            notes.push("drained by operator".to_string());
        }
        if self.parked > 0 {
            notes.push(format!("{} outbox rows refused", self.parked));
        }
        if !notes.is_empty() {
            s = format!("{s} ({})", notes.join("; "));
        }
        s
    }
}

/// A shared view of [`ControlHealth`]; clone it into the API before the control plane starts.
#[derive(Debug, Clone)]
pub struct HealthHandle(Arc<Mutex<ControlHealth>>);

impl HealthHandle {
    pub(crate) fn new() -> Self {
        HealthHandle(Arc::new(Mutex::new(ControlHealth::new())))
    }

    pub fn get(&self) -> ControlHealth {
        self.lock().clone()
    }

    /// Logs a change of the operator's drain once.
    pub(crate) fn set_operator_draining(&self, id: &str, draining: bool) {
        let mut h = self.lock();
        if h.operator_draining != draining {
            if draining {
                log::info!("supabase: {id} is drained by an operator; no new sessions come here");
            } else {
                log::info!("supabase: {id} is no longer drained");
            }
            h.operator_draining = draining;
        }
    }

    pub(crate) fn add_parked(&self, n: u64) {
        self.lock().parked += n;
    }

    fn lock(&self) -> MutexGuard<'_, ControlHealth> {
        // A panic elsewhere while holding this lock leaves plain counters behind; still readable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_registered(&self, registered: bool) {
        self.lock().registered = registered;
    }
}

/// Which of the two channels a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Heartbeat,
    Usage,
}

impl HealthHandle {
    /// Records a success and logs if that is news.
    pub(crate) fn ok(&self, ch: Channel, server: &str, now: SystemTime) {
        let mut h = self.lock();
        let before = state(&h, ch).clone();
        *state_mut(&mut h, ch) = LinkState::Healthy;
        if ch == Channel::Heartbeat {
            let failures = h.consecutive_failures;
            h.consecutive_failures = 0;
            h.registered = true;
            h.last_heartbeat_ok_unix = now.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
            drop(h);
            match before {
                LinkState::Starting => log::info!("supabase: {server} registered in the fleet"),
                LinkState::Failing { reason } => log::info!(
                    "supabase: {server} heartbeat recovered after {failures} failed attempt(s) ({reason})"
                ),
                LinkState::Healthy => {}
            }
        } else if let LinkState::Failing { reason } = before {
            drop(h);
            log::info!("supabase: {server} usage reports recovered ({reason})");
        }
    }

    /// Records a failure; logs only when the state or the kind of failure changed. `retry_in` is
    /// `None` when the error is not retryable and the next try waits for the regular interval.
    pub(crate) fn fail(
        &self,
        ch: Channel,
        server: &str,
        err: &ControlError,
        retry_in: Option<Duration>,
    ) {
        let mut h = self.lock();
        let next = LinkState::Failing { reason: err.kind() };
        let changed = *state(&h, ch) != next;
        *state_mut(&mut h, ch) = next;
        match ch {
            Channel::Heartbeat => {
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                h.heartbeat_failures_total += 1;
            }
            Channel::Usage => h.usage_failures_total += 1,
        }
        drop(h);
        if changed {
            let what = match ch {
                Channel::Heartbeat => "heartbeat",
                Channel::Usage => "usage reports",
            };
            let then = match retry_in {
                Some(d) => format!("retrying with backoff (next in {:.1} s)", d.as_secs_f64()),
                None => "not retryable; trying again at the regular interval".into(),
            };
            log::warn!("supabase: {server} {what} failing: {err}; {then}");
        }
    }
}

fn state(h: &ControlHealth, ch: Channel) -> &LinkState {
    match ch {
        Channel::Heartbeat => &h.heartbeat,
        Channel::Usage => &h.usage,
    }
}

fn state_mut(h: &mut ControlHealth, ch: Channel) -> &mut LinkState {
    match ch {
        Channel::Heartbeat => &mut h.heartbeat,
        Channel::Usage => &mut h.usage,
    }
}
