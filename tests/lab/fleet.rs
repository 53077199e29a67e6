//! The fleet loop end to end: two daemons register in a real PostgreSQL behind the
//! PostgREST-compatible server, one of them misconfigured (a wrong API secret, so it answers
//! every signed request with 401). The connection-request Edge Function (Deno, supabase-js)
//! picks nodes from the fleet view, is refused by the misconfigured one and creates the peer on
//! the other; a real WireGuard client uses the config it returns, usage reaches
//! `vpn_sessions`, and SIGTERM marks the node offline before its API has finished draining.
//! Needs root, PostgreSQL and the example's npm packages: `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::harness::{INTERNET, NodeLab, Notify, SECRET};
use common::control::pg::PgCluster;
use common::control::rest::{FakeRest, SERVICE_KEY, USER_TOKEN};
use common::netns::sh;
use serde_json::{Value, json};

/// The host's end of the veth into the server namespace, and the server's.
const HOST: &str = "100.64.9.1";
const NODE: &str = "100.64.9.2";
/// The same for the misconfigured node's namespace.
const HOST2: &str = "100.64.9.5";
const BAD: &str = "100.64.9.6";

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

/// A second server namespace reachable from the host, with its own veth pair.
fn second_server(nl: &mut NodeLab) -> String {
    let ns = nl.lab.netns("bad");
    let (eh, en) = (nl.lab.ifname("h2"), nl.lab.ifname("n2"));
    sh(&[
        "ip", "link", "add", &eh, "type", "veth", "peer", "name", &en, "netns", &ns,
    ]);
    sh(&["ip", "addr", "add", &format!("{HOST2}/30"), "dev", &eh]);
    sh(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{BAD}/30"),
        "dev",
        &en,
    ]);
    sh(&["ip", "link", "set", &eh, "up"]);
    sh(&["ip", "-n", &ns, "link", "set", &en, "up"]);
    sh(&["ip", "-n", &ns, "route", "add", "default", "via", HOST2]);
    ns
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, PostgreSQL and npm ci in supabase/functions/connection-request"]
async fn edge_function_to_client_traffic_and_back_to_the_fleet_table() {
    let mut nl = NodeLab::new("f");
    nl.lab
        .host_link(&nl.srv, &format!("{HOST}/30"), &format!("{NODE}/30"));
    let bad_ns = second_server(&mut nl);
    let pg = PgCluster::start().await.unwrap();
    // One PostgREST-compatible server per namespace link, over the same database.
    let rest = FakeRest::start_on(&pg, HOST.parse().unwrap())
        .await
        .unwrap();
    let rest2 = FakeRest::start_on(&pg, HOST2.parse().unwrap())
        .await
        .unwrap();
    let db = pg.connect().await.unwrap();
    let url = rest.url();
    let url2 = rest2.url();

    let d = nl.daemon(&[
        ("SERVER_ID", "lab-fleet-1"),
        ("SUPABASE_URL", &url),
        ("WAYLUME_SUPABASE_INSECURE_HTTP", "true"),
        ("SUPABASE_KEY", SERVICE_KEY),
        ("WAYLUME_API_BIND", "0.0.0.0"),
        ("WAYLUME_ENDPOINT", &format!("{NODE}:51820")),
        ("SERVER_COUNTRY", "DE"),
        ("SERVER_CITY", "Frankfurt"),
        ("MAX_CAPACITY", "5"),
        ("WAYLUME_HEARTBEAT_INTERVAL_SECS", "1"),
        ("WAYLUME_USAGE_INTERVAL_SECS", "1"),
    ]);
    let bad_state = nl.lab.dir.path().join("state-bad").display().to_string();
    // wireguard-go's control socket is global: its own interface name.
    let bad_wg = nl.lab.ifname("b");
    let mut bad = nl.daemon(&[
        ("SERVER_ID", "lab-fleet-bad"),
        ("SUPABASE_URL", &url2),
        ("WAYLUME_SUPABASE_INSECURE_HTTP", "true"),
        ("SUPABASE_KEY", SERVICE_KEY),
        (
            "WAYLUME_API_SECRET",
            "0d1ffe4e47d1ffe4e47d1ffe4e47d1ffe4e47d1ffe4e47d1ffe4e47d1ffe4e47",
        ),
        ("WAYLUME_API_BIND", "0.0.0.0"),
        ("WAYLUME_ENDPOINT", &format!("{BAD}:51820")),
        ("WAYLUME_STATE_DIR", &bad_state),
        ("WAYLUME_INTERFACE", &bad_wg),
        ("SERVER_COUNTRY", "DE"),
        // So much room that the weighted pick tries it first nearly every time.
        ("MAX_CAPACITY", "30000"),
        ("WAYLUME_HEARTBEAT_INTERVAL_SECS", "1"),
    ]);
    bad.ns = bad_ns;
    let (pid, notify) = d.start(&mut nl.lab, "daemon");
    let (bad_pid, bad_notify) = bad.start(&mut nl.lab, "bad");
    let server_sql = "SELECT to_jsonb(s)::text FROM waylume_servers s WHERE id = 'lab-fleet-1'";
    let server = wait_row(&db, "registration", server_sql, |v| v["status"] == "online").await;
    assert_eq!(server["country"], "DE");
    assert_eq!(server["api_port"], 3000);
    assert_eq!(server["endpoint"], format!("{NODE}:51820"));
    let both = "SELECT to_jsonb(array_agg(id ORDER BY id))::text FROM waylume_available_servers";
    wait_row(&db, "both nodes available", both, |v| {
        *v == json!(["lab-fleet-1", "lab-fleet-bad"])
    })
    .await;

    // The function picks from the view and signs its requests; the misconfigured node refuses
    // them and the function moves on to the other, within the same request.
    let mut function = common::control::edge::start(&url, SECRET).await.unwrap();
    let mut outs = Vec::new();
    for _ in 0..3 {
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
        assert!(!out.to_string().contains(BAD), "{out}");
        outs.push(out);
    }
    let log = std::fs::read_to_string(&function.log).unwrap();
    assert!(
        log.contains("node lab-fleet-bad failed (401)"),
        "the misconfigured node was never tried: {log}"
    );
    let out = &outs[0];
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
    let session_sql = format!(
        "SELECT to_jsonb(v)::text FROM vpn_sessions v WHERE server_id = 'lab-fleet-1' AND session_id = '{}'",
        out["session_id"].as_str().unwrap()
    );
    wait_row(&db, "usage", &session_sql, |v| {
        v["rx_bytes"].as_i64() > Some(0)
    })
    .await;

    // SIGTERM with a request still arriving: the API drains (up to 10 s) while the row already
    // says offline.
    let mut slow = tokio::net::TcpStream::connect((NODE, 3000)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /health HTTP/1.1\r\nHost: n\r\n")
        .await
        .unwrap();
    let offline_db = pg.connect().await.unwrap();
    // Read the daemon's notifications meanwhile: an unread socket would block its sender.
    let stopping = drain(notify);
    let t0 = std::time::Instant::now();
    sh(&["kill", "-TERM", &pid.to_string()]);
    let watcher = tokio::spawn(async move {
        loop {
            if let Some(v) = row(&offline_db, server_sql).await
                && v["status"] == "offline"
            {
                return t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let code = tokio::task::block_in_place(|| nl.lab.wait_exit(pid, Duration::from_secs(30)));
    let exited = t0.elapsed();
    assert_eq!(code, Some(0));
    let offline = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the row never said offline")
        .unwrap();
    println!(
        "SIGTERM -> offline row {:.0} ms; SIGTERM -> exit {:.0} ms (one request still arriving)",
        offline.as_secs_f64() * 1000.0,
        exited.as_secs_f64() * 1000.0
    );
    assert!(offline < exited, "offline {offline:?}, exit {exited:?}");
    drop(slow);
    function.child.kill().await.unwrap();
    assert!(stopping.join().unwrap(), "no STOPPING=1");
    let bad_stopping = drain(bad_notify);
    let t1 = std::time::Instant::now();
    sh(&["kill", "-TERM", &bad_pid.to_string()]);
    let bad_log = nl.lab.dir.path().join("bad.log");
    let bad_sql = "SELECT to_jsonb(s)::text FROM waylume_servers s WHERE id = 'lab-fleet-bad'";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut status = Value::Null;
    while std::time::Instant::now() < deadline {
        status = row(&db, bad_sql).await.unwrap()["status"].clone();
        if status == "offline" {
            println!(
                "idle node: SIGTERM -> offline row {:.0} ms",
                t1.elapsed().as_secs_f64() * 1000.0
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stack = sh(&["cat", &format!("/proc/{bad_pid}/stack")]);
    let threads = sh(&["ls", &format!("/proc/{bad_pid}/task")]);
    assert_eq!(
        status,
        "offline",
        "{}\n{stack}\n{threads}",
        std::fs::read_to_string(&bad_log).unwrap_or_default()
    );
    let code = tokio::task::block_in_place(|| nl.lab.wait_exit(bad_pid, Duration::from_secs(30)));
    println!(
        "idle node: SIGTERM -> exit {:.0} ms",
        t1.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(code, Some(0));
    assert!(bad_stopping.join().unwrap(), "no STOPPING=1");
}

/// Reads a daemon's notifications on a thread until it says STOPPING=1.
fn drain(mut n: Notify) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || n.wait("STOPPING=1", Duration::from_secs(30)))
}
