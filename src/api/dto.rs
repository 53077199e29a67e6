//! Request bodies, their validation, and the peer as the API shows it.
use serde::{Deserialize, Serialize};
use wireguard_control::Key;

use super::error::ApiError;
use crate::core::clientconf::CLIENT_ALLOWED_IPS;
use crate::core::peer::{PeerId, SpeedLimit};
use crate::core::registry::{NewPeer, Selector};
use crate::node::{NodeHandle, PeerStatus};

/// Larger caps are typos: 2^53 bytes (8 PiB) is also the largest integer JavaScript keeps exact.
pub const MAX_CAP_BYTES: u64 = 1 << 53;
/// Ten years.
pub const MAX_EXPIRY_SECS: u64 = 10 * 365 * 86400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    pub download_kbps: Option<u64>,
    pub upload_kbps: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub public_key: Option<String>,
    pub speed_limit: Option<LimitBody>,
    pub data_cap_bytes: Option<u64>,
    pub expires_in_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    pub peer_id: Option<String>,
    pub public_key: Option<String>,
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedLimitBody {
    pub peer_id: String,
    pub download_kbps: Option<u64>,
    pub upload_kbps: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCapBody {
    pub peer_id: String,
    pub data_cap_bytes: Option<u64>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::Invalid(msg.into())
}

/// Identifiers from the caller: 1–128 printable ASCII characters, no spaces.
fn ident(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) => {
            Err(invalid(format!(
                "{field} must be 1 to 128 printable ASCII characters without spaces"
            )))
        }
        Some(s) => Ok(Some(s)),
    }
}

pub fn public_key(field: &str, s: &str) -> Result<Key, ApiError> {
    let k =
        Key::from_base64(s).map_err(|_| invalid(format!("{field} is not 32 bytes of base64")))?;
    if k.0 == [0; 32] {
        return Err(invalid(format!("{field} is the all-zero key")));
    }
    Ok(k)
}

pub fn peer_id(s: &str) -> Result<PeerId, ApiError> {
    PeerId::parse(s).ok_or_else(|| invalid("peer_id is not a peer id (32 hex digits)"))
}

/// A page of `GET /api/peers`: at most `limit` peers whose id sorts after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub after: Option<PeerId>,
}

pub const MAX_PAGE: usize = 1000;

/// `limit=N&after=ID`; `None` for no parameters (the whole list, oldest first).
pub fn page(query: &str) -> Result<Option<Page>, ApiError> {
    if query.is_empty() {
        return Ok(None);
    }
    let mut page = Page {
        limit: 100,
        after: None,
    };
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("limit", v)) => {
                page.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| invalid(format!("limit must be 1 to {MAX_PAGE}")))?;
            }
            Some(("after", v)) => page.after = Some(peer_id(v)?),
            _ => return Err(invalid("the peer list takes limit and after only")),
        }
    }
    Ok(Some(page))
}

fn kbps(field: &str, v: Option<u64>) -> Result<Option<u32>, ApiError> {
    match v {
        None => Ok(None),
        Some(0) => Err(invalid(format!(
            "{field} must be at least 1 (null for unlimited)"
        ))),
        Some(n) if n > u64::from(SpeedLimit::MAX_KBPS) => Err(invalid(format!(
            "{field} must be at most {} (100 Gbit/s)",
            SpeedLimit::MAX_KBPS
        ))),
        Some(n) => Ok(u32::try_from(n).ok()),
    }
}

pub fn limit(down: Option<u64>, up: Option<u64>) -> Result<SpeedLimit, ApiError> {
    Ok(SpeedLimit {
        download_kbps: kbps("download_kbps", down)?,
        upload_kbps: kbps("upload_kbps", up)?,
    })
}

pub fn cap(v: Option<u64>) -> Result<Option<u64>, ApiError> {
    match v {
        Some(n) if n > MAX_CAP_BYTES => Err(invalid(format!(
            "data_cap_bytes must be at most {MAX_CAP_BYTES}"
        ))),
        other => Ok(other),
    }
}

