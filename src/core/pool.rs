//! The tunnel address pool: hands out the lowest free host address, never the network, the
//! broadcast or the server's own address, and takes addresses back on delete.
//!
//! Allocation is O(log n): released addresses below the high-water mark sit in an ordered set;
//! above it everything is free.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, Clone)]
pub struct AddressPool {
    /// First and last usable peer address, as integers.
    first: u32,
    last: u32,
    /// Every address at or above `next` is free.
    next: u32,
    /// Free addresses below `next`.
    holes: BTreeSet<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("address pool exhausted")]
    Exhausted,
    #[error("{0} is not a peer address of this subnet")]
    OutOfRange(Ipv4Addr),
    #[error("{0} is already allocated")]
    InUse(Ipv4Addr),
}

impl AddressPool {
    /// The server takes the first host; peers get the rest up to the last host before broadcast.
    pub fn new(subnet: Ipv4Net) -> AddressPool {
        let net = u32::from(subnet.network());
        let broadcast = u32::from(subnet.broadcast());
        let first = net.saturating_add(2);
        AddressPool {
            first,
            last: broadcast.saturating_sub(1),
            next: first,
            holes: BTreeSet::new(),
        }
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, PoolError> {
        if let Some(a) = self.holes.pop_first() {
            return Ok(Ipv4Addr::from(a));
        }
        if self.next > self.last {
            return Err(PoolError::Exhausted);
        }
        let a = self.next;
        self.next += 1;
        Ok(Ipv4Addr::from(a))
    }

    /// Marks a stored address as taken (used when peers are loaded at start).
    pub fn claim(&mut self, addr: Ipv4Addr) -> Result<(), PoolError> {
        let a = u32::from(addr);
        if a < self.first || a > self.last {
            return Err(PoolError::OutOfRange(addr));
        }
        if a >= self.next {
            self.holes.extend(self.next..a);
            self.next = a + 1;
            Ok(())
        } else if self.holes.remove(&a) {
            Ok(())
        } else {
            Err(PoolError::InUse(addr))
        }
    }

    pub fn release(&mut self, addr: Ipv4Addr) {
        let a = u32::from(addr);
        if a < self.first || a >= self.next {
            return;
        }
        if a + 1 == self.next {
            self.next = a;
            // Fold holes that now touch the high-water mark back into the free range.
            while let Some(&top) = self.holes.last() {
                if top + 1 != self.next {
                    break;
                }
                self.holes.pop_last();
                self.next = top;
            }
        } else {
            self.holes.insert(a);
        }
    }

    /// The next `n` addresses `allocate` would hand out, lowest first, without taking them.
    pub fn upcoming(&self, n: usize) -> Vec<Ipv4Addr> {
        self.holes
            .iter()
            .copied()
            .chain(self.next..=self.last)
            .take(n)
            .map(Ipv4Addr::from)
            .collect()
    }

    /// How many more peers fit.
    pub fn free(&self) -> u64 {
        u64::from(self.last.saturating_add(1).saturating_sub(self.next)) + self.holes.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_free_first_and_reuse_after_release() {
        let mut p = AddressPool::new("10.0.0.0/24".parse().unwrap());
        assert_eq!(p.allocate().unwrap(), ip("10.0.0.2"));
        assert_eq!(p.allocate().unwrap(), ip("10.0.0.3"));
        assert_eq!(p.allocate().unwrap(), ip("10.0.0.4"));
        p.release(ip("10.0.0.3"));
        assert_eq!(p.allocate().unwrap(), ip("10.0.0.3"));
        assert_eq!(p.allocate().unwrap(), ip("10.0.0.5"));
    }

    #[test]
    fn upcoming_is_what_allocate_hands_out_next() {
        let mut p = AddressPool::new("10.0.0.0/29".parse().unwrap());
        for _ in 0..3 {
            p.allocate().unwrap();
        }
        p.release(ip("10.0.0.3"));
        let next = p.upcoming(3);
        assert_eq!(next, ["10.0.0.3", "10.0.0.5", "10.0.0.6"].map(ip));
        assert_eq!(p.upcoming(10).len(), 3, "only what is free");
        let handed: Vec<_> = std::iter::from_fn(|| p.allocate().ok()).collect();
        assert_eq!(handed, next);
        assert!(p.upcoming(1).is_empty());
    }

    #[test]
    fn never_network_server_or_broadcast_and_exhausts() {
        let mut p = AddressPool::new("10.9.0.0/29".parse().unwrap());
        let got: Vec<_> = std::iter::from_fn(|| p.allocate().ok()).collect();
        assert_eq!(
            got,
            ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"].map(ip)
        );
        assert_eq!(p.allocate(), Err(PoolError::Exhausted));
        assert_eq!(p.free(), 0);
    }

    #[test]
    fn claim_rejects_duplicates_and_foreign_addresses() {
        let mut p = AddressPool::new("10.0.0.0/24".parse().unwrap());
        p.claim(ip("10.0.0.7")).unwrap();
        assert_eq!(
            p.claim(ip("10.0.0.7")),
            Err(PoolError::InUse(ip("10.0.0.7")))
        );
        assert_eq!(
            p.claim(ip("10.0.0.1")),
            Err(PoolError::OutOfRange(ip("10.0.0.1")))
        );
        assert_eq!(
            p.claim(ip("10.0.1.7")),
            Err(PoolError::OutOfRange(ip("10.0.1.7")))
        );
        assert_eq!(p.allocate().unwrap(), ip("10.0.0.2"));
    }

    proptest! {
        /// Against a model: the lowest address not in use is always what comes out.
        #[test]
        fn matches_a_simple_model(ops in proptest::collection::vec((any::<bool>(), 0u8..20), 1..200)) {
            let mut p = AddressPool::new("10.0.0.0/27".parse().unwrap());
            let mut used = std::collections::BTreeSet::new();
            for (alloc, k) in ops {
                if alloc {
                    let want = (2u32..=30).find(|a| !used.contains(a));
                    match (p.allocate(), want) {
                        (Ok(a), Some(w)) => { prop_assert_eq!(u32::from(a) & 0xff, w); used.insert(w); }
                        (Err(PoolError::Exhausted), None) => {}
                        (got, want) => prop_assert!(false, "{:?} vs {:?}", got, want),
                    }
                } else if let Some(&a) = used.iter().nth(usize::from(k) % used.len().max(1)) {
                    used.remove(&a);
                    p.release(Ipv4Addr::from(0x0a00_0000 | a));
                }
                prop_assert_eq!(p.free(), 29 - used.len() as u64);
            }
        }
    }
}
