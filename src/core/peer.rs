//! A peer as the node keeps it, and the values it is made of.
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use wireguard_control::Key;

/// A peer's identifier: 32 lowercase hex digits, random, never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(String);

impl PeerId {
    /// Made from 16 random bytes the caller draws.
    pub fn from_random(bytes: [u8; 16]) -> PeerId {
        PeerId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
    /// Accepts what `from_random` makes, so a path segment can be checked before any lookup.
    pub fn parse(s: &str) -> Option<PeerId> {
        let ok = s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| PeerId(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Rates in kbit/s; `None` in a direction is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeedLimit {
    pub download_kbps: Option<u32>,
    pub upload_kbps: Option<u32>,
}

impl SpeedLimit {
    /// 100 Gbit/s: anything above is a typo, not a limit.
    pub const MAX_KBPS: u32 = 100_000_000;

    pub fn is_unlimited(&self) -> bool {
        self.download_kbps.is_none() && self.upload_kbps.is_none()
    }
}

/// Byte counters as the node accounts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes received from the peer.
    pub rx: u64,
    /// Bytes sent to the peer.
    pub tx: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.rx.saturating_add(self.tx)
    }
}

#[derive(Clone, PartialEq)]
pub struct Peer {
    pub id: PeerId,
    pub public_key: Key,
    /// Kept only when the node generated the key pair, so that a retried create with the same
    /// `session_id` can hand back the same config.
    pub private_key: Option<Key>,
    pub preshared_key: Key,
    pub address: Ipv4Addr,
    pub address_v6: Option<Ipv6Addr>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub limit: SpeedLimit,
    pub data_cap: Option<u64>,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: Option<u64>,
}

/// Keys other than the public one never reach a log line.
impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("public_key", &self.public_key.to_base64())
            .field("address", &self.address)
            .field("limit", &self.limit)
            .field("data_cap", &self.data_cap)
            .finish_non_exhaustive()
    }
}

/// What the kernel says about a peer right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    pub rx: u64,
    pub tx: u64,
    /// Unix seconds of the last handshake, if any.
    pub last_handshake: Option<u64>,
    /// Where the peer's packets last came from.
    pub endpoint: Option<std::net::SocketAddr>,
}

/// Folds kernel counters, which reset when a peer or interface is re-created, into totals that
/// never go back. `seen` is the last kernel reading folded in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    pub total: Usage,
    pub seen: Usage,
}

impl Accounting {
    pub fn fold(&mut self, live: Usage) {
        let delta = |now: u64, seen: u64| if now >= seen { now - seen } else { now };
        self.total.rx = self.total.rx.saturating_add(delta(live.rx, self.seen.rx));
        self.total.tx = self.total.tx.saturating_add(delta(live.tx, self.seen.tx));
        self.seen = live;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_round_trip_and_reject_garbage() {
        let id = PeerId::from_random([0xab; 16]);
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(PeerId::parse(id.as_str()), Some(id));
        for bad in [
            "",
            "xyz",
            &"A".repeat(32),
            &"a".repeat(33),
            "../../etc/passwd",
        ] {
            assert_eq!(PeerId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn accounting_survives_counter_resets() {
        let mut a = Accounting::default();
        a.fold(Usage { rx: 100, tx: 50 });
        a.fold(Usage { rx: 150, tx: 70 });
        assert_eq!(a.total, Usage { rx: 150, tx: 70 });
        // The interface was re-created: counters restart from zero.
        a.fold(Usage { rx: 10, tx: 5 });
        assert_eq!(a.total, Usage { rx: 160, tx: 75 });
        a.fold(Usage { rx: 10, tx: 5 });
        assert_eq!(a.total, Usage { rx: 160, tx: 75 });
    }
}
