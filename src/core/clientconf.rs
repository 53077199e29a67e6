//! The wg-quick file a client loads to use a peer.
use std::fmt::Write;
use std::net::IpAddr;

use wireguard_control::Key;

use super::peer::Peer;

/// What the node contributes to every client config.
#[derive(Debug, Clone)]
pub struct ServerSide {
    pub public_key: Key,
    pub endpoint: String,
    pub dns: Vec<IpAddr>,
    pub mtu: u16,
    pub persistent_keepalive: u16,
}

/// The client routes everything through the tunnel, IPv6 included, so nothing leaks around it.
pub const CLIENT_ALLOWED_IPS: &str = "0.0.0.0/0, ::/0";

pub fn render(peer: &Peer, server: &ServerSide) -> String {
    let mut s = String::from("[Interface]\n");
    match &peer.private_key {
        Some(k) => {
            let _ = writeln!(s, "PrivateKey = {}", k.to_base64());
        }
        None => s.push_str(
            "# PrivateKey = the private key that belongs to the public key you registered\n",
        ),
    }
    let mut addrs = vec![format!("{}/32", peer.address)];
    addrs.extend(peer.address_v6.map(|a| format!("{a}/128")));
    let _ = writeln!(s, "Address = {}", addrs.join(", "));
    if !server.dns.is_empty() {
        let dns: Vec<String> = server.dns.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "DNS = {}", dns.join(", "));
    }
    let _ = writeln!(s, "MTU = {}", server.mtu);
    s.push_str("\n[Peer]\n");
    let _ = writeln!(s, "PublicKey = {}", server.public_key.to_base64());
    let _ = writeln!(s, "PresharedKey = {}", peer.preshared_key.to_base64());
    let _ = writeln!(s, "AllowedIPs = {CLIENT_ALLOWED_IPS}");
    let _ = writeln!(s, "Endpoint = {}", server.endpoint);
    if server.persistent_keepalive > 0 {
        let _ = writeln!(s, "PersistentKeepalive = {}", server.persistent_keepalive);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::peer::{PeerId, SpeedLimit};

    #[test]
    fn renders_a_complete_wg_quick_file() {
        let peer = Peer {
            id: PeerId::from_random([1; 16]),
            public_key: Key([2; 32]).get_public(),
            private_key: Some(Key([2; 32])),
            preshared_key: Key([3; 32]),
            address: "10.0.0.2".parse().unwrap(),
            address_v6: None,
            session_id: None,
            user_id: None,
            limit: SpeedLimit::default(),
            data_cap: None,
            created_at: 0,
            expires_at: None,
        };
        let server = ServerSide {
            public_key: Key([4; 32]).get_public(),
            endpoint: "203.0.113.7:51820".into(),
            dns: vec!["1.1.1.1".parse().unwrap()],
            mtu: 1420,
            persistent_keepalive: 25,
        };
        let text = render(&peer, &server);
        assert!(
            text.starts_with(
                "[Interface]\nPrivateKey = AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\n"
            ),
            "{text}"
        );
        assert!(text.contains("Address = 10.0.0.2/32\n"));
        assert!(text.contains(&format!("PublicKey = {}\n", server.public_key.to_base64())));
        assert!(text.contains("Endpoint = 203.0.113.7:51820\n"));
        assert!(text.contains("PersistentKeepalive = 25\n"));
        let client_key = Peer {
            private_key: None,
            ..peer
        };
        assert!(!render(&client_key, &server).contains("\nPrivateKey ="));
    }
}
