//! The PostgREST-compatible test server answers the way PostgREST does over the real migration,
//! including the traps the node must avoid. If these drift, the control plane tests prove nothing.
// Helpers here are test code too: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use common::control::node::key;
use common::control::pg::PgCluster;
use common::control::rest::{ANON_KEY, FakeRest, SERVICE_KEY, USER_TOKEN, status_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        apikey: Option<&str>,
        prefer: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/rest/v1/{path}", self.base));
        if let Some(k) = apikey {
            req = req.header("apikey", k).bearer_auth(k);
        }
        if !prefer.is_empty() {
            req = req.header("Prefer", prefer);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn service(
        &self,
        method: Method,
        path: &str,
        prefer: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(SERVICE_KEY), prefer, body)
            .await
    }
}

fn server_row(id: &str) -> Value {
    json!({
        "id": id, "endpoint": "203.0.113.7:51820", "public_ip": "203.0.113.7", "wg_port": 51820,
        "api_port": 3000, "wg_public_key": key(1), "country": "DE", "city": "Frankfurt",
        "lat": 50.11, "lon": 8.68, "max_capacity": 250, "current_load": 0, "peer_count": 0,
        "status": "online", "version": "0.1.0", "last_heartbeat": "2026-11-25T19:30:00Z"
    })
}

fn session(server: &str, n: u8) -> Value {
    json!({
        "server_id": server, "peer_public_key": key(n), "peer_id": format!("p{n}"), "session_id": null,
        "user_id": null, "rx_bytes": 10, "tx_bytes": 20, "protocol_bytes": {}, "bittorrent": false,
        "status": "active", "last_handshake": null
    })
}

const UPSERT: &str = "resolution=merge-duplicates,return=minimal";

