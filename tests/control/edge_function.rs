//! The connection-request Edge Function, run for real under Deno with supabase-js, against the
//! PostgREST-compatible server (fleet table and Auth) and stand-in node APIs that verify the
//! request signatures. Needs the example's npm packages:
//! `npm ci --prefix supabase/functions/connection-request`.
// Helpers here are test code too: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::control::node::key;
use common::control::pg::PgCluster;
use common::control::rest::{FakeRest, USER_ID, USER_TOKEN};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const API_SECRET: &str = "edge-function-test-secret";

use common::control::edge::function_dir;

/// A node API that checks signatures for one server id, as the node does, and creates peers.
struct NodeApi {
    port: u16,
    /// (status answered, request body) per request.
    seen: Arc<Mutex<Vec<(u16, Value)>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn verify(server_id: &str, method: &str, path: &str, h: &hyper::HeaderMap, body: &[u8]) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let Ok(ts) = get("x-waylume-timestamp").parse::<u64>() else {
        return false;
    };
    let nonce = get("x-waylume-nonce");
    if now.abs_diff(ts) > 60 || !(16..=64).contains(&nonce.len()) {
        return false;
    }
    let text = format!(
        "waylume-v1\n{server_id}\n{method}\n{path}\n{ts}\n{nonce}\n{}",
        hex(&Sha256::digest(body))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(API_SECRET.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    get("x-waylume-signature") == format!("v1={}", hex(&mac.finalize().into_bytes()))
}

async fn node_api(server_id: &'static str) -> NodeApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let log = log.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let path = parts.uri.path();
                    let ok = verify(
                        server_id,
                        parts.method.as_str(),
                        path,
                        &parts.headers,
                        &body,
                    );
                    let (status, out) = if !ok {
                        (
                            401,
                            json!({"error": {"code": "auth", "message": "bad signature"}}),
                        )
                    } else if parts.method != "POST" || path != "/api/peers" {
                        (
                            404,
                            json!({"error": {"code": "not_found", "message": path}}),
                        )
                    } else {
                        let config = format!(
                            "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.2/32\n\n[Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:51820\nAllowedIPs = 0.0.0.0/0\n",
                            key(7),
                            key(200)
                        );
                        let peer = json!({
                            "peer_id": "0123456789abcdef0123456789abcdef", "public_key": key(8),
                            "private_key": key(7), "address": "10.0.0.2", "endpoint": "127.0.0.1:51820",
                            "server_public_key": key(200), "config": config
                        });
                        (201, peer)
                    };
                    let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    log.lock().unwrap().push((status, sent));
                    // Signed as the node signs its answers, for the request's nonce.
                    let nonce = parts
                        .headers
                        .get("x-waylume-nonce")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let out = out.to_string();
                    let sig = waylume::core::answer::sign(
                        API_SECRET.as_bytes(),
                        server_id,
                        nonce,
                        status,
                        out.as_bytes(),
                    );
                    let mut r = Response::new(Full::new(Bytes::from(out)));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    r.headers_mut()
                        .insert("x-waylume-signature", sig.parse().unwrap());
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    NodeApi { port, seen }
}

/// Inserts a server row as a node registers it; `age_secs` is how old its last heartbeat is
/// (set with the database's triggers off: the guard would write now()).
async fn server(
    db: &tokio_postgres::Client,
    id: &str,
    (status, country): (&str, &str),
    (peers, cap): (i32, i16),
    age_secs: i32,
    api_port: u16,
) {
    db.batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    db.execute(
        "INSERT INTO waylume_servers (id, endpoint, public_ip, wg_port, api_port, wg_public_key,
             country, city, max_capacity, peer_count, status, version, last_heartbeat)
         VALUES ($1, '127.0.0.1:51820', '127.0.0.1', 51820, $2, $3, $4, 'Test', $5, $6, $7, '0.1.0',
                 now() - make_interval(secs => $8))",
        &[
            &id,
            &i32::from(api_port),
            &key(200),
            &country,
            &cap,
            &peers,
            &status,
            &f64::from(age_secs),
        ],
    )
    .await
    .unwrap();
    db.batch_execute("SET session_replication_role = DEFAULT")
        .await
        .unwrap();
}

async fn call(port: u16, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
#[ignore = "needs Deno and supabase-js: npm ci --prefix supabase/functions/connection-request"]
async fn connection_request_picks_a_server_and_returns_its_config() {
    let pg = PgCluster::start().await.unwrap();
    let rest = FakeRest::start(&pg).await.unwrap();
    let db = pg.connect().await.unwrap();

    let best = node_api("ef-best").await;
    let fr = node_api("ef-fr").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Not offered: silent for ten minutes, offline, full, drained by an operator.
    server(&db, "ef-stale", ("online", "DE"), (0, 100), 600, best.port).await;
    server(&db, "ef-offline", ("offline", "DE"), (0, 100), 5, best.port).await;
    server(&db, "ef-full", ("online", "DE"), (100, 100), 5, best.port).await;
    server(
        &db,
        "ef-drained",
        ("draining", "DE"),
        (0, 100),
        5,
        best.port,
    )
    .await;
    // Offered, but its API does not answer: the function moves on to the next.
    server(&db, "ef-dead", ("online", "DE"), (0, 100), 5, dead).await;
    server(&db, "ef-best", ("online", "DE"), (10, 100), 5, best.port).await;
    // Offered, but its API is ef-best's, which refuses a request signed for another node (as a
    // node with the wrong secret does): 401, and the function moves on.
    server(&db, "ef-busy", ("online", "DE"), (90, 100), 5, best.port).await;
    server(&db, "ef-fr", ("online", "FR"), (50, 100), 5, fr.port).await;

    let mut function = common::control::edge::start(&rest.url(), API_SECRET)
        .await
        .unwrap();
    let port = function.port;
    // Whatever order the weighted draw picks, three attempts reach the one good node.
    for round in 0..3 {
        let (status, out) = call(port, Some(USER_TOKEN), json!({"country": "DE"})).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["server_id"], "ef-best", "{out}");
        assert!(
            out["config"].as_str().unwrap().starts_with("[Interface]"),
            "{out}"
        );
        assert!(out.get("endpoint").is_none() && out["peer"].get("private_key").is_none());
        let sent = best.seen.lock().unwrap().clone();
        let created: Vec<_> = sent.iter().filter(|(s, _)| *s == 201).collect();
        assert_eq!(created.len(), round + 1, "{sent:?}");
        let last = created[round];
        assert_eq!(last.1["user_id"], USER_ID);
        assert_eq!(last.1["session_id"], out["session_id"]);
        // A refused attempt of this round carried the same session id.
        for (status, body) in &sent {
            if *status == 401 && body["session_id"] == out["session_id"] {
                assert_eq!(body["user_id"], USER_ID);
            }
        }
    }
    let tried_busy = best
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == 401)
        .count();
    let best_before = best.seen.lock().unwrap().len();

