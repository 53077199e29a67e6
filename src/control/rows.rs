//! The JSON bodies the node sends, one struct per request shape. Optional fields serialize as
//! `null` (never skipped): PostgREST takes the columns from the keys, and a bulk body whose objects
//! have different keys is refused (PGRST102).
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{NodeInfo, NodeSnapshot, NodeStatus, SessionStatus, SessionUsage};

/// Every column of `waylume_servers` the node owns: a full row, so the upsert never trips over
/// NOT NULL (PostgreSQL checks it on the candidate row before resolving the conflict).
#[derive(Debug, Serialize)]
pub(crate) struct ServerRow<'a> {
    pub id: &'a str,
    pub endpoint: &'a str,
    pub public_ip: Option<String>,
    pub wg_port: u16,
    pub api_port: u16,
    pub wg_public_key: &'a str,
    pub country: Option<&'a str>,
    pub city: Option<&'a str>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub max_capacity: u16,
    pub current_load: u32,
    pub peer_count: u32,
    pub status: RowStatus,
    pub accepting: bool,
    pub version: &'a str,
    pub heartbeat_interval_s: u32,
    /// The database replaces it with its own `now()`; sending it marks the write as the node's.
    pub last_heartbeat: String,
}

/// What the node writes into `status`. `draining` is the operator's word: the node says whether
/// it takes new peers in `accepting` instead, so the database can keep an operator's drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RowStatus {
    Online,
    Offline,
}

fn split(s: NodeStatus) -> (RowStatus, bool) {
    match s {
        NodeStatus::Online => (RowStatus::Online, true),
        NodeStatus::Draining => (RowStatus::Online, false),
        NodeStatus::Offline => (RowStatus::Offline, false),
    }
}

impl<'a> ServerRow<'a> {
    pub fn new(
        node: &'a NodeInfo,
        snap: &'a NodeSnapshot,
        heartbeat: std::time::Duration,
        now: SystemTime,
    ) -> Self {
        let (status, accepting) = split(snap.status);
        ServerRow {
            id: node.server_id.as_str(),
            endpoint: &snap.endpoint,
            public_ip: snap.public_ip.map(|ip| ip.to_string()),
            wg_port: node.wg_port,
            api_port: node.api_port,
            wg_public_key: &snap.wg_public_key,
            country: node.country.as_deref(),
            city: node.city.as_deref(),
            lat: node.latitude,
            lon: node.longitude,
            max_capacity: node.max_capacity,
            current_load: snap.active_peers,
            peer_count: snap.peer_count,
            status,
            accepting,
            version: &node.version,
            // Rounded up: a row is stale after three of these, never before three real intervals.
            heartbeat_interval_s: u32::try_from(
                heartbeat.as_millis().div_ceil(1000).clamp(1, 3600),
            )
            .unwrap_or(3600),
            last_heartbeat: rfc3339(now),
        }
    }
}

/// The columns a heartbeat changes; sent with PATCH, never as an upsert.
#[derive(Debug, Serialize)]
pub(crate) struct Heartbeat {
    pub current_load: u32,
    pub peer_count: u32,
    pub status: RowStatus,
    pub accepting: bool,
    pub last_heartbeat: String,
}

impl Heartbeat {
    pub fn new(snap: &NodeSnapshot, now: SystemTime) -> Self {
        let (status, accepting) = split(snap.status);
        Heartbeat {
            current_load: snap.active_peers,
            peer_count: snap.peer_count,
            status,
            accepting,
            last_heartbeat: rfc3339(now),
        }
    }
}

/// One `vpn_sessions` row with absolute counters.
#[derive(Debug, Serialize)]
pub(crate) struct SessionRow<'a> {
    pub server_id: &'a str,
    pub peer_public_key: &'a str,
    pub peer_id: &'a str,
    pub session_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub protocol_bytes: BTreeMap<&'a str, i64>,
    pub bittorrent: bool,
    pub status: SessionStatus,
    pub last_handshake: Option<String>,
}

impl<'a> SessionRow<'a> {
    pub fn new(server_id: &'a str, u: &'a SessionUsage) -> Self {
        SessionRow {
            server_id,
            peer_public_key: &u.peer_public_key,
            peer_id: &u.peer_id,
            session_id: u.session_id.as_deref(),
            user_id: u.user_id.as_deref(),
            rx_bytes: bigint(u.rx_bytes),
            tx_bytes: bigint(u.tx_bytes),
            protocol_bytes: u
                .protocol_bytes
                .iter()
                .map(|(k, v)| (k.as_str(), bigint(*v)))
                .collect(),
            bittorrent: u.bittorrent,
            status: u.status,
            last_handshake: u.last_handshake.map(rfc3339),
        }
    }
}

/// A session row without `server_id`, as the outbox keeps it until it is sent.
pub fn owed_session(u: &SessionUsage) -> serde_json::Value {
    let mut v = serde_json::to_value(SessionRow::new("", u)).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("server_id");
    }
    v
}

/// `bigint` is signed; 2^63 bytes is not a real counter, but saturating beats a rejected batch.
fn bigint(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `2026-11-25T19:30:00.123Z`: the form `timestamptz` reads without ambiguity.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        let at = |s: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // date -u -d @1764109800 → Tue Nov 25 22:30:00 UTC 2025
        assert_eq!(at(1_764_109_800, 5), "2025-11-25T22:30:00.005Z");
        // a leap day and the last second of a year
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn bigint_saturates() {
        assert_eq!(bigint(5), 5);
        assert_eq!(bigint(u64::MAX), i64::MAX);
    }
}
