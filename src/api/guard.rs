//! What guards the API beyond signatures: sealing answers, the replay floor across restarts,
//! and refusing policy changes while a data-plane command hangs.
use std::sync::{Arc, Mutex};

use warp::http::HeaderMap;

use super::{Api, ApiError, replay};
use crate::core::auth;

/// A data-plane command running longer than this holds up policy changes: they get 503 until it
/// finishes or is killed at its deadline.
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

impl Api {
    /// Create answers carry their secrets in clear (a loopback-only API, or `api.seal = false`).
    pub fn without_sealing(mut self) -> Api {
        if let Some(s) = &mut self.signer {
            s.seal = false;
        }
        self
    }

    /// Refuses requests the previous process may have accepted (see `replay`), and records each
    /// newer accepted timestamp in `floor` before the request runs.
    pub fn with_replay_floor(
        mut self,
        floor: replay::ReplayFloor,
        previous: Option<auth::Floor>,
        started: u64,
    ) -> Api {
        self.verifier = self.verifier.map(|v| {
            let v = v.into_inner().unwrap_or_else(|e| e.into_inner());
            Mutex::new(v.after_restart(previous, started))
        });
        self.floor = Some(Arc::new(floor));
        self
    }

    /// Policy changes answer 503 while one of these commands has run longer than `stuck_after`
    /// ([`STUCK_AFTER`] in the daemon).
    pub fn with_commands(
        mut self,
        commands: Arc<crate::sys::runner::InFlight>,
        stuck_after: std::time::Duration,
    ) -> Api {
        self.commands = Some((commands, stuck_after));
        self
    }

    /// Persists the accepted request's timestamp and nonce before the request runs.
    pub(super) async fn record_floor(&self, h: &HeaderMap) -> Result<(), ApiError> {
        let (Some(floor), Some(_)) = (&self.floor, &self.verifier) else {
            return Ok(());
        };
        // Both headers were checked by the verifier already.
        let get = |name| h.get(name).and_then(|v| v.to_str().ok());
        let (Some(ts), Some(nonce)) = (
            get(auth::HEADER_TIMESTAMP).and_then(|t| t.parse::<u64>().ok()),
            get(auth::HEADER_NONCE).map(str::to_string),
        ) else {
            return Ok(());
        };
        let floor = floor.clone();
        match tokio::task::spawn_blocking(move || floor.record(ts, &nonce)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                log::error!("cannot record the replay floor: {e}");
                Err(ApiError::Unavailable(
                    "cannot record the request; try again".into(),
                ))
            }
            Err(_) => Err(ApiError::Unavailable(
                "cannot record the request; try again".into(),
            )),
        }
    }

    /// 503 while a data-plane command has run past its allowance: a change now would queue
    /// behind it on the node's thread.
    pub(super) fn not_stuck(&self) -> Result<(), ApiError> {
        match self
            .commands
            .as_ref()
            .and_then(|(c, after)| c.stuck(*after))
        {
            Some(cmd) => Err(ApiError::Unavailable(format!(
                "the data plane is busy (`{cmd}` has not finished); try again shortly"
            ))),
            None => Ok(()),
        }
    }
}
