//! The set of peers with its indexes (id, public key, session id) and the address pool. Every
//! lookup and change is O(1) or O(log n) in the number of peers.
//!
//! Creation is two-phase so that a failure anywhere after the address is taken gives it back:
//! `prepare` allocates, then the caller either `commit`s or `abort`s.
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use wireguard_control::Key;

use super::peer::{Peer, PeerId, SpeedLimit};
use super::pool::{AddressPool, PoolError};

/// A validated create request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewPeer {
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub public_key: Option<Key>,
    pub limit: SpeedLimit,
    pub data_cap: Option<u64>,
    pub expires_in_secs: Option<u64>,
}

/// The randomness a new peer needs, drawn by the caller.
pub struct Fresh {
    pub id: [u8; 16],
    pub private_key: Key,
    pub preshared_key: Key,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateError {
    #[error("public key already in use by another peer")]
    KeyInUse,
    #[error("session_id already used for a peer with different parameters")]
    SessionMismatch,
    #[error("node is at capacity ({0} peers)")]
    AtCapacity(u16),
    #[error(transparent)]
    Pool(#[from] PoolError),
}

pub enum Prepared {
    /// Same `session_id` as an existing peer with the same parameters: hand that one back.
    Existing(Peer),
    New(Peer),
}

/// How a caller names a peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Id(PeerId),
    PublicKey(Key),
    Session(String),
}

pub struct Registry {
    peers: HashMap<PeerId, Peer>,
    by_key: HashMap<Key, PeerId>,
    by_session: HashMap<String, PeerId>,
    /// Addresses handed out by `prepare` and not yet committed or aborted.
    pending_keys: HashMap<Key, PeerId>,
    pool: AddressPool,
    subnet: Ipv4Net,
    subnet_v6: Option<Ipv6Net>,
    capacity: u16,
}

impl Registry {
    pub fn new(subnet: Ipv4Net, subnet_v6: Option<Ipv6Net>, capacity: u16) -> Registry {
        Registry {
            peers: HashMap::new(),
            by_key: HashMap::new(),
            by_session: HashMap::new(),
            pending_keys: HashMap::new(),
            pool: AddressPool::new(subnet),
            subnet,
            subnet_v6,
            capacity,
        }
    }

    /// Loads a stored peer. Fails if its address or key clashes with one already loaded.
    pub fn restore(&mut self, peer: Peer) -> Result<(), CreateError> {
        if self.by_key.contains_key(&peer.public_key) {
            return Err(CreateError::KeyInUse);
        }
        self.pool.claim(peer.address)?;
        self.index(peer);
        Ok(())
    }

    pub fn prepare(
        &mut self,
        req: &NewPeer,
        fresh: Fresh,
        now: u64,
    ) -> Result<Prepared, CreateError> {
        if let Some(existing) = req.session_id.as_ref().and_then(|s| self.by_session.get(s)) {
            let p = &self.peers[existing];
            let same = req.public_key.as_ref().is_none_or(|k| *k == p.public_key)
                && req.user_id == p.user_id
                && req.limit == p.limit
                && req.data_cap == p.data_cap;
            return if same {
                Ok(Prepared::Existing(p.clone()))
            } else {
                Err(CreateError::SessionMismatch)
            };
        }
        let (public_key, private_key) = match &req.public_key {
            Some(k) => (k.clone(), None),
            None => (fresh.private_key.get_public(), Some(fresh.private_key)),
        };
        if self.by_key.contains_key(&public_key) || self.pending_keys.contains_key(&public_key) {
            return Err(CreateError::KeyInUse);
        }
        if self.peers.len() + self.pending_keys.len() >= usize::from(self.capacity) {
            return Err(CreateError::AtCapacity(self.capacity));
        }
        let address = self.pool.allocate()?;
        let id = PeerId::from_random(fresh.id);
        self.pending_keys.insert(public_key.clone(), id.clone());
        Ok(Prepared::New(Peer {
            id,
            address_v6: self.v6_for(address),
            public_key,
            private_key,
            preshared_key: fresh.preshared_key,
            address,
            session_id: req.session_id.clone(),
            user_id: req.user_id.clone(),
            limit: req.limit,
            data_cap: req.data_cap,
            created_at: now,
            expires_at: req.expires_in_secs.map(|s| now.saturating_add(s)),
        }))
    }

    pub fn commit(&mut self, peer: Peer) {
        self.pending_keys.remove(&peer.public_key);
        self.index(peer);
    }

    pub fn abort(&mut self, peer: &Peer) {
        self.pending_keys.remove(&peer.public_key);
        self.pool.release(peer.address);
    }

    fn index(&mut self, peer: Peer) {
        self.by_key.insert(peer.public_key.clone(), peer.id.clone());
        if let Some(s) = &peer.session_id {
            self.by_session.insert(s.clone(), peer.id.clone());
        }
        self.peers.insert(peer.id.clone(), peer);
    }

