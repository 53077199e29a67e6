//! The Supabase control plane: the node registers itself in the fleet's `waylume_servers` table,
//! keeps its row fresh with heartbeats, and reports each session's usage into `vpn_sessions`.
//!
//! It runs as its own task ([`ControlPlane::run`]) and never blocks the API, READY or the
//! reconcile loop: the daemon hands it a [`NodeSource`] to read from and a shutdown signal, and
//! reads its state back through a [`HealthHandle`]. Without `SUPABASE_URL` nothing here is built
//! and no request is ever sent ([`ControlPlane::from_config`] returns `None`).
mod client;
mod error;
mod health;
mod outbox;
mod rows;
mod task;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::Serialize;

pub use error::{ControlError, ErrorBody, parse_retry_after};
pub use health::{ControlHealth, HealthHandle, LinkState};
pub use rows::{owed_session, rfc3339};

use crate::config::{Config, ServerId, SupabaseConfig};
use crate::core::backoff::Backoff;

/// What the daemon tells the control plane, called from the control plane's own task. The
/// synchronous methods must answer from memory, quickly: no netlink, no disk, no locks held for
/// long.
pub trait NodeSource: Send + Sync + 'static {
    /// The node as the fleet should see it right now.
    fn snapshot(&self) -> NodeSnapshot;
    /// Every live session. Counters are absolute: the stored baseline plus what the kernel
    /// counts now. Removed peers' final rows come from [`owed`](Self::owed) instead.
    fn usage(&self) -> Vec<SessionUsage>;
    /// These rows (exactly as returned by [`usage`](Self::usage)) reached Supabase.
    fn usage_reported(&self, _rows: &[SessionUsage]) {}
    /// Up to `limit` outbox entries with an id above `after`, oldest first: what the node owes
    /// Supabase and keeps in its store until acknowledged. Async: the store is the node's.
    fn owed(&self, _after: i64, _limit: usize) -> BoxFuture<'_, Vec<Owed>> {
        Box::pin(async { Vec::new() })
    }
    /// These entries reached Supabase; delete them (each only if unchanged since it was read).
    fn acknowledge<'a>(&'a self, _done: &'a [Owed]) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// One outbox entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Owed {
    pub id: i64,
    /// Bumped when the entry changes (a summary that grew); an acknowledgement of an older
    /// revision deletes nothing.
    pub rev: i64,
    pub kind: OwedKind,
    /// The row as Supabase takes it, without `server_id` (the control plane adds it).
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwedKind {
    /// A removed peer's final `vpn_sessions` row ([`owed_session`]).
    Session,
    /// A `waylume_usage_summaries` row: the oldest sessions of an overflowing outbox, folded.
    Summary,
}

impl OwedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwedKind::Session => "session",
            OwedKind::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Option<OwedKind> {
        match s {
            "session" => Some(OwedKind::Session),
            "summary" => Some(OwedKind::Summary),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    /// Base64 public key of the WireGuard interface.
    pub wg_public_key: String,
    /// `host:port` that client configs use as `Endpoint`.
    pub endpoint: String,
    /// The public address, when known (`None` if the endpoint is a name that was not resolved).
    pub public_ip: Option<IpAddr>,
    /// Peers configured on the node.
    pub peer_count: u32,
    /// Peers with a handshake in the last 180 s; reported as `current_load`.
    pub active_peers: u32,
    /// `Draining` here means the node cannot take new peers (full, data plane degraded); it is
    /// written as `accepting = false`, never over the row's `status`, which an operator owns.
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Accepting new peers.
    Online,
    /// Serving its peers but not taking new ones (e.g. at capacity or data plane degraded).
    Draining,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUsage {
    pub peer_public_key: String,
    pub peer_id: String,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    /// Bytes received from the peer since it was created (baseline + live).
    pub rx_bytes: u64,
    /// Bytes sent to the peer since it was created (baseline + live).
    pub tx_bytes: u64,
    /// Bytes per classified protocol (`bittorrent`, `http`, `tls`, `ssh`, `quic`, `dns`, `unknown`).
    pub protocol_bytes: BTreeMap<String, u64>,
    /// Any BitTorrent traffic seen.
    pub bittorrent: bool,
    pub status: SessionStatus,
    pub last_handshake: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Capped,
    Expired,
    Idle,
    Deleted,
}

/// The fixed facts about this node, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub server_id: ServerId,
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub max_capacity: u16,
    pub wg_port: u16,
    pub api_port: u16,
    pub version: String,
}

impl NodeInfo {
    pub fn from_config(cfg: &Config) -> NodeInfo {
        NodeInfo {
            server_id: cfg.server_id.clone(),
            country: cfg.node.country.clone(),
            city: cfg.node.city.clone(),
            latitude: cfg.node.latitude,
            longitude: cfg.node.longitude,
            max_capacity: cfg.node.max_capacity,
            wg_port: cfg.wireguard.listen_port,
            api_port: cfg.api.port,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Timeouts and retry schedule. The defaults suit Supabase (its API gives up at 60 s); tests
/// shorten them.
#[derive(Debug, Clone)]
pub struct Timing {
    pub connect_timeout: Duration,
    /// Whole request, connect to last byte.
    pub request_timeout: Duration,
    pub backoff: Backoff,
    /// How long shutdown may spend marking the node offline and then flushing usage.
    pub shutdown_budget: Duration,
    /// Sessions per usage request.
    pub usage_batch: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            backoff: Backoff::default(),
            shutdown_budget: Duration::from_secs(5),
            usage_batch: 500,
        }
    }
}

pub struct ControlPlane {
    rest: client::Rest,
    node: NodeInfo,
    heartbeat_interval: Duration,
    usage_interval: Duration,
    timing: Timing,
    health: HealthHandle,
}

impl ControlPlane {
    /// `None` in standalone mode (no `SUPABASE_URL`): then nothing talks to the network.
    pub fn from_config(cfg: &Config) -> Result<Option<ControlPlane>, ControlError> {
        cfg.supabase
            .as_ref()
            .map(|sb| ControlPlane::new(sb, NodeInfo::from_config(cfg), Timing::default()))
            .transpose()
    }

    /// Builds the HTTP client; sends nothing until [`run`](Self::run).
    pub fn new(
        cfg: &SupabaseConfig,
        node: NodeInfo,
        timing: Timing,
    ) -> Result<ControlPlane, ControlError> {
        let rest = client::Rest::new(
            &cfg.url,
            &cfg.key,
            timing.connect_timeout,
            timing.request_timeout,
        )?;
        Ok(ControlPlane {
            rest,
            node,
            heartbeat_interval: cfg.heartbeat_interval,
            usage_interval: cfg.usage_interval,
            timing,
            health: HealthHandle::new(),
        })
    }

    /// A live view of the control plane's state for `/health` and `/metrics`.
    pub fn health(&self) -> HealthHandle {
        self.health.clone()
    }

    /// Registers, then heartbeats and reports usage until `shutdown` turns `true` (or its sender
    /// is dropped); then marks the node offline first and flushes usage with what is left of
    /// [`Timing::shutdown_budget`], and returns. Spawn it: `tokio::spawn(cp.run(source, rx))`.
    pub async fn run(
        self,
        source: std::sync::Arc<dyn NodeSource>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        task::Task::new(self, source).run(shutdown).await;
    }
}
