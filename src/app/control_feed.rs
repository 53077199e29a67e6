//! The daemon's side of the control-plane seam: what the fleet table and `vpn_sessions` are fed
//! from. Reads only the node's published view; never waits for a change.
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use crate::control::{NodeSnapshot, NodeSource, NodeStatus, SessionStatus, SessionUsage};
use crate::core::classify::Protocol;
use crate::inspection::Inspection;
use crate::node::{NodeHandle, PeerStatus, Removal};

pub struct ControlSource {
    pub node: NodeHandle,
    pub max_capacity: u16,
    /// Final rows of removed peers, kept until Supabase has them.
    finals: Mutex<Vec<SessionUsage>>,
    inspection: Option<Arc<Inspection>>,
}

impl ControlSource {
    pub fn new(node: NodeHandle, max_capacity: u16) -> ControlSource {
        ControlSource {
            node,
            max_capacity,
            finals: Mutex::new(Vec::new()),
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
            let t = i.traffic(s.peer.address.into());
            row.protocol_bytes = t
                .by_protocol()
                .filter(|(_, bytes, _)| *bytes > 0)
                .map(|(p, bytes, _)| (p.to_string(), bytes))
                .collect();
            row.bittorrent = t.flows_of(Protocol::Bittorrent) > 0;
        }
        row
    }

    /// Call after a peer was deleted (API) or removed (expired, idle) with its final status.
    pub fn removed(&self, status: &PeerStatus, why: SessionStatus) {
        let mut row = self.session(status);
        row.status = why;
        self.finals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(row);
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
        let mut rows: Vec<SessionUsage> =
            view.list().into_iter().map(|s| self.session(s)).collect();
        rows.extend(
            self.finals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        rows
    }

    fn usage_reported(&self, rows: &[SessionUsage]) {
        self.finals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|f| !rows.contains(f));
    }
}