    let (status, out) = call(
        port,
        Some(USER_TOKEN),
        json!({"country": "FR", "public_key": key(9)}),
    )
    .await;
    assert_eq!(
        (status, out["server_id"].as_str()),
        (200, Some("ef-fr")),
        "{out}"
    );
    assert_eq!(fr.seen.lock().unwrap()[0].1["public_key"], key(9));

    let (status, out) = call(port, Some(USER_TOKEN), json!({"country": "JP"})).await;
    assert_eq!(
        (status, out["error"]["code"].as_str()),
        (503, Some("no_server")),
        "{out}"
    );
    let (status, _) = call(port, None, json!({})).await;
    assert_eq!(status, 401);
    let (status, _) = call(port, Some("someone-else"), json!({})).await;
    assert_eq!(status, 401);
    let (status, out) = call(port, Some(USER_TOKEN), json!({"public_key": "nope"})).await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(
        best.seen.lock().unwrap().len(),
        best_before,
        "refused requests reach no node"
    );
    println!("ef-busy (401) was tried in {tried_busy} of 3 requests");

    // The function read the fleet view through PostgREST with the service key, as supabase-js
    // does.
    let reads: Vec<_> = rest
        .seen()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("waylume_available_servers"))
        .collect();
    assert!(!reads.is_empty());
    assert!(reads.iter().all(|r| r.status == 200));
    function.child.kill().await.unwrap();
}

#[test]
#[ignore = "needs Deno and supabase-js: npm ci --prefix supabase/functions/connection-request"]
fn the_function_type_checks_and_its_unit_tests_pass() {
    let deno = function_dir().join("node_modules/.bin/deno");
    let deno_dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["check", "--node-modules-dir=manual", "index.ts"],
        vec![
            "test",
            "--node-modules-dir=manual",
            "handler_test.ts",
            "../_shared/waylume-api_test.ts",
            "../_shared/answer_test.ts",
        ],
        vec!["lint", ".", "../_shared"],
        vec!["fmt", "--check", ".", "../_shared"],
    ] {
        let out = std::process::Command::new(&deno)
            .args(&args)
            .current_dir(function_dir())
            .env("DENO_DIR", deno_dir.path())
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "deno {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