#[tokio::test]
async fn behaves_like_postgrest_over_the_migration() {
    let pg = PgCluster::start().await.unwrap();
    let rest = FakeRest::start(&pg).await.unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: rest.url(),
    };
    let servers = "waylume_servers?on_conflict=id";

    // Full-row upsert: 201 when it inserts, 200 when it only updates (PostgREST >= 12).
    let (s, _) = c
        .service(Method::POST, servers, UPSERT, Some(server_row("n1")))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = c
        .service(Method::POST, servers, UPSERT, Some(server_row("n1")))
        .await;
    assert_eq!(s, StatusCode::OK);

    // The trap: a partial upsert of an existing row is checked as a whole new row before
    // conflict resolution (NOT NULL and CHECK alike), so it fails although the row exists.
    let partial = json!({"id": "n1", "current_load": 5, "status": "online"});
    let (s, e) = c
        .service(Method::POST, servers, UPSERT, Some(partial))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("23514")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("online_complete"),
        "{e}"
    );

    // PATCH: representation shows the rows changed; none matched is 200 [] and not an error.
    let beat =
        json!({"current_load": 3, "status": "online", "last_heartbeat": "2026-11-25T19:31:00Z"});
    let (s, rows) = c
        .service(
            Method::PATCH,
            "waylume_servers?id=eq.n1&select=id",
            "return=representation",
            Some(beat.clone()),
        )
        .await;
    assert_eq!((s, rows), (StatusCode::OK, json!([{"id": "n1"}])));
    let (s, rows) = c
        .service(
            Method::PATCH,
            "waylume_servers?id=eq.ghost&select=id",
            "return=representation",
            Some(beat.clone()),
        )
        .await;
    assert_eq!((s, rows), (StatusCode::OK, json!([])));
    let (s, _) = c
        .service(
            Method::PATCH,
            "waylume_servers?id=eq.n1",
            "",
            Some(beat.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, e) = c
        .service(Method::PATCH, "waylume_servers", "", Some(beat))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("21000"))
    );

    // Constraints from the migration, with PostgREST's status mapping.
    let mut big = server_row("n2");
    big["max_capacity"] = json!(40000);
    let (s, e) = c.service(Method::POST, servers, UPSERT, Some(big)).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("22003"))
    );
    let mut bad = server_row("n2");
    bad["status"] = json!("maybe");
    let (s, e) = c.service(Method::POST, servers, UPSERT, Some(bad)).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("23514"))
    );
    let (s, e) = c
        .service(Method::POST, "waylume_servers", "", Some(server_row("n1")))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("23505"))
    );
    let mut unknown = server_row("n2");
    unknown["colour"] = json!("red");
    let (s, e) = c
        .service(Method::POST, servers, UPSERT, Some(unknown))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PGRST204"))
    );

    // Bulk usage: uniform keys required; the foreign key needs a registered server.
    let sessions = "vpn_sessions?on_conflict=server_id,peer_id";
    let (s, _) = c
        .service(
            Method::POST,
            sessions,
            UPSERT,
            Some(json!([session("n1", 1), session("n1", 2)])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut ragged = session("n1", 3);
    ragged.as_object_mut().unwrap().remove("user_id");
    let (s, e) = c
        .service(
            Method::POST,
            sessions,
            UPSERT,
            Some(json!([session("n1", 4), ragged])),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PGRST102"))
    );
    let (s, e) = c
        .service(
            Method::POST,
            sessions,
            UPSERT,
            Some(json!([session("ghost", 1)])),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("23503"))
    );

    // Reads with filters, as supabase-js sends them.
    let (s, rows) = c
        .service(
            Method::GET,
            "waylume_servers?select=id,current_load&status=eq.online",
            "",
            None,
        )
        .await;
    assert_eq!(
        (s, rows),
        (StatusCode::OK, json!([{"id": "n1", "current_load": 3}]))
    );
    let (s, e) = c
        .service(
            Method::GET,
            "waylume_servers?status=approx.online",
            "",
            None,
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PGRST100"))
    );
    let (s, e) = c.service(Method::GET, "no_such_table", "", None).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("PGRST205"))
    );

    // Gateway auth: no key, a wrong key, a Bearer that differs, and RLS/grants for anon.
    let (s, e) = c.call(Method::GET, "waylume_servers", None, "", None).await;
    assert_eq!((s, e.get("code")), (StatusCode::UNAUTHORIZED, None));
    let (s, e) = c
        .call(Method::GET, "waylume_servers", Some("nope"), "", None)
        .await;
    assert_eq!(
        (s, e["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Invalid API key"))
    );
    let mixed = c
        .http
        .get(format!("{}/rest/v1/waylume_servers", c.base))
        .header("apikey", SERVICE_KEY)
        .bearer_auth(ANON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(mixed.status(), StatusCode::UNAUTHORIZED);
    let (s, e) = c
        .call(Method::GET, "waylume_servers", Some(ANON_KEY), "", None)
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("42501"))
    );

    // Deleting the server removes its sessions (ON DELETE CASCADE).
    let (s, _) = c
        .service(Method::DELETE, "waylume_servers?id=eq.n1", "", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, rows) = c
        .service(Method::GET, "vpn_sessions?server_id=eq.n1", "", None)
        .await;
    assert_eq!((s, rows), (StatusCode::OK, json!([])));
}

