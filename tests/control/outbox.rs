//! The outbox through a Supabase outage, with the real node, store and control plane against
//! PostgreSQL behind the PostgREST-compatible server: every final row owed during the outage is
//! delivered afterwards, through a restart in the middle, and a bounded outbox summarises its
//! oldest rows instead of dropping them.
//!
//! The outage is time-compressed by default: the removals of a ten-minute outage at two per
//! second (1200) happen as fast as the node allows while the server refuses connections, and the
//! control plane keeps retrying on its short test intervals. `WAYLUME_OUTAGE_SECS=600` runs the
//! same in real time (one removal every 500 ms); `WAYLUME_OUTAGE_SIM_SECS=3600` compresses an
//! hour's removals instead. Both print rows owed, rows delivered and the
//! process's memory.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::control::harness::{HEARTBEAT, Harness, USAGE};
use common::control::rest::Fault;
use common::control::wait_for;
use waylume::app::ControlSource;
use waylume::core::lifetime::PeerLifetimes;
use waylume::core::peer::{LiveStats, PeerId, SpeedLimit};
use waylume::core::registry::{Fresh, NewPeer, Registry, Selector};
use waylume::node::{Node, NodeHandle, Removal, Seams};
use waylume::store::Store;
use waylume::sys::fake::{FakeEnforcer, FakeWireGuard};
use wireguard_control::Key;

const REMOVALS_PER_SEC: u64 = 2;
const LIVE: usize = 20;

fn open(dir: &Path, wg: &Arc<FakeWireGuard>, limit: Option<u64>) -> NodeHandle {
    let mut store = Store::open(dir).unwrap();
    if let Some(l) = limit {
        store.set_outbox_limit(l);
    }
    let seams = Seams {
        wg: wg.clone(),
        policy: Arc::new(FakeEnforcer::default()),
        rules: common::node::rules("10.8.0.0/16"),
    };
    let lifetimes = PeerLifetimes {
        idle_timeout: None,
        handshake_grace: Duration::from_secs(600),
    };
    let registry = Registry::new("10.8.0.0/16".parse().unwrap(), None, 5000);
    let mut node = Node::open(
        registry,
        store,
        common::node::server_side(),
        seams,
        lifetimes,
    )
    .unwrap();
    node.reconcile(false).unwrap();
    node.spawn().unwrap()
}

fn source(node: &NodeHandle) -> Arc<ControlSource> {
    let s = Arc::new(ControlSource::new(node.clone(), 5000));
    ControlSource::owe_removals(&s);
    s
}

/// Creates a peer for session `s`, lets it move `rx` bytes, folds the counters in, and removes
/// it; returns its id.
async fn session(node: &NodeHandle, wg: &FakeWireGuard, s: &str, rx: u64, remove: bool) -> PeerId {
    let req = NewPeer {
        session_id: Some(s.into()),
        user_id: None,
        public_key: None,
        limit: SpeedLimit::default(),
        data_cap: None,
        expires_in_secs: None,
    };
    let fresh = Fresh {
        id: rand::random(),
        private_key: Key::generate_private(),
        preshared_key: Key::generate_preshared(),
    };
    let now = waylume::sys::clock::unix_now();
    let (st, _) = node
        .call(move |n| n.create(&req, fresh, now))
        .await
        .unwrap()
        .unwrap();
    let stats = LiveStats {
        rx,
        tx: 1,
        last_handshake: Some(now),
        endpoint: None,
    };
    wg.set_stats(&st.peer.public_key, stats);
    let id = st.peer.id.clone();
    let sel = Selector::Id(id.clone());
    node.call(move |n| {
        n.reconcile(true).unwrap();
        if remove {
            n.delete(&sel, Removal::Deleted).unwrap();
        }
    })
    .await
    .unwrap();
    id
}

