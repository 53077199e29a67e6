//! The Supabase migration on a real PostgreSQL: idempotent, safe on a project that already has
//! the earlier server's tables or this project's previous release, and the database-side
//! liveness rules (the database's clock, an operator's `draining`, the available-servers view).
// Helpers here are test code too: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use common::control::node::key;
use common::control::pg::PgCluster;
use serde_json::Value;

const ORIGINAL: &str = include_str!("../fixtures/supabase/original_server.sql");
const PREVIOUS: &str = include_str!("../fixtures/supabase/previous_release.sql");

async fn json_rows(db: &tokio_postgres::Client, sql: &str) -> Vec<Value> {
    db.query(&format!("select to_jsonb(t)::text from ({sql}) t"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get(0)).unwrap())
        .collect()
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// Registers a node row as the node does (a full-row upsert), as service_role.
async fn register(db: &tokio_postgres::Client, id: &str, status: &str, peers: i32) {
    db.batch_execute(&format!(
        "set role service_role;
         insert into waylume_servers (id, endpoint, public_ip, wg_port, api_port, wg_public_key,
             country, city, max_capacity, current_load, peer_count, status, accepting, version,
             heartbeat_interval_s, last_heartbeat)
         values ('{id}', 'vpn.example.org:51820', null, 51820, 3000, '{key}', 'DE', 'Berlin', 10,
             0, {peers}, '{status}', true, '1.0', 30, '2001-01-01T00:00:00Z')
         on conflict (id) do update set endpoint = excluded.endpoint, public_ip = excluded.public_ip,
             wg_port = excluded.wg_port, api_port = excluded.api_port,
             wg_public_key = excluded.wg_public_key, country = excluded.country,
             city = excluded.city, max_capacity = excluded.max_capacity,
             current_load = excluded.current_load, peer_count = excluded.peer_count,
             status = excluded.status, accepting = excluded.accepting, version = excluded.version,
             heartbeat_interval_s = excluded.heartbeat_interval_s,
             last_heartbeat = excluded.last_heartbeat;
         reset role;",
        key = key(9)
    ))
    .await
    .unwrap();
}

async fn available(db: &tokio_postgres::Client) -> Vec<String> {
    db.query("select id from waylume_available_servers order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn applies_twice_on_an_empty_project() {
    let pg = PgCluster::start().await.unwrap();
    pg.migrate().await.unwrap();
    pg.migrate().await.unwrap();
    let db = pg.connect().await.unwrap();
    let unique = count(
        &db,
        "select count(*) from pg_constraint where conrelid = 'vpn_sessions'::regclass and contype = 'u'",
    )
    .await;
    assert_eq!(unique, 1, "exactly one unique key: (server_id, peer_id)");
    let triggers = count(
        &db,
        "select count(*) from pg_trigger where tgrelid = 'waylume_servers'::regclass and not tgisinternal",
    )
    .await;
    assert_eq!(triggers, 1);
}

#[tokio::test]
async fn keeps_the_earlier_servers_tables_and_rows() {
    let pg = PgCluster::start_after(ORIGINAL).await.unwrap();
    pg.migrate().await.unwrap();
    let db = pg.connect().await.unwrap();
    let old = json_rows(
        &db,
        "select id, geo, max_capacity, status, heartbeat from waylume_servers order by id",
    )
    .await;
    assert_eq!(
        old,
        vec![
            serde_json::json!({"id": "de-fra-1", "geo": "Frankfurt, Germany", "max_capacity": 32767,
                "status": "offline", "heartbeat": "2025-08-28T09:30:00+00:00"}),
            serde_json::json!({"id": "uk-lon-1", "geo": "London, United Kingdom", "max_capacity": 500,
                "status": "online", "heartbeat": "2025-08-29T15:00:00+00:00"}),
        ]
    );
    let sessions = json_rows(
        &db,
        "select id, user_id, server_id from vpn_sessions order by user_id",
    )
    .await;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["user_id"], "user-a");
    // The earlier server's rows lack an endpoint: not offered to new sessions until their node
    // registers with this server.
    assert!(available(&db).await.is_empty());
    // A node takes over its old row, and reports usage into the old table.
    register(&db, "uk-lon-1", "online", 1).await;
    assert_eq!(available(&db).await, ["uk-lon-1"]);
    let geo: String = db
        .query_one("select geo from waylume_servers where id = 'uk-lon-1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(geo, "London, United Kingdom");
    db.batch_execute(&format!(
        "set role service_role;
         insert into vpn_sessions (server_id, peer_public_key, peer_id, status, rx_bytes)
         values ('uk-lon-1', '{k}', 'p1', 'active', 10), ('uk-lon-1', '{k}', 'p2', 'active', 20);
         reset role;",
        k = key(1)
    ))
    .await
    .unwrap();
    assert_eq!(count(&db, "select count(*) from vpn_sessions").await, 4);
}

#[tokio::test]
async fn upgrades_the_previous_release_and_lets_a_key_come_back() {
    let seed = format!(
        "{PREVIOUS}
         insert into waylume_servers (id, endpoint, wg_port, api_port, wg_public_key, max_capacity,
             status, version, last_heartbeat)
         values ('n1', '203.0.113.7:51820', 51820, 3000, '{k}', 5, 'online', '0.1', now());
         insert into vpn_sessions (server_id, peer_public_key, peer_id, rx_bytes, tx_bytes, status)
         values ('n1', '{k}', 'old-peer', 12000000, 3, 'deleted');",
        k = key(1)
    );
    let pg = PgCluster::start_after(&seed).await.unwrap();
    pg.migrate().await.unwrap();
    let db = pg.connect().await.unwrap();
    assert_eq!(
        count(
            &db,
            "select rx_bytes from vpn_sessions where peer_id = 'old-peer'"
        )
        .await,
        12_000_000
    );
    // The same key in a new session is a second row; the old totals stay.
    db.batch_execute(&format!(
        "insert into vpn_sessions (server_id, peer_public_key, peer_id, rx_bytes, status)
         values ('n1', '{k}', 'new-peer', 10, 'active')",
        k = key(1)
    ))
    .await
    .unwrap();
    let rows = json_rows(
        &db,
        "select peer_id, rx_bytes from vpn_sessions order by peer_id",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"peer_id": "new-peer", "rx_bytes": 10}),
            serde_json::json!({"peer_id": "old-peer", "rx_bytes": 12_000_000}),
        ]
    );
}