/// PostgREST's SQLSTATE → HTTP table, each row raised by a real PostgreSQL function and
/// answered by the test server.
#[tokio::test]
async fn maps_every_sqlstate_like_postgrest() {
    let pg = PgCluster::start().await.unwrap();
    let db = pg.connect().await.unwrap();
    db.batch_execute(
        "create function public.raise_sqlstate(code text, msg text) returns void
         language plpgsql as $$ begin raise exception using errcode = code, message = msg; end $$;
         grant execute on function public.raise_sqlstate(text, text) to service_role, anon, authenticated;",
    )
    .await
    .unwrap();
    let rest = FakeRest::start(&pg).await.unwrap();
    let http = reqwest::Client::new();
    let raise = |code: &'static str, msg: &'static str, key: &'static str, bearer: &'static str| {
        let req = http
            .post(format!("{}/rest/v1/rpc/raise_sqlstate", rest.url()))
            .header("apikey", key)
            .bearer_auth(bearer)
            .json(&json!({"code": code, "msg": msg}));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], code, "{body}");
            status
        }
    };
    let table: &[(&str, &str, u16)] = &[
        ("08006", "connection failure", 503),
        ("09000", "triggered action", 500),
        ("0L000", "invalid grantor", 403),
        ("0P000", "invalid role specification", 403),
        ("23503", "fk", 409),
        ("23505", "unique", 409),
        ("25006", "read only", 405),
        (
            "21000",
            "ON CONFLICT DO UPDATE command cannot affect row a second time",
            500,
        ),
        ("21000", "UPDATE requires a WHERE clause", 400),
        ("22023", "role \"x\" does not exist", 401),
        ("22023", "invalid parameter", 400),
        ("25001", "active transaction", 500),
        ("28000", "invalid authorization", 403),
        ("2D000", "invalid termination", 500),
        ("38000", "external routine", 500),
        ("39000", "external routine invocation", 500),
        ("3B000", "savepoint", 500),
        ("40001", "serialization", 500),
        ("53400", "configuration limit", 500),
        ("53100", "disk full", 503),
        ("54000", "too complex", 500),
        ("55000", "prerequisite state", 500),
        (
            "57P01",
            "terminating connection due to administrator command",
            503,
        ),
        ("57014", "canceling statement due to statement timeout", 500),
        ("58000", "system error", 500),
        ("F0000", "config file", 500),
        ("HV000", "fdw", 500),
        ("P0001", "raised", 400),
        ("P0002", "no data found", 500),
        ("XX000", "internal", 500),
        ("42883", "function nope() does not exist", 404),
        ("42P01", "relation does not exist", 404),
        ("42P17", "infinite recursion", 500),
        ("PT418", "teapot", 418),
        ("23514", "check", 400),
        ("22003", "out of range", 400),
    ];
    for (code, msg, want) in table {
        assert_eq!(
            raise(code, msg, SERVICE_KEY, SERVICE_KEY).await,
            *want,
            "{code} {msg}"
        );
        assert_eq!(status_for(code, msg, false), *want, "{code} {msg}");
    }
    // 42501: 401 for anon, 403 for a signed-in user.
    assert_eq!(
        raise("42501", "permission denied", ANON_KEY, ANON_KEY).await,
        401
    );
    assert_eq!(
        raise("42501", "permission denied", ANON_KEY, USER_TOKEN).await,
        403
    );
    assert_eq!(status_for("xmlagg", "", false), 400);
    assert_eq!(
        status_for("42883", "function xmlagg(text) does not exist", false),
        406
    );
}

/// An empty bulk body is fine; the same key in two sessions makes two rows; the same session
/// twice in one upsert is PostgreSQL's 21000, which PostgREST answers with 500.
#[tokio::test]
async fn sessions_are_rows_per_peer_id() {
    let pg = PgCluster::start().await.unwrap();
    let rest = FakeRest::start(&pg).await.unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: rest.url(),
    };
    let (s, _) = c
        .service(
            Method::POST,
            "waylume_servers?on_conflict=id",
            UPSERT,
            Some(server_row("n1")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let sessions = "vpn_sessions?on_conflict=server_id,peer_id";
    for prefer in [UPSERT, "return=minimal"] {
        let (s, _) = c
            .service(Method::POST, sessions, prefer, Some(json!([])))
            .await;
        assert!(s.is_success(), "{prefer}: {s}");
    }
    let (s, rows) = c
        .service(
            Method::POST,
            sessions,
            "return=representation",
            Some(json!([])),
        )
        .await;
    assert_eq!((s, rows), (StatusCode::CREATED, json!([])));
    let mut old = session("n1", 1);
    old["peer_id"] = json!("old");
    old["rx_bytes"] = json!(12_000_000);
    let mut new = session("n1", 1);
    new["peer_id"] = json!("new");
    let (s, _) = c
        .service(
            Method::POST,
            sessions,
            UPSERT,
            Some(json!([old, new.clone()])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, rows) = c
        .service(
            Method::GET,
            "vpn_sessions?select=peer_id,rx_bytes&server_id=eq.n1",
            "",
            None,
        )
        .await;
    let mut rows = rows.as_array().unwrap().clone();
    rows.sort_by_key(|r| r["peer_id"].as_str().unwrap().to_string());
    assert_eq!(
        rows,
        [
            json!({"peer_id": "new", "rx_bytes": 10}),
            json!({"peer_id": "old", "rx_bytes": 12_000_000})
        ]
    );
    let (s, e) = c
        .service(
            Method::POST,
            sessions,
            UPSERT,
            Some(json!([new.clone(), new])),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("21000")),
        "{e}"
    );
}
