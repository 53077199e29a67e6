//! The PostgREST-compatible test server answers the way PostgREST does over the real migration,
//! including the traps the node must avoid. If these drift, the control plane tests prove nothing.
// Helpers here are test code too: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use common::control::node::key;
use common::control::pg::PgCluster;
use common::control::rest::{ANON_KEY, FakeRest, SERVICE_KEY};
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

    // The trap: a partial upsert of an existing row fails on NOT NULL before conflict resolution.
    let partial = json!({"id": "n1", "current_load": 5});
    let (s, e) = c
        .service(Method::POST, servers, UPSERT, Some(partial))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("23502")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("not-null"), "{e}");

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
    let sessions = "vpn_sessions?on_conflict=server_id,peer_public_key";
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
