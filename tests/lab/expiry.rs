//! 5,000 peers expiring in the same second on the real daemon (`waylume-server serve`, wireguard-go,
//! nftables and tc in a namespace, a control plane on a real PostgreSQL): every one leaves
//! WireGuard, the nft table, tc and the store, the watchdog hears from the node between removal
//! chunks, and each one's final usage reaches `vpn_sessions` once, with the last bytes real
//! clients moved just before expiry. Peers created without an expiry stay.
//!
//! Needs root, `wireguard-go`, `wg`, `nft`, `tc`, PostgreSQL: run with `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{INTERNET, NodeLab, SECRET, client_up};
use crate::hostile::Notes;
use common::control::pg::PgCluster;
use common::control::rest::{FakeRest, SERVICE_KEY};
use common::netns::{poll, sh, wait_for};
use waylume::cli::Target;
use waylume::node::removal::CHUNK;

mod observe;

/// The host's end of the veth into the server namespace, and the server's (apart from the
/// other lab tests' links, which may run at the same time).
const HOST: &str = "100.64.9.9";
const NODE: &str = "100.64.9.10";
const SERVER_ID: &str = "lab-expiry";
/// Peers expiring together; the first `CLIENTS` of them are real WireGuard clients.
const N: usize = 5000;
const CLIENTS: usize = 3;
/// Peers without an expiry, created first to measure the fill rate: they must stay.
const KEEP: usize = 100;
/// Concurrent API connections filling the node.
const WORKERS: usize = 8;

/// A peer as the test knows it.
#[derive(Clone, Debug)]
pub struct Made {
    pub id: String,
    pub address: String,
    pub public_key: String,
    pub shaped: bool,
    pub config: String,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn target() -> Target {
    Target {
        url: format!("http://{NODE}:3000"),
        server_id: SERVER_ID.into(),
        secret: Some(waylume::config::Secret::new(SECRET)),
    }
}

/// Peers the node counts, from its `/health` (public, so unsigned).
async fn peers_left() -> u64 {
    let public = Target {
        secret: None,
        ..target()
    };
    let (_, h) = public
        .call(reqwest::Method::GET, "/health", None)
        .await
        .unwrap();
    h["capacity"]["peers"].as_u64().unwrap()
}

/// Creates peer number `i`: every 20th shaped, every 10th with a data cap. With `until`, its
/// expiry is that unix second exactly: a create that landed in the next second (the node counts
/// from its own clock) is deleted and made again.
async fn create(api: &Target, i: usize, until: Option<u64>) -> Made {
    let shaped = i.is_multiple_of(20);
    loop {
        let mut body = serde_json::json!({"session_id": format!("exp-{i}")});
        if shaped {
            body["speed_limit"] = serde_json::json!({"download_kbps": 8000, "upload_kbps": 4000});
        }
        if i % 10 == 5 {
            body["data_cap_bytes"] = serde_json::json!(1_000_000_000u64);
        }
        if let Some(u) = until {
            body["expires_in_secs"] = serde_json::json!(u.saturating_sub(unix_now() as u64));
        }
        let (status, p) = api
            .call(reqwest::Method::POST, "/api/peers", Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 201, "{p}");
        let id = p["peer_id"].as_str().unwrap().to_string();
        if until.is_some() && p["expires_at"].as_u64() != until {
            let del = serde_json::json!({"peer_id": id});
            let (status, answer) = api
                .call(reqwest::Method::POST, "/api/peers/delete", Some(&del))
                .await
                .unwrap();
            assert_eq!(status, 200, "{answer}");
            continue;
        }
        return Made {
            id,
            address: p["address"].as_str().unwrap().into(),
            public_key: p["public_key"].as_str().unwrap().into(),
            shaped,
            config: p["config"].as_str().unwrap_or_default().into(),
        };
    }
}

/// Peers `range` created over `WORKERS` connections at once.
async fn fill(range: std::ops::Range<usize>, until: Option<u64>) -> Vec<Made> {
    let all: Vec<usize> = range.collect();
    let mut tasks = Vec::new();
    for part in all.chunks(all.len().div_ceil(WORKERS).max(1)) {
        let part = part.to_vec();
        tasks.push(tokio::spawn(async move {
            let api = target();
            let mut out = Vec::new();
            for i in part {
                out.push(create(&api, i, until).await);
            }
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    out
}

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
    // half as much again as the rest should take, then for the clients and the checks.
    let t = Instant::now();
    let keep = fill(0..KEEP, None).await;
    let rate = KEEP as f64 / t.elapsed().as_secs_f64();
    let until = (unix_now() + 12.0 + 1.5 * N as f64 / rate).ceil() as u64;
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

    // No peer left but those without an expiry.
    let t = loop {
        if peers_left().await == KEEP as u64 {
            break unix_now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "{N} expired peers gone {:.2} s after their expiry second",
        t - until as f64
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
    println!("lab test took {:.1} s", started.elapsed().as_secs_f64());
}