#[tokio::test]
async fn the_database_keeps_time_and_the_operators_drain() {
    let pg = PgCluster::start().await.unwrap();
    let db = pg.connect().await.unwrap();
    register(&db, "a", "online", 0).await;
    // The node claimed 2001; the row says now.
    let fresh = count(
        &db,
        "select count(*) from waylume_servers where last_heartbeat > now() - interval '1 minute'",
    )
    .await;
    assert_eq!(fresh, 1);
    assert_eq!(available(&db).await, ["a"]);

    // An operator drains the node; the node's next writes do not undo it.
    db.batch_execute("update waylume_servers set status = 'draining' where id = 'a'")
        .await
        .unwrap();
    register(&db, "a", "online", 0).await;
    db.batch_execute(
        "set role service_role;
         update waylume_servers set status = 'offline', last_heartbeat = '2001-01-01Z' where id = 'a';
         reset role;",
    )
    .await
    .unwrap();
    let status: String = db
        .query_one("select status from waylume_servers where id = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "draining");
    assert!(available(&db).await.is_empty());
    // The operator takes the drain back.
    db.batch_execute("update waylume_servers set status = 'online' where id = 'a'")
        .await
        .unwrap();
    assert_eq!(available(&db).await, ["a"]);

    // Full, not accepting, or silent for three heartbeat intervals: not offered.
    register(&db, "full", "online", 10).await;
    register(&db, "busy", "online", 0).await;
    db.batch_execute("update waylume_servers set accepting = false where id = 'busy'")
        .await
        .unwrap();
    register(&db, "dead", "online", 0).await;
    db.batch_execute(
        "alter table waylume_servers disable trigger waylume_servers_guard;
         update waylume_servers set last_heartbeat = now() - interval '91 seconds' where id = 'dead';
         alter table waylume_servers enable trigger waylume_servers_guard;",
    )
    .await
    .unwrap();
    assert_eq!(available(&db).await, ["a"]);
    let marked: i32 = db
        .query_one("select waylume_mark_stale_offline()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(marked, 1);
    let statuses = json_rows(&db, "select id, status from waylume_servers order by id").await;
    assert_eq!(
        statuses[2],
        serde_json::json!({"id": "dead", "status": "offline"})
    );
    // Readers without the service role see nothing.
    db.batch_execute("set role anon").await.unwrap();
    assert!(
        db.query("select * from waylume_available_servers", &[])
            .await
            .is_err()
    );
}
