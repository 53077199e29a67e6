//! Where the expiry test looks: WireGuard, the daemon's nft table and tc filters in the server
//! namespace, and the sessions the control plane received.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use super::fill::Made;
use crate::harness::NodeLab;
use common::netns::sh;

/// The lab's peer subnet (`NodeLab::daemon`): a shaped peer's class minor is its host offset.
const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);

/// What the kernel holds for peers, read once.
pub struct Kernel {
    wg: BTreeSet<String>,
    /// Every IPv4 address the nft table names, and the owners of its `p<a>_<b>_<c>_<d>` quotas.
    nft: BTreeSet<String>,
    /// `1:<minor>` class ids on any device of the server namespace (wg and IFB).
    shaped: BTreeSet<String>,
}

impl Kernel {
    pub fn read(nl: &NodeLab) -> Kernel {
        let ns = |argv: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", nl.srv.as_str()];
            full.extend_from_slice(argv);
            sh(&full)
        };
        let wg = ns(&["wg", "show", &nl.wg_srv, "peers"])
            .lines()
            .map(str::to_string)
            .collect();
        let table = ns(&["nft", "list", "table", "inet", "waylume"]);
        let nft = table
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .filter_map(|t| {
                let t = t
                    .strip_prefix('p')
                    .map_or(t.to_string(), |q| q.replace('_', "."));
                t.parse::<Ipv4Addr>().ok().map(|a| a.to_string())
            })
            .collect();
        // A peer is shaped while a filter leads to its class (classes outlive their peers);
        // tc prints a terminal u32 filter's class as `*flowid 1:x`.
        let mut shaped = BTreeSet::new();
        for dev in ns(&["ls", "/sys/class/net"]).split_whitespace() {
            for line in ns(&["tc", "filter", "show", "dev", dev]).lines() {
                let mut words = line.split_whitespace();
                if words.any(|w| w.ends_with("flowid"))
                    && let Some(id) = words.next()
                {
                    shaped.insert(id.to_string());
                }
            }
        }
        Kernel { wg, nft, shaped }
    }

    /// Every peer in WireGuard, in the nft table and (when shaped) in tc; or in none of them.
    pub fn assert_has(&self, peers: &[Made], present: bool) {
        for p in peers {
            assert_eq!(self.wg.contains(&p.public_key), present, "wg: {p:?}");
            assert_eq!(self.nft.contains(&p.address), present, "nft: {p:?}");
            if p.shaped {
                let addr: Ipv4Addr = p.address.parse().unwrap();
                let minor = u32::from(addr) - u32::from(SUBNET);
                let id = format!("1:{minor:x}");
                assert_eq!(self.shaped.contains(&id), present, "tc {id}: {p:?}");
            }
        }
    }
}

/// Waits until `n` sessions of `server` are `expired` in `vpn_sessions`; their (rx, tx) by peer.
pub async fn expired_sessions(
    db: &tokio_postgres::Client,
    server: &str,
    n: usize,
) -> BTreeMap<String, (u64, u64)> {
    let sql = "SELECT peer_id, rx_bytes, tx_bytes FROM vpn_sessions \
               WHERE server_id = $1 AND status = 'expired'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = db.query(sql, &[&server]).await.unwrap();
        if rows.len() >= n || tokio::time::Instant::now() > deadline {
            return rows
                .iter()
                .map(|r| {
                    let (rx, tx): (i64, i64) = (r.get(1), r.get(2));
                    (r.get(0), (rx as u64, tx as u64))
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
