//! The API against a hostile network, in-process: what an on-path reader sees of a create, what
//! a list shows, answers that were altered, a request replayed after a restart, and policy
//! changes while a data-plane command hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use common::node::{SECRET, SERVER_ID, TestNode};
use serde_json::Value;
use warp::http::StatusCode;
use waylume::api::metrics::Metrics;
use waylume::api::{self, Api};
use waylume::core::{answer, auth};

/// An Api over the test node's `Node`, as the daemon builds it.
fn api_for(t: &TestNode) -> Api {
    let now = t.now();
    Api::new(
        t.node.clone(),
        Arc::new(Metrics::default()),
        100,
        Some((SECRET, SERVER_ID)),
        move || now,
        None,
    )
}

async fn raw(
    api: &Arc<Api>,
    req: warp::test::RequestBuilder,
) -> (StatusCode, Vec<u8>, Option<String>) {
    let resp = req.reply(&api::routes(api.clone())).await;
    let sig = resp
        .headers()
        .get(auth::HEADER_SIGNATURE)
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status(), resp.body().to_vec(), sig)
}

#[tokio::test]
async fn an_on_path_reader_learns_no_key_and_an_altered_answer_is_refused() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let nonce = t.next_nonce();
    let (status, body, sig) = raw(&t.api, t.signed_with(&nonce, "POST", "/api/peers", b"{}")).await;
    assert_eq!(status, StatusCode::CREATED);
    let v: Value = serde_json::from_slice(&body).unwrap();
    for f in ["private_key", "preshared_key", "config"] {
        assert!(v.get(f).is_none(), "{f} in clear: {v}");
    }
    assert_eq!(v["sealed"]["scheme"], "hkdf-sha256-aes-256-gcm-v1");
    // The answer is signed for this request; any change to it, or another nonce, fails.
    answer::verify(SECRET, SERVER_ID, &nonce, 201, &body, sig.as_deref()).unwrap();
    let altered = String::from_utf8(body.clone())
        .unwrap()
        .replace("192.0.2.1:51820", "198.51.100.66:51820");
    assert_ne!(altered.as_bytes(), &body[..]);
    assert_eq!(
        answer::verify(
            SECRET,
            SERVER_ID,
            &nonce,
            201,
            altered.as_bytes(),
            sig.as_deref()
        ),
        Err(answer::AnswerError::BadSignature)
    );
    assert_eq!(
        answer::verify(
            SECRET,
            SERVER_ID,
            &t.next_nonce(),
            201,
            &body,
            sig.as_deref()
        ),
        Err(answer::AnswerError::BadSignature)
    );

    // A list and a get show no preshared key (nor private key or config).
    for path in [
        "/api/peers".to_string(),
        format!("/api/peers/{}", v["peer_id"].as_str().unwrap()),
    ] {
        let (status, list) = t.call("GET", &path, "").await;
        assert_eq!(status, StatusCode::OK);
        let text = list.to_string();
        assert!(!text.contains("preshared_key\":\""), "{text}");
        assert!(!text.contains("PrivateKey"), "{text}");
    }
}

#[tokio::test]
async fn refusals_are_signed_too_and_unsigned_requests_get_unsigned_refusals() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let nonce = t.next_nonce();
    let mut req = t.signed_with(&nonce, "POST", "/api/peers", b"{}");
    req = req.header(auth::HEADER_SIGNATURE, format!("v1={}", "00".repeat(32)));
    let (status, body, sig) = raw(&t.api, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    answer::verify(SECRET, SERVER_ID, &nonce, 401, &body, sig.as_deref()).unwrap();
    let (status, _, sig) = raw(
        &t.api,
        warp::test::request().method("GET").path("/api/peers"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(sig, None);
    assert_eq!(t.wg.len(), 0);
}

#[tokio::test]
async fn a_request_accepted_before_a_restart_is_refused_after_it() {
    let t = TestNode::new("10.0.0.0/24", 100);
    let state = tempfile::tempdir().unwrap();
    let (floor, prev) = api::replay::ReplayFloor::open(state.path()).unwrap();
    assert_eq!(prev, None);
    let first = Arc::new(api_for(&t).with_replay_floor(floor, prev, t.now() - 3600));
    let nonce = t.next_nonce();
    let body = br#"{"session_id":"captured"}"#;
    let (status, ..) = raw(&first, t.signed_with(&nonce, "POST", "/api/peers", body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, ..) = raw(
        &t.api,
        t.signed("POST", "/api/peers/delete", br#"{"session_id":"captured"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.wg.len(), 0);

    // The process restarts a second later; the captured request is played again.
    let (floor, prev) = api::replay::ReplayFloor::open(state.path()).unwrap();
    assert_eq!(prev.as_ref().map(|f| f.ts), Some(t.now()));
    let second = Arc::new(api_for(&t).with_replay_floor(floor, prev, t.now() + 1));
    let (status, body, _) = raw(&second, t.signed_with(&nonce, "POST", "/api/peers", body)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("restarted"));
    assert_eq!(t.wg.len(), 0, "the replay created a peer");
}

#[tokio::test]
async fn policy_changes_wait_for_no_hung_command() {
    use waylume::sys::runner::{Cmd, Runner, SystemRunner};
    let t = TestNode::new("10.0.0.0/24", 100);
    let runner = SystemRunner::new();
    let flight = runner.in_flight();
    let api = Arc::new(api_for(&t).with_commands(flight.clone(), Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("nft-hangs-here");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let f = fifo.clone();
    let hung = std::thread::spawn(move || runner.run(&Cmd::new(["cat", f.to_str().unwrap()])));
    while flight.stuck(Duration::ZERO).is_none() {
        std::thread::yield_now();
    }
    let (status, body, _) = raw(&api, t.signed("POST", "/api/peers", b"{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("nft-hangs-here"));
    assert_eq!(t.wg.len(), 0);
    // Reads still answer.
    let (status, ..) = raw(&api, t.signed("GET", "/api/peers", b"")).await;
    assert_eq!(status, StatusCode::OK);
    std::fs::write(&fifo, "").unwrap();
    hung.join().unwrap().unwrap();
    let (status, ..) = raw(&api, t.signed("POST", "/api/peers", b"{}")).await;
    assert_eq!(status, StatusCode::CREATED);
}
