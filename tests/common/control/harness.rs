//! One test's world: PostgreSQL with the migration, the PostgREST-compatible server in front of
//! it, a stand-in node, and a control plane with short intervals pointed at them.
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::sync::watch;
use waylume::config::{Secret, SupabaseConfig};
use waylume::control::{ControlPlane, HealthHandle, NodeInfo, NodeSource, Timing};
use waylume::core::backoff::Backoff;

use super::logcap;
use super::node::FakeNode;
use super::pg::PgCluster;
use super::rest::{FakeRest, SERVICE_KEY};

pub const HEARTBEAT: Duration = Duration::from_millis(150);
pub const USAGE: Duration = Duration::from_millis(200);
/// Generous for a loaded CI machine, short enough that a stall test takes seconds.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long tests wait for something the control plane should do within a few intervals.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Harness {
    pub id: String,
    pub rest: FakeRest,
    /// A superuser connection to inspect and tamper with the tables.
    pub db: tokio_postgres::Client,
    pub node: Arc<FakeNode>,
    pub pg: PgCluster,
}

pub struct Running {
    pub health: HealthHandle,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Signals shutdown and waits for the control plane to finish (it is bounded).
    pub async fn stop(self) -> Result<()> {
        self.stop.send_replace(true);
        self.task.await.context("control plane task")
    }
}

impl Harness {
    pub async fn start(id: &str) -> Result<Harness> {
        logcap::install();
        let pg = PgCluster::start().await?;
        let rest = FakeRest::start(&pg).await?;
        let db = pg.connect().await?;
        Ok(Harness {
            id: id.to_string(),
            rest,
            db,
            node: FakeNode::new(),
            pg,
        })
    }

    pub fn supabase(&self) -> SupabaseConfig {
        SupabaseConfig {
            url: self.rest.url(),
            key: Secret::new(SERVICE_KEY),
            heartbeat_interval: HEARTBEAT,
            usage_interval: USAGE,
        }
    }

    pub fn node_info(&self) -> Result<NodeInfo> {
        Ok(NodeInfo {
            server_id: self.id.parse().map_err(anyhow::Error::msg)?,
            country: Some("DE".into()),
            city: Some("Frankfurt am Main".into()),
            latitude: Some(50.11),
            longitude: Some(8.68),
            max_capacity: 250,
            wg_port: 51820,
            api_port: 3000,
            version: "0.1.0-test".into(),
        })
    }

    pub fn timing() -> Timing {
        Timing {
            connect_timeout: Duration::from_millis(500),
            request_timeout: REQUEST_TIMEOUT,
            backoff: Backoff {
                base: Duration::from_millis(40),
                cap: Duration::from_millis(300),
            },
            shutdown_budget: Duration::from_secs(3),
            usage_batch: 2,
        }
    }

    /// Starts a control plane for this node, as the daemon would.
    pub fn spawn(&self) -> Result<Running> {
        self.spawn_with(HEARTBEAT, USAGE)
    }

    /// Starts a control plane with its own intervals.
    pub fn spawn_with(&self, heartbeat: Duration, usage: Duration) -> Result<Running> {
        self.spawn_source(self.node.clone(), heartbeat, usage)
    }

    /// Starts a control plane that reads from `source` (e.g. the real daemon's adapter).
    pub fn spawn_source(
        &self,
        source: Arc<dyn NodeSource>,
        heartbeat: Duration,
        usage: Duration,
    ) -> Result<Running> {
        let sb = SupabaseConfig {
            heartbeat_interval: heartbeat,
            usage_interval: usage,
            ..self.supabase()
        };
        let cp = ControlPlane::new(&sb, self.node_info()?, Self::timing())?;
        let health = cp.health();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(cp.run(source, rx));
        Ok(Running { health, stop, task })
    }

    /// The server row as JSON, `None` if absent.
    pub async fn server_row(&self) -> Result<Option<Value>> {
        let row = self
            .db
            .query_opt(
                "SELECT to_jsonb(s.*)::text FROM waylume_servers s WHERE id = $1",
                &[&self.id],
            )
            .await?;
        Ok(row.map(|r| serde_json::from_str(r.get(0))).transpose()?)
    }

    /// This node's session rows, ordered by peer key.
    pub async fn sessions(&self) -> Result<Vec<Value>> {
        let rows = self
            .db
            .query(
                "SELECT to_jsonb(v.*)::text FROM vpn_sessions v WHERE server_id = $1 ORDER BY peer_public_key",
                &[&self.id],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(r.get(0))?))
            .collect()
    }

    /// Waits until the server row satisfies `cond`, and returns it.
    pub async fn wait_row(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(row) = self.server_row().await?
                && cond(&row)
            {
                return Ok(row);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("timed out after {PATIENCE:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
