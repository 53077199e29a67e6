//! systemd's notification socket: READY, STATUS, WATCHDOG and STOPPING.
pub use sd_notify::NotifyState;

/// Tells systemd; outside systemd there is no socket to tell, and that is not an error.
pub fn notify(states: &[NotifyState]) {
    let _ = sd_notify::notify(states);
}
