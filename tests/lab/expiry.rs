//! 5,000 peers expiring in the same second on the real daemon (`waylume-server serve`, wireguard-go,
//! nftables and tc in a namespace, a control plane on a real PostgreSQL): every one leaves
//! WireGuard, the nft table, tc and the store, the watchdog hears from the node between removal
//! chunks, and each one's final usage reaches `vpn_sessions` once, with the last bytes real
//! clients moved just before expiry. Peers created without an expiry stay.
//!
//! Needs root, `wireguard-go`, `wg`, `nft`, `tc`, PostgreSQL: run with `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::harness::{INTERNET, NodeLab, client_up};
use crate::hostile::Notes;
use common::control::pg::PgCluster;
use common::control::rest::{FakeRest, SERVICE_KEY};
use common::netns::{poll, sh, wait_for};
use waylume::node::removal::CHUNK;

mod fill;
mod observe;

use fill::{Made, create, fill, peers_left, target, unix_now};

/// The host's end of the veth into the server namespace, and the server's (apart from the
/// other lab tests' links, which may run at the same time).
const HOST: &str = "100.64.9.9";
pub const NODE: &str = "100.64.9.10";
pub const SERVER_ID: &str = "lab-expiry";
/// Peers expiring together; the first `CLIENTS` of them are real WireGuard clients.
const N: usize = 5000;
const CLIENTS: usize = 3;
/// Peers without an expiry, created first to measure the fill rate: they must stay.
const KEEP: usize = 100;

/// Its own underlay link and namespace per client: each moves bytes through the tunnel.
fn clients_up(nl: &mut NodeLab, peers: &[Made]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let ns = nl.lab.netns(&format!("c{i}"));
        let net = 20 + i;
        nl.lab.veth(
            (&ns, "up0", &format!("100.64.{net}.2/24")),
            (&nl.srv, &format!("cl{i}"), &format!("100.64.{net}.1/24")),
        );
        let config = p
            .config
            .replace(&format!("{NODE}:51820"), &format!("100.64.{net}.1:51820"));
        let ifname = nl.lab.ifname(&format!("c{i}"));
        client_up(&nl.lab, &ns, &ifname, &config, &p.address, "198.18.0.0/15");
        wait_for("ping through the tunnel", Duration::from_secs(15), || {
            nl.lab.ping(&ns, INTERNET)
        });
        out.push((ns, ifname));
    }
    out
}

