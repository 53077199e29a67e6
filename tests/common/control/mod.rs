//! Test support for the control plane tests (`tests/control_*.rs`): a real PostgreSQL, a
//! PostgREST-compatible server in front of it, a stand-in node, log capture, and a harness that
//! wires them to a `ControlPlane`.
pub mod edge;
pub mod harness;
pub mod logcap;
pub mod node;
pub mod pg;
pub mod rest;

use std::future::Future;
use std::time::Duration;

/// Polls `cond` every 20 ms until it holds; fails after `limit`. For conditions that another task
/// makes true: no fixed sleeps in the tests.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
