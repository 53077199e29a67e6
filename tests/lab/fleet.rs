//! The fleet loop end to end: the daemon registers in a real PostgreSQL behind the
//! PostgREST-compatible server, the reference Edge Function (Deno, supabase-js) picks it from
//! the fleet table and creates a peer through the signed API, a real WireGuard client uses the
//! config it returns, usage reaches `vpn_sessions`, and SIGTERM marks the node offline.
//! Needs root, PostgreSQL and the example's npm packages: `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::harness::{INTERNET, NodeLab, SECRET};
use common::control::pg::PgCluster;
use common::control::rest::{FakeRest, SERVICE_KEY, USER_TOKEN};
use common::netns::sh;
use serde_json::{Value, json};

/// The host's end of the veth into the server namespace, and the server's.
const HOST: &str = "100.64.9.1";
const NODE: &str = "100.64.9.2";

async fn row(db: &tokio_postgres::Client, sql: &str) -> Option<Value> {
    let r = db.query_opt(sql, &[]).await.unwrap()?;
    Some(serde_json::from_str(r.get::<_, &str>(0)).unwrap())
}

async fn wait_row(
    db: &tokio_postgres::Client,
    what: &str,
    sql: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = row(db, sql).await;
        if let Some(v) = r.as_ref().filter(|v| ok(v)) {
            return v.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, PostgreSQL and npm ci in examples/edge-functions/connection-request"]
async fn edge_function_to_client_traffic_and_back_to_the_fleet_table() {
    let mut nl = NodeLab::new("f");
    nl.lab
        .host_link(&nl.srv, &format!("{HOST}/30"), &format!("{NODE}/30"));
    let pg = PgCluster::start().await.unwrap();
    let rest = FakeRest::start_on(&pg, HOST.parse().unwrap())
        .await
        .unwrap();
    let db = pg.connect().await.unwrap();

    let url = rest.url();
    let d = nl.daemon(&[
        ("SERVER_ID", "lab-fleet-1"),
        ("SUPABASE_URL", &url),
        ("SUPABASE_KEY", SERVICE_KEY),
        ("WAYLUME_API_BIND", "0.0.0.0"),
        ("WAYLUME_ENDPOINT", &format!("{NODE}:51820")),
        ("SERVER_COUNTRY", "DE"),
        ("SERVER_CITY", "Frankfurt"),
        ("WAYLUME_HEARTBEAT_INTERVAL_SECS", "1"),
        ("WAYLUME_USAGE_INTERVAL_SECS", "1"),
    ]);
    let (pid, _notify) = d.start(&mut nl.lab, "daemon");
    let server_sql = "SELECT to_jsonb(s)::text FROM waylume_servers s WHERE id = 'lab-fleet-1'";
    let server = wait_row(&db, "registration", server_sql, |v| v["status"] == "online").await;
    assert_eq!(server["country"], "DE");
    assert_eq!(server["api_port"], 3000);
    assert_eq!(server["endpoint"], format!("{NODE}:51820"));

    // The function picks this node from the table and signs its request to the node's API.
    let mut function = common::control::edge::start(&url, SECRET).await.unwrap();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/", function.port))
        .bearer_auth(USER_TOKEN)
        .json(&json!({"country": "DE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let out: Value = answer.json().await.unwrap();
    assert_eq!(out["server_id"], "lab-fleet-1", "{out}");
    let config = out["config"].as_str().unwrap();
    assert!(
        config.contains(&format!("Endpoint = {NODE}:51820")),
        "{config}"
    );

    // A real client with the returned config (over the client's own underlay link).
    let address = config
        .lines()
        .find_map(|l| l.strip_prefix("Address = "))
        .and_then(|a| a.split('/').next())
        .unwrap()
        .to_string();
    let peer = json!({"config": config, "endpoint": format!("{NODE}:51820"), "address": address});
    nl.client(&peer, "c");
    let lab_ref = &nl.lab;
    let cli = nl.cli.clone();
    common::netns::wait_for("ping through the tunnel", Duration::from_secs(15), || {
        lab_ref.ping(&cli, INTERNET)
    });
    for _ in 0..5 {
        assert!(nl.lab.ping(&nl.cli, INTERNET));
    }
    let session_sql =
        "SELECT to_jsonb(v)::text FROM vpn_sessions v WHERE server_id = 'lab-fleet-1'";
    let session = wait_row(&db, "usage", session_sql, |v| {
        v["rx_bytes"].as_i64() > Some(0)
    })
    .await;
    assert_eq!(session["session_id"], out["session_id"], "{session}");

    sh(&["kill", "-TERM", &pid.to_string()]);
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(20)), Some(0));
    wait_row(&db, "offline", server_sql, |v| v["status"] == "offline").await;
    function.child.kill().await.unwrap();
}