impl CreateBody {
    pub fn validate(self, server_key: &Key) -> Result<NewPeer, ApiError> {
        let public_key = self
            .public_key
            .as_deref()
            .map(|k| public_key("public_key", k))
            .transpose()?;
        if public_key.as_ref() == Some(server_key) {
            return Err(invalid("public_key is the server's own key"));
        }
        let expires_in_secs = match self.expires_in_secs {
            Some(s) if s == 0 || s > MAX_EXPIRY_SECS => {
                return Err(invalid(format!(
                    "expires_in_secs must be 1 to {MAX_EXPIRY_SECS}"
                )));
            }
            other => other,
        };
        let limit = match self.speed_limit {
            Some(l) => limit(l.download_kbps, l.upload_kbps)?,
            None => SpeedLimit::default(),
        };
        Ok(NewPeer {
            session_id: ident("session_id", self.session_id)?,
            user_id: ident("user_id", self.user_id)?,
            public_key,
            limit,
            data_cap: cap(self.data_cap_bytes)?,
            expires_in_secs,
        })
    }
}

impl DeleteBody {
    pub fn selector(self) -> Result<Selector, ApiError> {
        match (self.peer_id, self.public_key, self.session_id) {
            (Some(id), None, None) => Ok(Selector::Id(peer_id(&id)?)),
            (None, Some(k), None) => Ok(Selector::PublicKey(public_key("public_key", &k)?)),
            (None, None, Some(s)) => Ok(Selector::Session(
                ident("session_id", Some(s))?.unwrap_or_default(),
            )),
            _ => Err(invalid(
                "give exactly one of peer_id, public_key, session_id",
            )),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatsView {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub last_handshake: Option<u64>,
    pub cap_used_bytes: u64,
    pub cap_remaining_bytes: Option<u64>,
    pub capped: bool,
    pub protocols: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct PeerView {
    pub peer_id: String,
    pub public_key: String,
    pub private_key: Option<String>,
    /// Only in the answer to a create, like the private key: anyone who reads a list must not
    /// learn what protects every tunnel.
    pub preshared_key: Option<String>,
    pub address: String,
    pub address_v6: Option<String>,
    pub server_public_key: String,
    pub endpoint: String,
    pub allowed_ips: &'static str,
    pub dns: Vec<String>,
    pub mtu: u16,
    pub persistent_keepalive: u16,
    /// The complete wg-quick file; only in the answer to a create, like the private key.
    pub config: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub speed_limit: SpeedLimit,
    pub data_cap_bytes: Option<u64>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub status: &'static str,
    pub stats: StatsView,
}

impl PeerView {
    /// `secrets`: include the private key, preshared key and config (the answer to a create only).
    pub fn new(
        node: &NodeHandle,
        s: &PeerStatus,
        secrets: bool,
        protocols: serde_json::Map<String, serde_json::Value>,
    ) -> PeerView {
        let p = &s.peer;
        let server = node.server();
        let usage = s.usage();
        PeerView {
            peer_id: p.id.to_string(),
            public_key: p.public_key.to_base64(),
            private_key: p
                .private_key
                .as_ref()
                .filter(|_| secrets)
                .map(Key::to_base64),
            preshared_key: secrets.then(|| p.preshared_key.to_base64()),
            address: p.address.to_string(),
            address_v6: p.address_v6.map(|a| a.to_string()),
            server_public_key: server.public_key.to_base64(),
            endpoint: server.endpoint.clone(),
            allowed_ips: CLIENT_ALLOWED_IPS,
            dns: server.dns.iter().map(ToString::to_string).collect(),
            mtu: server.mtu,
            persistent_keepalive: server.persistent_keepalive,
            config: secrets.then(|| node.client_config(p)),
            session_id: p.session_id.clone(),
            user_id: p.user_id.clone(),
            speed_limit: p.limit,
            data_cap_bytes: p.data_cap,
            created_at: p.created_at,
            expires_at: p.expires_at,
            status: if s.capped() { "capped" } else { "active" },
            stats: StatsView {
                rx_bytes: usage.rx,
                tx_bytes: usage.tx,
                last_handshake: s.counters.last_handshake,
                cap_used_bytes: s.counters.cap_used,
                cap_remaining_bytes: p.data_cap.map(|c| c.saturating_sub(s.counters.cap_used)),
                capped: s.capped(),
                protocols,
            },
        }
    }
}