    /// The IPv6 address with the same host offset as the IPv4 one.
    fn v6_for(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        let net = self.subnet_v6?;
        let offset = u32::from(v4) - u32::from(self.subnet.network());
        Some(Ipv6Addr::from(
            u128::from(net.network()) + u128::from(offset),
        ))
    }

    pub fn find(&self, sel: &Selector) -> Option<&Peer> {
        let id = match sel {
            Selector::Id(id) => id,
            Selector::PublicKey(k) => self.by_key.get(k)?,
            Selector::Session(s) => self.by_session.get(s)?,
        };
        self.peers.get(id)
    }

    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(id)
    }

    pub fn remove(&mut self, id: &PeerId) -> Option<Peer> {
        let peer = self.peers.remove(id)?;
        self.by_key.remove(&peer.public_key);
        if let Some(s) = &peer.session_id {
            self.by_session.remove(s);
        }
        self.pool.release(peer.address);
        Some(peer)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn free_addresses(&self) -> u64 {
        self.pool.free()
    }

    /// The next `n` addresses new peers will get, lowest first.
    pub fn upcoming_addresses(&self, n: usize) -> Vec<std::net::Ipv4Addr> {
        self.pool.upcoming(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(n: u8) -> Fresh {
        Fresh {
            id: [n; 16],
            private_key: Key([n; 32]),
            preshared_key: Key([n ^ 0xff; 32]),
        }
    }

    fn reg(cap: u16) -> Registry {
        Registry::new(
            "10.0.0.0/24".parse().unwrap(),
            Some("fd00::/64".parse().unwrap()),
            cap,
        )
    }

    fn create(r: &mut Registry, req: &NewPeer, n: u8) -> Result<Peer, CreateError> {
        match r.prepare(req, fresh(n), 100)? {
            Prepared::New(p) => {
                r.commit(p.clone());
                Ok(p)
            }
            Prepared::Existing(p) => Ok(p),
        }
    }

    #[test]
    fn create_find_and_delete() {
        let mut r = reg(10);
        let p = create(
            &mut r,
            &NewPeer {
                session_id: Some("s1".into()),
                ..Default::default()
            },
            1,
        )
        .unwrap();
        assert_eq!(p.address.to_string(), "10.0.0.2");
        assert_eq!(p.address_v6.unwrap().to_string(), "fd00::2");
        assert!(p.private_key.is_some());
        assert_eq!(p.public_key, Key([1; 32]).get_public());
        assert_eq!(r.find(&Selector::Session("s1".into())).unwrap().id, p.id);
        assert_eq!(
            r.find(&Selector::PublicKey(p.public_key.clone()))
                .unwrap()
                .id,
            p.id
        );
        assert!(r.remove(&p.id).is_some());
        assert!(r.find(&Selector::Id(p.id.clone())).is_none());
        assert!(r.find(&Selector::Session("s1".into())).is_none());
        let again = create(&mut r, &NewPeer::default(), 2).unwrap();
        assert_eq!(
            again.address.to_string(),
            "10.0.0.2",
            "address reused after delete"
        );
    }

    #[test]
    fn idempotent_by_session_and_strict_about_parameters() {
        let mut r = reg(10);
        let req = NewPeer {
            session_id: Some("s".into()),
            data_cap: Some(5),
            ..Default::default()
        };
        let a = create(&mut r, &req, 1).unwrap();
        let b = create(&mut r, &req, 2).unwrap();
        assert_eq!(a, b);
        assert_eq!(r.len(), 1);
        let changed = NewPeer {
            data_cap: Some(6),
            ..req
        };
        assert_eq!(
            create(&mut r, &changed, 3).unwrap_err(),
            CreateError::SessionMismatch
        );
    }

    #[test]
    fn key_in_use_capacity_and_abort_give_back_the_address() {
        let mut r = reg(2);
        let key = Key([9; 32]).get_public();
        let with_key = NewPeer {
            public_key: Some(key.clone()),
            ..Default::default()
        };
        let p = create(&mut r, &with_key, 1).unwrap();
        assert!(p.private_key.is_none());
        assert_eq!(
            create(&mut r, &with_key, 2).unwrap_err(),
            CreateError::KeyInUse
        );
        let Prepared::New(pending) = r.prepare(&NewPeer::default(), fresh(3), 0).unwrap() else {
            panic!()
        };
        assert_eq!(
            create(&mut r, &NewPeer::default(), 4).unwrap_err(),
            CreateError::AtCapacity(2)
        );
        r.abort(&pending);
        let q = create(&mut r, &NewPeer::default(), 5).unwrap();
        assert_eq!(q.address, pending.address);
    }
}
