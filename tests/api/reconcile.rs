//! The reconcile loop running while the API changes peers: a change that lands between the
//! loop's reading of the device and its comparison must not look like drift. Only a pass that
//! found the device different from the node's own state may count as a repair.
use std::sync::Arc;
use std::time::Duration;

use common::node::TestNode;
use tokio::sync::watch;
use warp::http::StatusCode;

const PAIRS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_changes_during_reconcile_count_no_repairs() {
    let t = TestNode::new("10.0.0.0/16", 1000);
    let (stop_tx, stop_rx) = watch::channel(false);
    let loop_task = tokio::spawn(waylume::node::reconcile::run(
        t.node.clone(),
        None,
        Duration::from_millis(1),
        stop_rx,
    ));
    // Two clients at once, so that changes also arrive while a pass is between its steps.
    let t = Arc::new(t);
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let t = t.clone();
            tokio::spawn(async move {
                for _ in 0..PAIRS / 2 {
                    let (status, peer) = t.call("POST", "/api/peers", "{}").await;
                    assert_eq!(status, StatusCode::CREATED, "client {c}: {peer}");
                    let body = format!(r#"{{"peer_id":"{}"}}"#, peer["peer_id"].as_str().unwrap());
                    let (status, v) = t.call("POST", "/api/peers/delete", &body).await;
                    assert_eq!(status, StatusCode::OK, "client {c}: {v}");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    stop_tx.send_replace(true);
    loop_task.await.unwrap();

    let passes = t.node.view().passes;
    assert!(passes.runs > 0, "the loop ran");
    assert_eq!(passes.errors, 0);
    assert_eq!(
        passes.repairs, 0,
        "false repairs over {PAIRS} create/delete pairs and {} passes",
        passes.runs
    );
    // The same figure as an alert on `/metrics` sees it.
    let resp = warp::test::request()
        .path("/metrics")
        .reply(&waylume::api::routes(t.api.clone()))
        .await;
    let text = String::from_utf8_lossy(resp.body());
    assert!(
        text.contains("\nwaylume_reconcile_repairs_total 0\n"),
        "{text}"
    );
    assert!(t.wg.is_empty(), "every peer deleted");
}

/// Classes are made ahead only on a node where some peer has a speed limit, for the addresses
/// the next peers will get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_classes_are_asked_for_only_once_a_peer_has_a_limit() {
    let t = TestNode::new("10.0.0.0/16", 1000);
    let (stop_tx, stop_rx) = watch::channel(false);
    let loop_task = tokio::spawn(waylume::node::reconcile::run(
        t.node.clone(),
        None,
        Duration::from_millis(5),
        stop_rx,
    ));
    let passes_after = |n: u64| {
        let node = t.node.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while node.view().passes.runs < n {
                assert!(tokio::time::Instant::now() < deadline, "no reconcile pass");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let (status, plain) = t.call("POST", "/api/peers", "{}").await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    let seen = t.node.view().passes.runs;
    passes_after(seen + 3).await;
    assert!(
        t.policy.spares.lock().unwrap().is_empty(),
        "no limits, no spares"
    );

    let body = r#"{"speed_limit":{"download_kbps":2000}}"#;
    let (status, limited) = t.call("POST", "/api/peers", body).await;
    assert_eq!(status, StatusCode::CREATED, "{limited}");
    let seen = t.node.view().passes.runs;
    passes_after(seen + 3).await;
    stop_tx.send_replace(true);
    loop_task.await.unwrap();

    let spares = t.policy.spares.lock().unwrap().clone();
    let last = spares.last().expect("spares asked for");
    assert_eq!(last.len(), 256);
    let next: Vec<String> = ["10.0.0.4", "10.0.0.5"].map(String::from).to_vec();
    assert_eq!(
        last[..2].iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        next,
        "the addresses after {} and {}",
        plain["address"],
        limited["address"]
    );
}
