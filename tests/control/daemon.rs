//! The real node (API, store, in-memory WireGuard) feeding the control plane through
//! `ControlSource`, against PostgreSQL behind the PostgREST-compatible test server: the fleet row
//! shows the node's key and endpoint, and usage totals stay the same across interface
//! re-creation and a daemon restart.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use common::control::harness::{HEARTBEAT, Harness, USAGE};
use common::control::rest::Fault;
use common::control::wait_for;
use common::node::TestNode;
use waylume::app::ControlSource;
use waylume::core::peer::LiveStats;
use wireguard_control::Key;

fn source(t: &TestNode) -> Arc<ControlSource> {
    let s = Arc::new(ControlSource::new(t.node.clone(), 100));
    ControlSource::owe_removals(&s);
    s
}

async fn wait_usage(h: &Harness, rx: i64, tx: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = h.sessions().await.unwrap();
        if rows.len() == 1 && rows[0]["rx_bytes"] == rx && rows[0]["tx_bytes"] == tx {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn usage_keeps_its_totals_across_interface_recreation_and_restart() {
    let h = Harness::start("daemon-1").await.unwrap();
    let t = TestNode::new("10.0.0.0/24", 100);
    let p = t.create(r#"{"session_id":"s-1","user_id":"u-1"}"#).await;
    let key = Key::from_base64(p["public_key"].as_str().unwrap()).unwrap();
    let now = waylume::sys::clock::unix_now();
    t.wg.set_stats(
        &key,
        LiveStats {
            rx: 1000,
            tx: 2000,
            last_handshake: Some(now - 10),
            endpoint: None,
        },
    );
    t.reconcile(true).await;

    let cp = h.spawn_source(source(&t), HEARTBEAT, USAGE).unwrap();
    let row = h.wait_row("registration", |_| true).await.unwrap();
    assert_eq!(row["endpoint"], "192.0.2.1:51820");
    assert_eq!(row["public_ip"], "192.0.2.1");
    assert_eq!(
        row["wg_public_key"],
        common::node::server_side().public_key.to_base64()
    );
    assert_eq!(
        (row["peer_count"].as_i64(), row["current_load"].as_i64()),
        (Some(1), Some(1))
    );
    wait_usage(&h, 1000, 2000).await;
    let s = &h.sessions().await.unwrap()[0];
    assert_eq!(
        (s["session_id"].as_str(), s["user_id"].as_str()),
        (Some("s-1"), Some("u-1"))
    );
    assert_eq!(s["peer_id"], p["peer_id"]);

    // The interface is re-created: kernel counters restart from zero, the baseline does not.
    t.wg.wipe();
    t.reconcile(false).await;
    t.wg.set_stats(
        &key,
        LiveStats {
            rx: 10,
            tx: 20,
            last_handshake: Some(now - 5),
            endpoint: None,
        },
    );
    t.reconcile(true).await;
    wait_usage(&h, 1010, 2020).await;
    cp.stop().await.unwrap();
    t.flush().await;

    // A restarted daemon reports the same totals again, not doubled.
    let posts = |h: &Harness| {
        h.rest
            .seen()
            .iter()
            .filter(|r| r.path.ends_with("vpn_sessions"))
            .count()
    };
    let before = posts(&h);
    let t2 = TestNode::open(t.dir, t.wg.clone(), "10.0.0.0/24", 100);
    let cp = h.spawn_source(source(&t2), HEARTBEAT, USAGE).unwrap();
    wait_for(
        "a report after restart",
        Duration::from_secs(20),
        || async { posts(&h) > before },
    )
    .await
    .unwrap();
    wait_usage(&h, 1010, 2020).await;
    cp.stop().await.unwrap();
    assert_eq!(h.server_row().await.unwrap().unwrap()["status"], "offline");
}

async fn stats(t: &TestNode, key: &Key, rx: u64, tx: u64) {
    t.wg.set_stats(
        key,
        LiveStats {
            rx,
            tx,
            last_handshake: Some(waylume::sys::clock::unix_now() - 5),
            endpoint: None,
        },
    );
    t.reconcile(true).await;
}

async fn owed(t: &TestNode) -> usize {
    t.node
        .call(|n| n.owed(0, 100))
        .await
        .unwrap()
        .unwrap()
        .len()
}

/// (peer_id, session_id, rx, tx, status) of every session row, by session id.
async fn session_rows(h: &Harness) -> Vec<(String, String, i64, i64, String)> {
    let mut rows: Vec<_> = h
        .sessions()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["peer_id"].as_str().unwrap().to_string(),
                r["session_id"].as_str().unwrap_or("").to_string(),
                r["rx_bytes"].as_i64().unwrap(),
                r["tx_bytes"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    rows
}

/// An app brings its own key and keeps it between sessions. The key comes back while Supabase
/// is unreachable and before the old session's final row was sent, and the node restarts in
/// the outage: both sessions end up as their own rows with their own totals, nothing is
/// overwritten, and the batch that carries them goes through.
#[tokio::test]
async fn a_reused_key_makes_two_sessions_and_survives_an_outage_and_restart() {
    let h = Harness::start("daemon-reuse").await.unwrap();
    let t = TestNode::new("10.0.0.0/24", 100);
    let own = Key::generate_private().get_public();
    let body = |s: &str| {
        format!(
            r#"{{"session_id":"{s}","public_key":"{}"}}"#,
            own.to_base64()
        )
    };
    let first = t.create(&body("s-1")).await;
    stats(&t, &own, 12_000_000, 3_000_000).await;
    let cp = h.spawn_source(source(&t), HEARTBEAT, USAGE).unwrap();
    wait_for(
        "the first session's row",
        Duration::from_secs(20),
        || async { session_rows(&h).await.iter().any(|r| r.2 == 12_000_000) },
    )
    .await
    .unwrap();

    // Supabase goes away; the session ends and the same key starts a new one.
    h.rest.set_fault(Fault::Refuse);
    stats(&t, &own, 12_500_000, 3_100_000).await;
    let (status, _) = t
        .call(
            "POST",
            "/api/peers/delete",
            &format!(r#"{{"peer_id":"{}"}}"#, first["peer_id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200);
    let second = t.create(&body("s-2")).await;
    assert_ne!(first["peer_id"], second["peer_id"]);
    stats(&t, &own, 10, 0).await;
    assert_eq!(owed(&t).await, 1, "the final row is owed, in the store");

    // The node restarts during the outage; the owed row is in its store, not in memory.
    cp.stop().await.unwrap();
    t.flush().await;
    let t2 = TestNode::open(t.dir, t.wg.clone(), "10.0.0.0/24", 100);
    assert_eq!(owed(&t2).await, 1);
    let cp = h.spawn_source(source(&t2), HEARTBEAT, USAGE).unwrap();
    h.rest.set_fault(Fault::None);
    let want = vec![
        (
            first["peer_id"].as_str().unwrap().to_string(),
            "s-1".to_string(),
            12_500_000,
            3_100_000,
            "deleted".to_string(),
        ),
        (
            second["peer_id"].as_str().unwrap().to_string(),
            "s-2".to_string(),
            10,
            0,
            "active".to_string(),
        ),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let have = session_rows(&h).await;
        if have == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{have:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Acknowledged, so deleted from the store; the link is healthy, not stuck on one batch.
    wait_for("the outbox to drain", Duration::from_secs(20), || async {
        owed(&t2).await == 0
    })
    .await
    .unwrap();
    wait_for("healthy usage reports", Duration::from_secs(20), || async {
        cp.health.get().usage == waylume::control::LinkState::Healthy
    })
    .await
    .unwrap();
    cp.stop().await.unwrap();
}
