//! When a peer counts as active, when it is due for removal, and when the node is full: pure
//! rules over a peer's record and counters, with the time passed in.
use std::time::Duration;

use crate::core::peer::Peer;

/// A peer counts as active with a handshake this recent (WireGuard re-handshakes every two
/// minutes while traffic flows).
pub const ACTIVE_SECS: u64 = 180;

/// Whether a peer last seen at `last_handshake` is active at `now`.
pub fn is_active(last_handshake: Option<u64>, now: u64) -> bool {
    last_handshake.is_some_and(|h| now.saturating_sub(h) < ACTIVE_SECS)
}

/// Why a peer went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    Expired,
    Idle,
}

/// How long peers may live unused (the `[peers]` config section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLifetimes {
    /// Remove peers with no handshake for this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// A peer that never handshakes is idle once this has passed since creation.
    pub handshake_grace: Duration,
}

/// Whether `peer` is to be removed at `now`: past `expires_at`, or (with an idle timeout)
/// without a handshake for longer than it, or never seen within the grace period.
pub fn due_for_removal(
    peer: &Peer,
    last_handshake: Option<u64>,
    lifetimes: &PeerLifetimes,
    now: u64,
) -> Option<Removal> {
    if peer.expires_at.is_some_and(|e| e <= now) {
        return Some(Removal::Expired);
    }
    let idle = lifetimes.idle_timeout.map(|d| d.as_secs());
    let grace = lifetimes.handshake_grace.as_secs();
    let idle = idle.is_some_and(|t| match last_handshake {
        Some(h) => now.saturating_sub(h) > t,
        None => now.saturating_sub(peer.created_at) > grace,
    });
    idle.then_some(Removal::Idle)
}

/// Whether the node takes no more peers: `max` peers, or no free address left.
pub fn at_capacity(peers: usize, max: u16, free_addresses: u64) -> bool {
    peers >= usize::from(max) || free_addresses == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::peer::{PeerId, SpeedLimit};
    use std::net::Ipv4Addr;
    use wireguard_control::Key;

    fn peer(created_at: u64, expires_at: Option<u64>) -> Peer {
        Peer {
            id: PeerId::parse("0123456789abcdef0123456789abcdef").expect("id"),
            public_key: Key([1; 32]),
            preshared_key: Key([2; 32]),
            private_key: None,
            address: Ipv4Addr::new(10, 0, 0, 2),
            address_v6: None,
            session_id: None,
            user_id: None,
            limit: SpeedLimit::default(),
            data_cap: None,
            created_at,
            expires_at,
        }
    }

    const LIFE: PeerLifetimes = PeerLifetimes {
        idle_timeout: Some(Duration::from_secs(600)),
        handshake_grace: Duration::from_secs(60),
    };

    #[test]
    fn active_means_a_handshake_within_180_seconds() {
        assert!(is_active(Some(1000), 1000 + ACTIVE_SECS - 1));
        assert!(!is_active(Some(1000), 1000 + ACTIVE_SECS));
        assert!(!is_active(None, 1000));
        // A handshake stamped after `now` (clock stepped back) still counts.
        assert!(is_active(Some(2000), 1000));
    }

    #[test]
    fn removal_expired_idle_or_never_seen() {
        let p = peer(1000, Some(5000));
        assert_eq!(due_for_removal(&p, Some(4500), &LIFE, 4999), None);
        assert_eq!(
            due_for_removal(&p, Some(4500), &LIFE, 5000),
            Some(Removal::Expired)
        );
        let p = peer(1000, None);
        assert_eq!(due_for_removal(&p, Some(2000), &LIFE, 2600), None);
        assert_eq!(
            due_for_removal(&p, Some(2000), &LIFE, 2601),
            Some(Removal::Idle)
        );
        assert_eq!(due_for_removal(&p, None, &LIFE, 1060), None);
        assert_eq!(due_for_removal(&p, None, &LIFE, 1061), Some(Removal::Idle));
        let keep = PeerLifetimes {
            idle_timeout: None,
            ..LIFE
        };
        assert_eq!(due_for_removal(&p, None, &keep, u64::MAX), None);
    }

    #[test]
    fn capacity_by_count_or_addresses() {
        assert!(!at_capacity(9, 10, 5));
        assert!(at_capacity(10, 10, 5));
        assert!(at_capacity(0, 10, 0));
    }
}
