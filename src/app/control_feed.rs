//! The daemon's side of the control-plane seam: what the fleet table and `vpn_sessions` are fed
//! from. Reads only the node's published view; never waits for a change.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::future::BoxFuture;

use crate::control::{
    NodeSnapshot, NodeSource, NodeStatus, Owed, OwedKind, SessionStatus, SessionUsage,
};
use crate::core::classify::Protocol;
use crate::node::{NodeHandle, PeerStatus, Removal};
use crate::sys::inspection::Inspection;

pub struct ControlSource {
    pub node: NodeHandle,
    pub max_capacity: u16,
    inspection: Option<Arc<Inspection>>,
}

impl ControlSource {
    pub fn new(node: NodeHandle, max_capacity: u16) -> ControlSource {
        ControlSource {
            node,
            max_capacity,
            inspection: None,
        }
    }

    /// Reports each session's bytes per protocol from live inspection.
    pub fn with_inspection(mut self, inspection: Arc<Inspection>) -> ControlSource {
        self.inspection = Some(inspection);
        self
    }

    fn session(&self, s: &PeerStatus) -> SessionUsage {
        let mut row = session(s);
        if let Some(i) = &self.inspection {
            let t = i.traffic(&s.peer.id);
            row.protocol_bytes = t
                .by_protocol()
                .filter(|(_, bytes, _)| *bytes > 0)
                .map(|(p, bytes, _)| (p.to_string(), bytes))
                .collect();
            row.bittorrent = t.flows_of(Protocol::Bittorrent) > 0;
        }
        row
    }

    /// From now on every removal writes the peer's final row into the store's outbox, in the
    /// removal's own transaction. Only with a control plane: nothing else would drain it.
    pub fn owe_removals(source: &Arc<ControlSource>) {
        let weak = Arc::downgrade(source);
        source
            .node
            .owe_on_removal(move |status, why| match weak.upgrade() {
                Some(src) => src.final_row(status, session_status(why)),
                None => serde_json::Value::Null,
            });
    }

    /// A removed peer's final row for the store's outbox (written with the removal).
    pub fn final_row(&self, status: &PeerStatus, why: SessionStatus) -> serde_json::Value {
        let mut row = self.session(status);
        row.status = why;
        crate::control::owed_session(&row)
    }
}

/// The `vpn_sessions.status` a removal leaves behind.
pub fn session_status(why: Removal) -> SessionStatus {
    match why {
        Removal::Deleted => SessionStatus::Deleted,
        Removal::Expired => SessionStatus::Expired,
        Removal::Idle => SessionStatus::Idle,
    }
}

fn session(s: &PeerStatus) -> SessionUsage {
    let usage = s.usage();
    SessionUsage {
        peer_public_key: s.peer.public_key.to_base64(),
        peer_id: s.peer.id.to_string(),
        session_id: s.peer.session_id.clone(),
        user_id: s.peer.user_id.clone(),
        rx_bytes: usage.rx,
        tx_bytes: usage.tx,
        protocol_bytes: Default::default(),
        bittorrent: false,
        status: if s.capped() {
            SessionStatus::Capped
        } else {
            SessionStatus::Active
        },
        last_handshake: s
            .counters
            .last_handshake
            .map(|t| UNIX_EPOCH + Duration::from_secs(t)),
    }
}

impl NodeSource for ControlSource {
    fn snapshot(&self) -> NodeSnapshot {
        let view = self.node.view();
        let now = crate::sys::clock::unix_now();
        let server = self.node.server();
        let host = server.endpoint.rsplit_once(':').map_or("", |(h, _)| h);
        let draining = view.at_capacity(self.max_capacity) || !view.health.dataplane_ok;
        let counts = view.counts(now);
        NodeSnapshot {
            wg_public_key: server.public_key.to_base64(),
            endpoint: server.endpoint.clone(),
            public_ip: host.trim_matches(['[', ']']).parse::<IpAddr>().ok(),
            peer_count: u32::try_from(counts.total).unwrap_or(u32::MAX),
            active_peers: u32::try_from(counts.active).unwrap_or(u32::MAX),
            status: if draining {
                NodeStatus::Draining
            } else {
                NodeStatus::Online
            },
        }
    }

    fn usage(&self) -> Vec<SessionUsage> {
        let view = self.node.view();
        view.list().into_iter().map(|s| self.session(s)).collect()
    }

    fn owed(&self, after: i64, limit: usize) -> BoxFuture<'_, Vec<Owed>> {
        Box::pin(async move {
            match self.node.call(move |n| n.owed(after, limit)).await {
                Ok(Ok(rows)) => rows
                    .into_iter()
                    .filter_map(|r| {
                        Some(Owed {
                            id: r.id,
                            rev: r.rev,
                            kind: OwedKind::parse(&r.kind)?,
                            body: r.body,
                        })
                    })
                    .collect(),
                Ok(Err(e)) | Err(e) => {
                    log::warn!("outbox read failed: {e}");
                    Vec::new()
                }
            }
        })
    }

    fn acknowledge<'a>(&'a self, done: &'a [Owed]) -> BoxFuture<'a, ()> {
        let ids: Vec<(i64, i64)> = done.iter().map(|o| (o.id, o.rev)).collect();
        Box::pin(async move {
            match self.node.call(move |n| n.ack_owed(&ids)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) | Err(e) => {
                    log::warn!("outbox acknowledgement not stored (re-sent later, harmless): {e}")
                }
            }
        })
    }
}