/// (bytes the client sent, bytes it received), as its own WireGuard counts them.
fn client_transfer(ns: &str, ifname: &str) -> (u64, u64) {
    let out = sh(&["ip", "netns", "exec", ns, "wg", "show", ifname, "transfer"]);
    let f: Vec<u64> = out
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    (f[1], f[0])
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, wireguard-go, nft, tc and PostgreSQL"]
async fn five_thousand_expiring_in_one_second_leave_everywhere_with_their_final_usage() {
    let started = Instant::now();
    let mut nl = NodeLab::new("x");
    nl.lab
        .host_link(&nl.srv, &format!("{HOST}/30"), &format!("{NODE}/30"));
    let pg = PgCluster::start().await.unwrap();
    let rest = FakeRest::start_on(&pg, HOST.parse().unwrap())
        .await
        .unwrap();
    let db = pg.connect().await.unwrap();
    let url = rest.url();
    let d = nl.daemon(&[
        ("SERVER_ID", SERVER_ID),
        ("SUPABASE_URL", &url),
        ("WAYLUME_SUPABASE_INSECURE_HTTP", "true"),
        ("SUPABASE_KEY", SERVICE_KEY),
        ("WAYLUME_API_BIND", "0.0.0.0"),
        ("WAYLUME_ENDPOINT", &format!("{NODE}:51820")),
        ("MAX_CAPACITY", "6000"),
        ("WAYLUME_USAGE_INTERVAL_SECS", "1"),
    ]);
    let (pid, notify) = d.start(&mut nl.lab, "daemon");
    let notes = Notes::drain(notify);
    let api = target();

    // The rate this node takes creates at, from the peers that stay; the expiry leaves room for
    // twice the time the rest should take (creates slow down as the node fills), then for the
    // clients and the checks.
    let t = Instant::now();
    let keep = fill(0..KEEP, None).await;
    let rate = KEEP as f64 / t.elapsed().as_secs_f64();
    let until = (unix_now() + 15.0 + 2.0 * N as f64 / rate).ceil() as u64;
    println!("fill rate {rate:.0} peers/s; {N} peers to expire at {until}");
    let t = Instant::now();
    let mut gone = Vec::new();
    for i in KEEP..KEEP + CLIENTS {
        gone.push(create(&api, i, Some(until)).await);
    }
    gone.extend(fill(KEEP + CLIENTS..KEEP + N, Some(until)).await);
    println!(
        "{N} expiring peers created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(peers_left().await, (KEEP + N) as u64);
    let k = observe::Kernel::read(&nl);
    k.assert_has(&keep, true);
    k.assert_has(&gone, true);

    // The clients move a known amount just before the expiry; their own counters say how much.
    let clients = tokio::task::block_in_place(|| clients_up(&mut nl, &gone[..CLIENTS]));
    let mut moved = BTreeMap::new();
    for ((ns, ifname), p) in clients.iter().zip(&gone) {
        let ping = [
            "ping", "-n", "-q", "-c", "20", "-i", "0.01", "-s", "1000", "-W", "2", INTERNET,
        ];
        assert!(nl.lab.exec(ns, &ping).status.success());
        let (sent, received) = client_transfer(ns, ifname);
        assert!(
            sent >= 20 * 1028 && received >= 20 * 1028,
            "{sent} {received}"
        );
        moved.insert(p.id.clone(), (sent, received));
    }
    assert!(
        unix_now() < until as f64,
        "setup ran past the expiry: the clients' bytes were not moved before it"
    );

    // No peer left but those without an expiry; when the first chunk had gone, and the last.
    let mut first = None;
    let last = loop {
        let left = peers_left().await;
        if left < (KEEP + N) as u64 {
            first.get_or_insert_with(unix_now);
        }
        if left == KEEP as u64 {
            break unix_now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let since = |t: f64| t - until as f64;
    println!(
        "after the expiry second: first chunk gone {:.2} s, all {N} gone {:.2} s",
        since(first.unwrap_or(last)),
        since(last)
    );
    let k = observe::Kernel::read(&nl);
    k.assert_has(&keep, true);
    k.assert_has(&gone, false);

    // The watchdog heard from the node after every chunk, with the count that chunk left.
    let chunks = N.div_ceil(CHUNK);
    for c in 1..=chunks {
        let left = KEEP + N - (c * CHUNK).min(N);
        let note = format!("STATUS={left} peers");
        let told = || notes.any_with(&["WATCHDOG=1", &note]);
        let told = tokio::task::block_in_place(|| poll(Duration::from_secs(10), told));
        assert!(told, "no watchdog ping with {note}");
    }

    // Each final usage, once, with every byte the clients counted.
    let sessions = observe::expired_sessions(&db, SERVER_ID, N).await;
    let want: BTreeSet<&String> = gone.iter().map(|p| &p.id).collect();
    let got: BTreeSet<&String> = sessions.keys().collect();
    let missing: Vec<_> = want.difference(&got).take(3).collect();
    let extra: Vec<_> = got.difference(&want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} expired sessions for {} expired peers; missing {missing:?}, extra {extra:?}",
        got.len(),
        want.len()
    );
    for (id, (sent, received)) in &moved {
        let (rx, tx) = sessions[id];
        assert!(
            rx >= *sent && tx >= *received,
            "{id}: final rx {rx} tx {tx}, client sent {sent} received {received}"
        );
    }

    // Stopped, the store holds exactly the peers that stay and owes Supabase nothing.
    sh(&["kill", "-TERM", &pid.to_string()]);
    let code = tokio::task::block_in_place(|| nl.lab.wait_exit(pid, Duration::from_secs(30)));
    assert_eq!(code, Some(0));
    let store = waylume::store::Store::open(&nl.lab.dir.path().join("state")).unwrap();
    let stored: BTreeSet<String> = store
        .load_peers()
        .unwrap()
        .into_iter()
        .map(|p| p.peer.id.to_string())
        .collect();
    assert_eq!(stored, keep.iter().map(|p| p.id.clone()).collect());
    assert_eq!(store.owed_count().unwrap(), (0, 0));
    // And its log names each expired peer's removal once.
    let log = std::fs::read_to_string(nl.lab.dir.path().join("daemon.log")).unwrap();
    let mut logged = BTreeMap::new();
    for line in log.lines().filter(|l| l.ends_with(" removed (Expired)")) {
        let id = line.rsplit(" removed").nth(1).unwrap().rsplit(' ').next();
        *logged.entry(id.unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(logged.len(), N, "expired peers in the log");
    assert!(logged.values().all(|n| *n == 1), "each removal logged once");
    assert!(gone.iter().all(|p| logged.contains_key(&p.id)));
    println!("lab test took {:.1} s", started.elapsed().as_secs_f64());
}