async fn owed(node: &NodeHandle) -> usize {
    node.call(|n| n.owed(0, usize::MAX))
        .await
        .unwrap()
        .unwrap()
        .len()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn count(h: &Harness, sql: &str) -> i64 {
    h.db.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_minute_outage_loses_nothing() {
    let real_secs: u64 = std::env::var("WAYLUME_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // The compressed outage's length can be raised too (e.g. 3600 for an hour's removals).
    let sim_secs: u64 = std::env::var("WAYLUME_OUTAGE_SIM_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let removals = if real_secs > 0 { real_secs } else { sim_secs } * REMOVALS_PER_SEC;
    let h = Harness::start("outage").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wg = Arc::new(FakeWireGuard::default());
    let mut node = open(dir.path(), &wg, None);
    for i in 0..LIVE {
        session(&node, &wg, &format!("live-{i}"), 1000, false).await;
    }
    let mut cp = h.spawn_source(source(&node), HEARTBEAT, USAGE).unwrap();
    wait_for("the live sessions", Duration::from_secs(30), || async {
        count(&h, "select count(*) from vpn_sessions").await == LIVE as i64
    })
    .await
    .unwrap();

    let rss_before = rss_kib();
    let mut rss_peak = rss_before;
    h.rest.set_fault(Fault::Refuse);
    let started = Instant::now();
    let mut want_rx = 0u64;
    for i in 0..removals {
        let rx = 1_000_000 + i;
        want_rx += rx;
        session(&node, &wg, &format!("gone-{i}"), rx, true).await;
        if i == removals / 2 {
            // The daemon restarts in the middle of the outage.
            cp.stop().await.unwrap();
            node.call(|n| n.flush()).await.unwrap().unwrap();
            drop(node);
            node = open(dir.path(), &wg, None);
            cp = h.spawn_source(source(&node), HEARTBEAT, USAGE).unwrap();
        }
        if real_secs > 0 {
            tokio::time::sleep(Duration::from_millis(1000 / REMOVALS_PER_SEC)).await;
        }
        rss_peak = rss_peak.max(rss_kib());
    }
    let outage = started.elapsed();
    let owed = owed(&node).await;
    assert_eq!(
        owed as u64, removals,
        "every final row is owed, none dropped"
    );
    let db_size = std::fs::metadata(dir.path().join("state.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.path().join("state.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);

    h.rest.set_fault(Fault::None);
    let back = Instant::now();
    // Test batches are two rows: allow a generous time per request on a loaded machine.
    let patience = Duration::from_secs(60 + removals / 10);
    wait_for("the outbox to drain", patience, || async {
        self::owed(&node).await == 0
    })
    .await
    .unwrap();
    let drained = back.elapsed();
    let delivered = count(
        &h,
        "select count(*) from vpn_sessions where session_id like 'gone-%' and status = 'deleted'",
    )
    .await;
    let rx: i64 = count(
        &h,
        "select coalesce(sum(rx_bytes), 0)::bigint from vpn_sessions where session_id like 'gone-%'",
    )
    .await;
    assert_eq!(delivered as u64, removals);
    assert_eq!(rx as u64, want_rx);
    assert_eq!(
        count(
            &h,
            "select count(*) from vpn_sessions where session_id like 'live-%'"
        )
        .await,
        LIVE as i64
    );
    let posts = h
        .rest
        .seen()
        .iter()
        .filter(|r| r.path.ends_with("vpn_sessions") && r.status / 100 == 2 && r.at >= back)
        .count();
    println!(
        "outage: {} ({}), {removals} removals; owed at the end {owed}, delivered {delivered} in {posts} requests within {:.1} s; \
         RSS {rss_before} KiB before, {rss_peak} KiB peak, {} KiB after; store {} KiB",
        if real_secs > 0 {
            "real time"
        } else {
            "compressed"
        },
        format_args!("{:.1} s wall clock", outage.as_secs_f64()),
        drained.as_secs_f64(),
        rss_kib(),
        db_size / 1024
    );
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_summarises_its_oldest_rows_in_supabase() {
    let h = Harness::start("overflow").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wg = Arc::new(FakeWireGuard::default());
    let node = open(dir.path(), &wg, Some(100));
    let cp = h.spawn_source(source(&node), HEARTBEAT, USAGE).unwrap();
    h.wait_row("registration", |_| true).await.unwrap();
    h.rest.set_fault(Fault::Refuse);
    let mut total = 0u64;
    for i in 0..300u64 {
        total += 1000 + i;
        session(&node, &wg, &format!("s-{i}"), 1000 + i, true).await;
    }
    assert_eq!(owed(&node).await, 101);
    h.rest.set_fault(Fault::None);
    wait_for("the outbox to drain", Duration::from_secs(60), || async {
        owed(&node).await == 0
    })
    .await
    .unwrap();
    let rows = count(&h, "select count(*) from vpn_sessions").await;
    let rx = count(
        &h,
        "select coalesce(sum(rx_bytes), 0)::bigint from vpn_sessions",
    )
    .await;
    let (sessions, summary_rx): (i32, i64) = {
        let r = h
            .db
            .query_one(
                "select sessions, rx_bytes from waylume_usage_summaries where server_id = 'overflow'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(rows, 100, "the newest 100 sessions as rows");
    assert_eq!(sessions, 200, "the oldest 200 in one summary");
    assert_eq!((rx + summary_rx) as u64, total, "no byte lost");
    cp.stop().await.unwrap();
}
