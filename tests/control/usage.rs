//! Usage reports: absolute counters, idempotent upserts, the same totals across a daemon restart
//! and after the server row was re-created.
// Helpers here are test code too: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use common::control::harness::{Harness, PATIENCE};
use common::control::node::{key, session};
use common::control::{logcap, wait_for};
use serde_json::Value;
use std::time::Duration;

/// (peer key, rx, tx) of every session row.
async fn totals(h: &Harness) -> Vec<(String, i64, i64)> {
    h.sessions()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_i64().unwrap_or(-1);
            (
                r["peer_public_key"].as_str().unwrap_or("").to_string(),
                n("rx_bytes"),
                n("tx_bytes"),
            )
        })
        .collect()
}

async fn wait_totals(h: &Harness, want: &[(u8, i64, i64)]) {
    let mut want: Vec<(String, i64, i64)> =
        want.iter().map(|(n, rx, tx)| (key(*n), *rx, *tx)).collect();
    want.sort();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let have = totals(h).await;
        if have == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "want {want:?}, have {have:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn session_posts(h: &Harness) -> usize {
    h.rest
        .seen()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("vpn_sessions"))
        .count()
}

#[tokio::test]
async fn usage_rows_are_absolute_and_survive_a_restart() {
    let h = Harness::start("use-restart").await.unwrap();
    // Three sessions with batches of two: two requests, one with a null user_id next to a set one.
    h.node.set_sessions(vec![
        session(1, 100, 200),
        session(2, 300, 400),
        session(3, 5, 6),
    ]);
    let cp = h.spawn().unwrap();
    wait_totals(&h, &[(1, 100, 200), (2, 300, 400), (3, 5, 6)]).await;
    let rows = h.sessions().await.unwrap();
    let one = rows
        .iter()
        .find(|r| r["peer_public_key"] == key(1))
        .unwrap();
    assert_eq!(one["peer_id"], "peer-1");
    assert_eq!(one["session_id"], "sess-1");
    assert_eq!(one["user_id"], Value::Null);
    assert_eq!(one["status"], "active");
    assert_eq!(one["protocol_bytes"]["tls"], 50);
    assert!(one["last_handshake"].is_string());
    let two = rows
        .iter()
        .find(|r| r["peer_public_key"] == key(2))
        .unwrap();
    assert_eq!(two["user_id"], "user-2");

    // Unchanged sessions are not re-sent on every tick. (Count requests once the node heard of
    // the first report, which is after its last answer.)
    let node = h.node.clone();
    wait_for("usage_reported for both batches", PATIENCE, || {
        let n = node.reported.lock().unwrap().len();
        async move { n == 2 }
    })
    .await
    .unwrap();
    let posts = session_posts(&h);
    assert_eq!(posts, 2);
    h.node.set_sessions(vec![
        session(1, 150, 260),
        session(2, 300, 400),
        session(3, 5, 6),
    ]);
    wait_totals(&h, &[(1, 150, 260), (2, 300, 400), (3, 5, 6)]).await;
    let sent_for_change = session_posts(&h) - posts;
    assert_eq!(
        sent_for_change, 1,
        "one changed session fits in one request"
    );
    // The node hears which rows arrived (after the answer, so wait for it).
    let node = h.node.clone();
    wait_for("usage_reported with the one change", PATIENCE, || {
        let last = node
            .reported
            .lock()
            .unwrap()
            .last()
            .map(|b| (b.len(), b[0].rx_bytes));
        async move { last == Some((1, 150)) }
    })
    .await
    .unwrap();
    cp.stop().await.unwrap();

    // A restarted daemon reports everything again; the totals are the same, not doubled.
    let posts = session_posts(&h);
    let cp = h.spawn().unwrap();
    wait_for("a full report after restart", PATIENCE, || async {
        session_posts(&h) >= posts + 2
    })
    .await
    .unwrap();
    assert_eq!(totals(&h).await, {
        let mut t = vec![(key(1), 150, 260), (key(2), 300, 400), (key(3), 5, 6)];
        t.sort();
        t
    });
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn sessions_come_back_after_the_server_row_was_recreated() {
    let h = Harness::start("use-recreate").await.unwrap();
    h.node.set_sessions(vec![session(4, 1000, 2000)]);
    let cp = h.spawn().unwrap();
    wait_totals(&h, &[(4, 1000, 2000)]).await;
    // The operator deletes the row; its sessions go with it (ON DELETE CASCADE).
    h.db.execute("DELETE FROM waylume_servers WHERE id = 'use-recreate'", &[])
        .await
        .unwrap();
    assert!(totals(&h).await.is_empty());
    // The node re-registers and re-sends the same absolute totals, without a change on its side.
    wait_totals(&h, &[(4, 1000, 2000)]).await;
    h.wait_row("re-registration", |_| true).await.unwrap();
    // The node's counters move on (e.g. the kernel counters reset but the baseline did not):
    // the row follows exactly what the node reports.
    h.node.set_sessions(vec![session(4, 1500, 2100)]);
    wait_totals(&h, &[(4, 1500, 2100)]).await;
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn a_usage_report_that_finds_no_server_row_registers_again() {
    let h = Harness::start("use-fk").await.unwrap();
    h.node.set_sessions(vec![session(5, 1, 2)]);
    // Heartbeats far apart: only the usage report can notice the missing row in time.
    let cp = h
        .spawn_with(Duration::from_secs(3600), Duration::from_millis(150))
        .unwrap();
    wait_totals(&h, &[(5, 1, 2)]).await;
    h.db.execute("DELETE FROM waylume_servers WHERE id = 'use-fk'", &[])
        .await
        .unwrap();
    h.node.set_sessions(vec![session(5, 3, 4)]);
    wait_totals(&h, &[(5, 3, 4)]).await;
    let row = h.server_row().await.unwrap().unwrap();
    assert_eq!(row["status"], "online");
    let lines = logcap::lines("use-fk has no row");
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The failed report counted as one usage failure, logged once, then recovered.
    assert_eq!(cp.health.get().usage_failures_total, 1);
    assert_eq!(logcap::lines("use-fk usage reports failing").len(), 1);
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn final_usage_is_flushed_on_shutdown() {
    let h = Harness::start("use-flush").await.unwrap();
    h.node.set_sessions(vec![session(6, 10, 20)]);
    let cp = h.spawn().unwrap();
    wait_totals(&h, &[(6, 10, 20)]).await;
    let mut last = session(6, 90, 95);
    last.status = waylume::control::SessionStatus::Deleted;
    h.node.set_sessions(vec![last]);
    cp.stop().await.unwrap();
    let rows = h.sessions().await.unwrap();
    assert_eq!(
        (rows[0]["rx_bytes"].as_i64(), rows[0]["tx_bytes"].as_i64()),
        (Some(90), Some(95))
    );
    assert_eq!(rows[0]["status"], "deleted");
    assert_eq!(h.server_row().await.unwrap().unwrap()["status"], "offline");
}

/// One owed row Supabase refuses for good (a CHECK violation) is parked; the rows around it are
/// delivered and acknowledged, and the link stays healthy instead of retrying one batch forever.
#[tokio::test]
async fn a_refused_outbox_row_is_parked_and_holds_nothing_back() {
    use waylume::control::{Owed, OwedKind, owed_session};
    let h = Harness::start("use-park").await.unwrap();
    let entry = |id: i64, n: u8, status: &str| {
        let mut body = owed_session(&session(n, 100 * u64::from(n), 1));
        body["status"] = status.into();
        Owed {
            id,
            rev: 0,
            kind: OwedKind::Session,
            body,
        }
    };
    *h.node.owed.lock().unwrap() = vec![
        entry(1, 1, "deleted"),
        entry(2, 2, "no-such-status"),
        entry(3, 3, "expired"),
    ];
    let cp = h.spawn().unwrap();
    wait_totals(&h, &[(1, 100, 1), (3, 300, 1)]).await;
    let health = cp.health.clone();
    wait_for("the bad row parked", PATIENCE, || {
        let h = health.get();
        async move { h.parked == 1 && h.usage == waylume::control::LinkState::Healthy }
    })
    .await
    .unwrap();
    assert_eq!(cp.health.get().summary(), "healthy (1 outbox rows refused)");
    let left: Vec<i64> = h.node.owed.lock().unwrap().iter().map(|o| o.id).collect();
    assert_eq!(left, [2], "only the refused row stays owed");
    cp.stop().await.unwrap();
}
