//! Peers expiring together: removed in a few batched jobs, each peer reported once with the
//! last bytes WireGuard and its quota counted.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::node::TestNode;
use waylume::core::peer::LiveStats;
use waylume::node::Removal;
use waylume::node::removal::CHUNK;

#[tokio::test]
async fn five_thousand_expiring_together_leave_in_batches_with_their_final_usage() {
    const N: u64 = 5000;
    let t = TestNode::new("10.0.0.0/16", 6000);
    type Seen = Arc<Mutex<BTreeMap<String, (u64, u64, u64, Removal)>>>;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    t.node.on_removed(move |st, why| {
        let u = st.usage();
        let prev = s.lock().unwrap().insert(
            st.peer.id.to_string(),
            (u.rx, u.tx, st.counters.cap_used, why),
        );
        assert!(prev.is_none(), "reported once");
    });
    // What the daemon owes Supabase for each, as the control feed builds it.
    t.node.owe_on_removal(|st, why| {
        let u = st.usage();
        serde_json::json!({"peer_id": st.peer.id.to_string(), "rx_bytes": u.rx,
            "tx_bytes": u.tx, "status": format!("{why:?}")})
    });
    for _ in 0..N {
        t.create(r#"{"expires_in_secs": 10}"#).await;
    }
    // The last bytes each peer moved: in WireGuard's counters and in its quota.
    let mut want = BTreeMap::new();
    for (i, p) in t.peers().iter().enumerate() {
        let i = i as u64 + 1;
        let stats = LiveStats {
            rx: i,
            tx: 2 * i,
            ..LiveStats::default()
        };
        t.wg.set_stats(&p.peer.public_key, stats);
        t.policy.used.lock().unwrap().insert(p.peer.address, 3 * i);
        want.insert(p.peer.id.to_string(), (i, 2 * i, 3 * i, Removal::Expired));
    }
    let wg_changes = t.wg.changes.load(std::sync::atomic::Ordering::SeqCst);

    let now = t.now() + 11;
    let mut jobs = 0;
    loop {
        jobs += 1;
        let more = t.node.call(move |n| n.remove_due(now)).await.unwrap();
        if !more {
            break;
        }
    }
    let chunks = (N as usize).div_ceil(CHUNK);
    assert_eq!(jobs, chunks);
    assert_eq!(*seen.lock().unwrap(), want, "every final usage, once");
    assert!(t.peers().is_empty() && t.wg.is_empty());
    let ordering = std::sync::atomic::Ordering::SeqCst;
    assert_eq!(
        t.wg.changes.load(ordering) - wg_changes,
        chunks,
        "one update a job"
    );
    assert_eq!(
        t.policy.batches.load(ordering),
        chunks,
        "one data-plane batch a job"
    );
    let store = waylume::store::Store::open(t.dir.path()).unwrap();
    assert!(
        store.load_peers().unwrap().is_empty(),
        "gone from the store"
    );
    // Each final usage row kept in the outbox, written with its removal.
    let owed: BTreeMap<String, (u64, u64)> = store
        .owed(0, 2 * N as usize)
        .unwrap()
        .into_iter()
        .map(|r| {
            let n = |k: &str| r.body[k].as_u64().unwrap();
            assert_eq!(r.kind, "session");
            assert_eq!(r.body["status"], "Expired");
            let id = r.body["peer_id"].as_str().unwrap().to_string();
            (id, (n("rx_bytes"), n("tx_bytes")))
        })
        .collect();
    let want: BTreeMap<String, (u64, u64)> = want
        .into_iter()
        .map(|(id, (rx, tx, _, _))| (id, (rx, tx)))
        .collect();
    assert_eq!(owed, want, "every final usage row in the outbox, once");
    assert_eq!(store.owed_count().unwrap(), (N, 0));
}
