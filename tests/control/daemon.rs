//! The real node (API, store, in-memory WireGuard) feeding the control plane through
//! `ControlSource`, against PostgreSQL behind the PostgREST-compatible test server: the fleet row
//! shows the node's key and endpoint, and usage totals stay the same across interface
//! re-creation and a daemon restart.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use common::control::harness::{HEARTBEAT, Harness, USAGE};
use common::control::wait_for;
use common::node::TestNode;
use waylume::app::ControlSource;
use waylume::core::peer::LiveStats;
use wireguard_control::Key;

fn source(t: &TestNode) -> Arc<ControlSource> {
    Arc::new(ControlSource::new(t.node.clone(), 100))
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
