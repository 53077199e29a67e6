//! A stand-in for the daemon's side of the seam: what the control plane reads, settable by tests.
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use waylume::control::{NodeSnapshot, NodeSource, NodeStatus, Owed, SessionStatus, SessionUsage};

pub struct FakeNode {
    pub snapshot: Mutex<NodeSnapshot>,
    pub sessions: Mutex<Vec<SessionUsage>>,
    /// Every batch passed to `usage_reported`.
    pub reported: Mutex<Vec<Vec<SessionUsage>>>,
    /// The outbox: entries are removed when acknowledged.
    pub owed: Mutex<Vec<Owed>>,
}

/// A valid base64 x25519 public key made from one byte.
pub fn key(n: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([n; 32])
}

impl FakeNode {
    pub fn new() -> Arc<FakeNode> {
        Arc::new(FakeNode {
            snapshot: Mutex::new(NodeSnapshot {
                wg_public_key: key(200),
                endpoint: "203.0.113.7:51820".into(),
                public_ip: Some(std::net::Ipv4Addr::new(203, 0, 113, 7).into()),
                peer_count: 3,
                active_peers: 2,
                status: NodeStatus::Online,
            }),
            sessions: Mutex::new(Vec::new()),
            reported: Mutex::new(Vec::new()),
            owed: Mutex::new(Vec::new()),
        })
    }

    pub fn set_load(&self, peers: u32, active: u32) {
        if let Ok(mut s) = self.snapshot.lock() {
            s.peer_count = peers;
            s.active_peers = active;
        }
    }

    pub fn set_sessions(&self, s: Vec<SessionUsage>) {
        if let Ok(mut l) = self.sessions.lock() {
            *l = s;
        }
    }
}

/// A session with the given absolute counters.
pub fn session(n: u8, rx: u64, tx: u64) -> SessionUsage {
    SessionUsage {
        peer_public_key: key(n),
        peer_id: format!("peer-{n}"),
        session_id: Some(format!("sess-{n}")),
        user_id: n.is_multiple_of(2).then(|| format!("user-{n}")),
        rx_bytes: rx,
        tx_bytes: tx,
        protocol_bytes: [("tls".to_string(), rx / 2), ("bittorrent".to_string(), 0)]
            .into_iter()
            .collect(),
        bittorrent: false,
        status: SessionStatus::Active,
        // Fixed, so the same arguments make the same session.
        last_handshake: Some(UNIX_EPOCH + Duration::from_secs(1_764_000_000 + u64::from(n))),
    }
}

impl NodeSource for FakeNode {
    fn snapshot(&self) -> NodeSnapshot {
        self.snapshot
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
    fn usage(&self) -> Vec<SessionUsage> {
        self.sessions.lock().map(|s| s.clone()).unwrap_or_default()
    }
    fn usage_reported(&self, rows: &[SessionUsage]) {
        if let Ok(mut r) = self.reported.lock() {
            r.push(rows.to_vec());
        }
    }
    fn owed(
        &self,
        after: i64,
        limit: usize,
    ) -> Pin<Box<dyn Future<Output = Vec<Owed>> + Send + '_>> {
        let owed = self.owed.lock().map(|o| o.clone()).unwrap_or_default();
        let out = owed
            .into_iter()
            .filter(|o| o.id > after)
            .take(limit)
            .collect();
        Box::pin(std::future::ready(out))
    }
    fn acknowledge<'a>(
        &'a self,
        done: &'a [Owed],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        if let Ok(mut o) = self.owed.lock() {
            o.retain(|x| !done.iter().any(|d| d.id == x.id && d.rev == x.rev));
        }
        Box::pin(std::future::ready(()))
    }
}
