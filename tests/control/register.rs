//! Registration, heartbeats, re-registration and shutdown against a real PostgreSQL behind the
//! PostgREST-compatible test server.
// Helpers here are test code too: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::control::harness::Harness;
use common::control::logcap;
use common::control::node::key;
use waylume::config::{Config, Sources};
use waylume::control::{ControlPlane, LinkState};

#[tokio::test]
async fn registered_row_carries_every_field() {
    let h = Harness::start("reg-fields").await.unwrap();
    let cp = h.spawn().unwrap();
    let row = h.wait_row("registration", |_| true).await.unwrap();
    assert_eq!(row["id"], "reg-fields");
    assert_eq!(row["endpoint"], "203.0.113.7:51820");
    assert_eq!(row["public_ip"], "203.0.113.7");
    assert_eq!(row["wg_port"], 51820);
    assert_eq!(row["api_port"], 3000);
    assert_eq!(row["wg_public_key"], key(200));
    assert_eq!(row["country"], "DE");
    assert_eq!(row["city"], "Frankfurt am Main");
    assert_eq!(
        (row["lat"].as_f64(), row["lon"].as_f64()),
        (Some(50.11), Some(8.68))
    );
    assert_eq!(row["max_capacity"], 250);
    assert_eq!(
        (row["peer_count"].as_i64(), row["current_load"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(row["status"], "online");
    assert_eq!(row["version"], "0.1.0-test");
    assert!(row["last_heartbeat"].as_str().unwrap().starts_with("20"));

    // The request as Supabase needs it.
    let seen = h.rest.seen();
    let reg = seen
        .iter()
        .find(|r| r.method == "POST" && r.path == "/rest/v1/waylume_servers")
        .unwrap();
    let hdr = |n: &str| {
        reg.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert_eq!(hdr("apikey"), common::control::rest::SERVICE_KEY);
    assert_eq!(
        hdr("authorization"),
        format!("Bearer {}", common::control::rest::SERVICE_KEY)
    );
    assert!(
        hdr("user-agent").starts_with("waylume-server/"),
        "{}",
        hdr("user-agent")
    );
    assert_eq!(hdr("prefer"), "resolution=merge-duplicates,return=minimal");
    assert_eq!(reg.query, [("on_conflict".to_string(), "id".to_string())]);
    assert_eq!(reg.status, 201);
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn heartbeats_advance_last_heartbeat_and_carry_the_load() {
    let h = Harness::start("reg-beat").await.unwrap();
    let cp = h.spawn().unwrap();
    let first = h.wait_row("registration", |_| true).await.unwrap();
    h.node.set_load(7, 5);
    let later = h
        .wait_row("a heartbeat with the new load", |r| r["current_load"] == 5)
        .await
        .unwrap();
    assert_eq!(later["peer_count"], 7);
    let ts = |r: &serde_json::Value| r["last_heartbeat"].as_str().unwrap().to_string();
    // Same format and zone from the database, so text order is time order.
    assert!(ts(&later) > ts(&first), "{} !> {}", ts(&later), ts(&first));

    // Heartbeats are PATCHes that ask for the changed rows; the only POST is the registration.
    let seen = h.rest.seen();
    let patches: Vec<_> = seen.iter().filter(|r| r.method == "PATCH").collect();
    assert!(!patches.is_empty());
    for p in &patches {
        let prefer = p.headers.get("prefer").and_then(|v| v.to_str().ok());
        assert_eq!(prefer, Some("return=representation"));
        assert!(
            p.query.contains(&("id".into(), "eq.reg-beat".into())),
            "{:?}",
            p.query
        );
        assert_eq!(p.status, 200);
        let body: serde_json::Value = serde_json::from_str(&p.body).unwrap();
        assert!(
            body.get("id").is_none() && body.get("endpoint").is_none(),
            "{body}"
        );
    }
    let posts = seen
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("waylume_servers"));
    assert_eq!(posts.count(), 1);
    assert_eq!(cp.health.get().heartbeat, LinkState::Healthy);
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn a_deleted_row_is_registered_again_on_the_next_heartbeat() {
    let h = Harness::start("reg-again").await.unwrap();
    let cp = h.spawn().unwrap();
    h.wait_row("registration", |_| true).await.unwrap();
    let n =
        h.db.execute("DELETE FROM waylume_servers WHERE id = 'reg-again'", &[])
            .await
            .unwrap();
    assert_eq!(n, 1);
    let row = h.wait_row("re-registration", |_| true).await.unwrap();
    assert_eq!(row["wg_public_key"], key(200));
    assert_eq!(row["status"], "online");
    let again = logcap::lines("reg-again has no row");
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(cp.health.get().registered);
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_marks_the_node_offline_within_the_budget() {
    let h = Harness::start("reg-stop").await.unwrap();
    let cp = h.spawn().unwrap();
    h.wait_row("registration", |r| r["status"] == "online")
        .await
        .unwrap();
    let t = Instant::now();
    cp.stop().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let row = h.server_row().await.unwrap().unwrap();
    assert_eq!(row["status"], "offline");
    assert_eq!(logcap::lines("reg-stop marked offline").len(), 1);
}

#[tokio::test]
async fn shutdown_during_an_outage_is_bounded() {
    let h = Harness::start("reg-stall").await.unwrap();
    let cp = h.spawn().unwrap();
    h.wait_row("registration", |_| true).await.unwrap();
    h.rest.set_fault(common::control::rest::Fault::Stall);
    let t = Instant::now();
    cp.stop().await.unwrap();
    let budget = Harness::timing().shutdown_budget;
    assert!(
        t.elapsed() < budget + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    let lines = logcap::lines("reg-stall could not be marked offline");
    assert_eq!(lines.len(), 1, "{lines:?}");
    h.rest.set_fault(common::control::rest::Fault::None);
}

#[test]
fn standalone_mode_builds_no_control_plane() {
    let env = BTreeMap::from([("SERVER_ID".to_string(), "solo".to_string())]);
    let src = Sources {
        file: None,
        env: &env,
        read_secret: &|p| {
            Err(std::io::Error::other(format!(
                "no secret at {}",
                p.display()
            )))
        },
        hostname: "solo",
    };
    let cfg = Config::load(&src).unwrap();
    assert!(cfg.supabase.is_none());
    assert!(ControlPlane::from_config(&cfg).unwrap().is_none());

    let mut with_url = env.clone();
    with_url.insert("SUPABASE_URL".into(), "http://127.0.0.1:9".into());
    with_url.insert("SUPABASE_KEY".into(), "k".into());
    let src = Sources {
        env: &with_url,
        ..src
    };
    let cfg = Config::load(&src).unwrap();
    assert!(ControlPlane::from_config(&cfg).unwrap().is_some());

    // Bad input stops the start with the key named, before anything is sent.
    for (name, value, key) in [
        ("SUPABASE_URL", "not a url", "supabase.url"),
        ("SUPABASE_URL", "ftp://example.org", "supabase.url"),
        ("SUPABASE_KEY", "  ", "supabase.key"),
    ] {
        let mut bad = with_url.clone();
        bad.insert(name.into(), value.into());
        let err = Config::load(&Sources { env: &bad, ..src }).unwrap_err();
        assert!(err.key.contains(key), "{name}={value:?}: {err}");
    }
    let mut sb = cfg.supabase.clone().unwrap();
    sb.url = "mailto:ops@example.org".into();
    let node = waylume::control::NodeInfo::from_config(&cfg);
    let err = ControlPlane::new(&sb, node, Default::default())
        .err()
        .unwrap();
    assert!(err.to_string().starts_with("supabase.url"), "{err}");
}

/// An operator drains the node by editing its row: heartbeats keep coming and keep the drain,
/// the node reports it, and the operator can take it back. A node that is full says so in
/// `accepting`, never in `status`.
#[tokio::test]
async fn an_operators_drain_survives_heartbeats_and_the_nodes_own_state_is_separate() {
    let h = Harness::start("reg-drain").await.unwrap();
    let cp = h.spawn().unwrap();
    let first = h
        .wait_row("registration", |r| r["status"] == "online")
        .await
        .unwrap();
    assert_eq!(first["accepting"], true);
    assert_eq!(first["heartbeat_interval_s"], 1);
    h.db.execute(
        "update waylume_servers set status = 'draining' where id = 'reg-drain'",
        &[],
    )
    .await
    .unwrap();
    let health = cp.health.clone();
    common::control::wait_for(
        "the node to see the drain",
        common::control::harness::PATIENCE,
        || {
            let h = health.get();
            async move { h.operator_draining }
        },
    )
    .await
    .unwrap();
    assert_eq!(cp.health.get().summary(), "healthy (drained by operator)");
    let drained_at = h.server_row().await.unwrap().unwrap()["last_heartbeat"].clone();
    let later = h
        .wait_row("a heartbeat after the drain", |r| {
            r["last_heartbeat"] != drained_at
        })
        .await
        .unwrap();
    assert_eq!(later["status"], "draining", "{later}");

    // The node fills up: it says so in `accepting`; the operator's word stays.
    h.node.snapshot.lock().unwrap().status = waylume::control::NodeStatus::Draining;
    h.wait_row("not accepting", |r| r["accepting"] == false)
        .await
        .unwrap();
    assert_eq!(h.server_row().await.unwrap().unwrap()["status"], "draining");
    h.node.snapshot.lock().unwrap().status = waylume::control::NodeStatus::Online;
    h.db.execute(
        "update waylume_servers set status = 'online' where id = 'reg-drain'",
        &[],
    )
    .await
    .unwrap();
    h.wait_row("undrained and accepting", |r| {
        r["status"] == "online" && r["accepting"] == true
    })
    .await
    .unwrap();
    let health = cp.health.clone();
    common::control::wait_for(
        "the node to see the undrain",
        common::control::harness::PATIENCE,
        || {
            let h = health.get();
            async move { !h.operator_draining }
        },
    )
    .await
    .unwrap();
    cp.stop().await.unwrap();
}

/// A new-format secret key goes in `apikey` only: the gateway refuses it as a Bearer token.
#[tokio::test]
async fn a_new_format_secret_key_is_never_sent_as_a_bearer_token() {
    use common::control::rest::SB_SECRET_KEY;
    let h = Harness::start("reg-sbkey").await.unwrap();
    let mut sb = h.supabase();
    sb.key = waylume::config::Secret::new(SB_SECRET_KEY);
    let cp = ControlPlane::new(&sb, h.node_info().unwrap(), Harness::timing()).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(cp.run(h.node.clone(), rx));
    h.wait_row("registration", |r| r["status"] == "online")
        .await
        .unwrap();
    let seen = h.rest.seen();
    assert!(seen.iter().all(|r| r.status / 100 == 2), "{seen:?}");
    assert!(
        seen.iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
    assert!(seen.iter().all(|r| r.headers["apikey"] == SB_SECRET_KEY));
    stop.send_replace(true);
    task.await.unwrap();
}
