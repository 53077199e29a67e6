//! The API through its real routes, in-process, with the in-memory WireGuard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;

use common::node::{TestNode, error_code};
use serde_json::json;
use warp::http::StatusCode;
use wireguard_control::Key;

#[tokio::test]
async fn create_returns_a_complete_peer_and_is_idempotent_by_session() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let v = t.create(r#"{"session_id":"sess-1","user_id":"u1","speed_limit":{"download_kbps":2000,"upload_kbps":1000},"data_cap_bytes":1000000}"#).await;
    assert_eq!(v["address"], "10.0.0.2");
    assert_eq!(
        v["server_public_key"],
        Key([42; 32]).get_public().to_base64()
    );
    assert_eq!(v["endpoint"], "192.0.2.1:51820");
    assert_eq!(v["speed_limit"]["download_kbps"], 2000);
    assert_eq!(v["data_cap_bytes"], 1000000);
    let private = Key::from_base64(v["private_key"].as_str().unwrap()).unwrap();
    assert_eq!(private.get_public().to_base64(), v["public_key"]);
    let config = v["config"].as_str().unwrap();
    assert!(
        config.contains(&format!("PrivateKey = {}", private.to_base64())),
        "{config}"
    );
    assert!(config.contains(&format!(
        "PresharedKey = {}",
        v["preshared_key"].as_str().unwrap()
    )));
    assert!(t.wg.has_peer(&private.get_public()));

    let (status, again) = t.call("POST", "/api/peers", r#"{"session_id":"sess-1","user_id":"u1","speed_limit":{"download_kbps":2000,"upload_kbps":1000},"data_cap_bytes":1000000}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["peer_id"], v["peer_id"]);
    assert_eq!(again["private_key"], v["private_key"]);
    assert_eq!(t.wg.len(), 1);

    let (status, e) = t
        .call(
            "POST",
            "/api/peers",
            r#"{"session_id":"sess-1","data_cap_bytes":5}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&e), "conflict");
}

#[tokio::test]
async fn client_generated_key_returns_no_private_key() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let key = Key([7; 32]).get_public().to_base64();
    let v = t.create(&json!({"public_key": key}).to_string()).await;
    assert_eq!(v["public_key"], key);
    assert!(v["private_key"].is_null());
    assert!(!v["config"].as_str().unwrap().contains("\nPrivateKey ="));
    let (status, e) = t
        .call(
            "POST",
            "/api/peers",
            &json!({"public_key": key}).to_string(),
        )
        .await;
    assert_eq!(
        (status, error_code(&e).as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let t = TestNode::new("10.0.0.0/24", 100);
    t.create("{}").await;
    let changes = t.wg.changes.load(Ordering::SeqCst);
    let long = "x".repeat(129);
    let cases: Vec<(String, StatusCode)> = vec![
        ("{".into(), StatusCode::BAD_REQUEST),
        ("[1,2".into(), StatusCode::BAD_REQUEST),
        (
            r#"{"session_id": 5}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"colour": "red"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"public_key": "abc"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"public_key": Key([42; 32]).get_public().to_base64()}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"session_id": long}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"session_id": "has space"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"data_cap_bytes": -1}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"data_cap_bytes": 1e30}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"data_cap_bytes": 99999999999999999999}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"data_cap_bytes": 9007199254740993}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"speed_limit": {"download_kbps": 0}}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"speed_limit": {"download_kbps": 100000001}}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"speed_limit": {"upload_kbps": -5}}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"speed_limit": {"burst": 5}}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"expires_in_secs": 0}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#""just a string""#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (body, want) in cases {
        let (status, v) = t.call("POST", "/api/peers", &body).await;
        assert_eq!(status, want, "{body} -> {v}");
        error_code(&v);
    }
    let big = format!(r#"{{"user_id": "{}"}}"#, "a".repeat(70_000));
    let (status, v) = t.call("POST", "/api/peers", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&v), "payload_too_large");
    let no_type = t
        .signed("POST", "/api/peers", b"{}")
        .header("content-type", "text/plain");
    let (status, _) = t.send(no_type).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(t.peers().len(), 1, "no peer was added");
    assert_eq!(
        t.wg.changes.load(Ordering::SeqCst),
        changes,
        "WireGuard was not touched"
    );
    assert_eq!(
        t.create("{}").await["address"],
        "10.0.0.3",
        "no address leaked"
    );
}

#[tokio::test]
async fn signatures_are_required_and_checked() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let unsigned = warp::test::request().method("GET").path("/api/peers");
    let (status, v) = t.send(unsigned).await;
    assert_eq!(
        (status, error_code(&v).as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    // Tampered body: signed over one body, sent with another.
    let nonce = t.next_nonce();
    let sig = waylume::core::auth::sign(
        common::node::SECRET,
        common::node::SERVER_ID,
        &waylume::core::auth::Request {
            method: "POST",
            path_and_query: "/api/peers",
            body: b"{}",
        },
        t.now(),
        &nonce,
    );
    let tampered = warp::test::request()
        .method("POST")
        .path("/api/peers")
        .header("content-type", "application/json")
        .header("x-waylume-timestamp", t.now().to_string())
        .header("x-waylume-nonce", nonce)
        .header("x-waylume-signature", sig)
        .body(r#"{"data_cap_bytes":1}"#);
    assert_eq!(t.send(tampered).await.0, StatusCode::UNAUTHORIZED);

    // Stale: signed 61 s before the node's clock.
    let stale = t.signed("GET", "/api/peers", b"");
    t.clock.fetch_add(61, Ordering::SeqCst);
    assert_eq!(t.send(stale).await.0, StatusCode::UNAUTHORIZED);

    // Replayed: the same signed request twice.
    let nonce = t.next_nonce();
    let ts = t.now();
    let sig = waylume::core::auth::sign(
        common::node::SECRET,
        common::node::SERVER_ID,
        &waylume::core::auth::Request {
            method: "GET",
            path_and_query: "/api/peers",
            body: b"",
        },
        ts,
        &nonce,
    );
    let make = || {
        warp::test::request()
            .method("GET")
            .path("/api/peers")
            .header("x-waylume-timestamp", ts.to_string())
            .header("x-waylume-nonce", nonce.clone())
            .header("x-waylume-signature", sig.clone())
    };
    assert_eq!(t.send(make()).await.0, StatusCode::OK);
    assert_eq!(t.send(make()).await.0, StatusCode::UNAUTHORIZED);

    // Health and metrics need no signature. A failed reconcile pass shows until one works.
    t.node.call(|n| n.pass_failed()).await.unwrap();
    let (status, h) = t
        .send(warp::test::request().method("GET").path("/health"))
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "data plane reported down: {h}"
    );
    assert_eq!(h["interface"]["up"], false);
    t.reconcile(false).await;
    let (status, h) = t
        .send(warp::test::request().method("GET").path("/health"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["capacity"]["max"], 100);
    assert_eq!(h["control_plane"]["state"], "standalone");
    assert!(t.peers().is_empty());
}

#[tokio::test]
async fn a_failing_data_plane_leaves_no_half_made_peer() {
    let t = TestNode::new("10.0.0.0/24", 100);
    t.wg.fail_next.store(true, Ordering::SeqCst);
    let (status, v) = t.call("POST", "/api/peers", r#"{"session_id":"s"}"#).await;
    assert_eq!(
        (status, error_code(&v).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(t.peers().is_empty());
    assert!(t.wg.is_empty());
    let v = t.create(r#"{"session_id":"s"}"#).await;
    assert_eq!(v["address"], "10.0.0.2", "the address was given back");
    // A failed delete keeps the peer.
    t.wg.fail_next.store(true, Ordering::SeqCst);
    let (status, _) = t
        .call(
            "POST",
            "/api/peers/delete",
            &json!({"peer_id": v["peer_id"]}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(t.peers().len(), 1);
    assert_eq!(t.wg.len(), 1);
}

#[tokio::test]
async fn pool_exhaustion_and_capacity_answer_503() {
    let t = TestNode::new("10.0.0.0/29", 100);
    for _ in 0..5 {
        t.create("{}").await;
    }
    let (status, v) = t.call("POST", "/api/peers", "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exhausted")
    );
    let small = TestNode::new("10.0.0.0/24", 2);
    small.create("{}").await;
    small.create("{}").await;
    let (status, v) = small.call("POST", "/api/peers", "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"]["message"].as_str().unwrap().contains("capacity"));
}

#[tokio::test]
async fn delete_by_each_selector_and_unknown_peers() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let a = t.create(r#"{"session_id":"a"}"#).await;
    let b = t.create(r#"{"session_id":"b"}"#).await;
    let c = t.create(r#"{"session_id":"c"}"#).await;
    let (s, v) = t
        .call(
            "POST",
            "/api/peers/delete",
            &json!({"peer_id": a["peer_id"]}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["peer_id"], a["peer_id"]);
    assert!(v["stats"]["rx_bytes"].is_u64());
    let (s, _) = t
        .call(
            "POST",
            "/api/peers/delete",
            &json!({"public_key": b["public_key"]}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t
        .call("POST", "/api/peers/delete", r#"{"session_id":"c"}"#)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(t.wg.is_empty());
    let (s, v) = t
        .call(
            "POST",
            "/api/peers/delete",
            &json!({"peer_id": c["peer_id"]}).to_string(),
        )
        .await;
    assert_eq!(
        (s, error_code(&v).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (s, _) = t
        .call(
            "POST",
            "/api/peers/delete",
            r#"{"peer_id":"x","session_id":"y"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = t.call("POST", "/api/peers/delete", "{}").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn limits_and_caps_change_and_persist() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let p = t.create("{}").await;
    let id = p["peer_id"].as_str().unwrap();
    let (s, v) = t
        .call(
            "POST",
            "/api/peers/speed-limit",
            &json!({"peer_id": id, "download_kbps": 500, "upload_kbps": null}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["speed_limit"],
        json!({"download_kbps": 500, "upload_kbps": null})
    );
    let (s, v) = t
        .call(
            "POST",
            "/api/peers/data-cap",
            &json!({"peer_id": id, "data_cap_bytes": 12345}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data_cap_bytes"], 12345);
    assert_eq!(v["stats"]["cap_remaining_bytes"], 12345);
    let (s, v) = t.call("GET", &format!("/api/peers/{id}"), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["speed_limit"]["download_kbps"], 500);
    assert!(
        v["private_key"].is_null(),
        "keys are only shown at creation"
    );
    assert!(v["config"].is_null());
    let (s, _) = t
        .call(
            "POST",
            "/api/peers/speed-limit",
            &json!({"peer_id": id, "download_kbps": 0}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = "0".repeat(32);
    let (s, _) = t
        .call(
            "POST",
            "/api/peers/data-cap",
            &json!({"peer_id": unknown, "data_cap_bytes": 1}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t.call("GET", "/api/peers/not-an-id", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t.call("DELETE", "/api/peers", "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);

    // A new node on the same state directory has the same peer, limits and cap.
    let wg = t.wg.clone();
    let t2 = TestNode::open(t.dir, wg, "10.0.0.0/24", 100);
    let (s, list) = t2.call("GET", "/api/peers", "").await;
    assert_eq!(s, StatusCode::OK);
    let peers = list["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["speed_limit"]["download_kbps"], 500);
    assert_eq!(peers[0]["data_cap_bytes"], 12345);
}

#[tokio::test]
async fn restart_restores_peers_into_a_wiped_interface_and_keeps_usage() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let p = t.create("{}").await;
    let key = Key::from_base64(p["public_key"].as_str().unwrap()).unwrap();
    t.wg.set_stats(
        &key,
        waylume::core::peer::LiveStats {
            rx: 1000,
            tx: 2000,
            last_handshake: Some(5),
            endpoint: None,
        },
    );
    t.reconcile(true).await;
    // The interface is re-created: the kernel's counters start again from zero.
    t.wg.wipe();
    let repairs = t.reconcile(false).await;
    assert!(repairs.interface_created);
    assert_eq!(repairs.peers_added, 1);
    assert!(t.wg.has_peer(&key));
    t.wg.set_stats(
        &key,
        waylume::core::peer::LiveStats {
            rx: 10,
            tx: 20,
            last_handshake: Some(6),
            endpoint: None,
        },
    );
    t.flush().await;
    assert_eq!(
        t.reconcile(false).await,
        Default::default(),
        "a second pass changes nothing"
    );
    let wg = t.wg.clone();
    let t2 = TestNode::open(t.dir, wg, "10.0.0.0/24", 100);
    let (_, v) = t2
        .call(
            "GET",
            &format!("/api/peers/{}", p["peer_id"].as_str().unwrap()),
            "",
        )
        .await;
    assert_eq!(v["stats"]["rx_bytes"], 1010);
    assert_eq!(v["stats"]["tx_bytes"], 2020);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let t = TestNode::new("10.0.0.0/24", 100);
    t.create("{}").await;
    t.call("POST", "/api/peers", "{").await;
    let resp = warp::test::request()
        .method("GET")
        .path("/metrics")
        .reply(&waylume::api::routes(t.api.clone()))
        .await;
    let text = String::from_utf8(resp.body().to_vec()).unwrap();
    assert!(
        text.contains("waylume_api_requests_total{route=\"create_peer\",code=\"201\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("waylume_api_requests_total{route=\"create_peer\",code=\"400\"} 1"),
        "{text}"
    );
    assert!(text.contains("\nwaylume_peers 1\n"), "{text}");
}

#[tokio::test]
async fn expired_and_idle_peers_are_due_and_removals_are_reported() {
    use std::sync::{Arc, Mutex};
    use waylume::core::registry::Selector;
    use waylume::node::Removal;
    let t = TestNode::new("10.0.0.0/24", 100);
    let seen: Arc<Mutex<Vec<(String, Removal)>>> = Arc::default();
    let s = seen.clone();
    t.node
        .on_removed(move |st, why| s.lock().unwrap().push((st.peer.id.to_string(), why)));
    let now = t.now();
    let p = t.create(r#"{"expires_in_secs": 10}"#).await;
    let id = p["peer_id"].as_str().unwrap().to_string();
    assert!(t.due_for_removal(now + 9).await.is_empty());
    let due = t.due_for_removal(now + 11).await;
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].0.to_string(), due[0].1),
        (id.clone(), Removal::Expired)
    );
    let (sel, why) = (Selector::Id(due[0].0.clone()), due[0].1);
    t.node
        .call(move |n| n.delete(&sel, why))
        .await
        .unwrap()
        .unwrap();
    let (s, _) = t
        .call(
            "POST",
            "/api/peers/delete",
            &json!({"peer_id": id}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let q = t.create("{}").await;
    t.call(
        "POST",
        "/api/peers/delete",
        &json!({"peer_id": q["peer_id"]}).to_string(),
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (id, Removal::Expired),
            (q["peer_id"].as_str().unwrap().to_string(), Removal::Deleted)
        ]
    );
}

#[tokio::test]
async fn the_view_names_an_address_holder_and_forgets_it_on_delete() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let v = t.create(r#"{"session_id":"holder-1"}"#).await;
    let id = v["peer_id"].as_str().unwrap().to_string();
    let view = t.node.view();
    assert_eq!(
        view.holder(ip("10.0.0.2")).map(|p| p.to_string()),
        Some(id.clone())
    );
    assert_eq!(view.holder(ip("10.0.0.3")), None);

    let body = format!(r#"{{"peer_id":"{id}"}}"#);
    let (status, _) = t.call("POST", "/api/peers/delete", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.node.view().holder(ip("10.0.0.2")), None);

    // The address goes to the next peer, and the view names the new holder only.
    let w = t.create(r#"{"session_id":"holder-2"}"#).await;
    assert_eq!(w["address"], "10.0.0.2");
    assert_eq!(
        t.node.view().holder(ip("10.0.0.2")).map(|p| p.to_string()),
        w["peer_id"].as_str().map(str::to_string)
    );
}

/// Device reads made off the node's thread can arrive in any order: a peer's counters are
/// folded only from a read newer than the one they came from, so a late read is never taken for
/// a counter reset (which would count its bytes twice).
#[tokio::test]
async fn a_late_device_read_neither_double_counts_nor_goes_back() {
    use waylume::core::peer::LiveStats;
    use waylume::core::registry::Selector;
    use waylume::node::Removal;
    let t = TestNode::new("10.0.0.0/24", 100);
    t.create("{}").await;
    let p = t.peers()[0].peer.clone();
    let stats = |rx| LiveStats {
        rx,
        tx: rx / 2,
        ..LiveStats::default()
    };
    t.wg.set_stats(&p.public_key, stats(100));
    let early = t.node.read_device().await.unwrap();
    t.wg.set_stats(&p.public_key, stats(150));
    // A pass folds the newer counters first.
    t.reconcile(false).await;
    assert_eq!(t.peers()[0].usage().rx, 150);
    // Then a delete that was handed the earlier read.
    let sel = Selector::Id(p.id.clone());
    let gone = t
        .node
        .call(move |n| n.delete_after(&sel, Removal::Deleted, &early))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((gone.usage().rx, gone.usage().tx), (150, 75));
}
