//! A PostgREST-compatible test server in front of a real PostgreSQL. It speaks the subset the
//! node and the reference Edge Function use (`/rest/v1/<table>` with POST/upsert, PATCH, GET,
//! DELETE and `col=op.value` filters), builds the SQL PostgREST builds, and answers with
//! PostgREST's status codes and error JSON. Auth is the Supabase gateway's: `apikey` must be a
//! known key, and a Bearer token, if any, must equal it.
//!
//! Faults are switched on and off while it runs ([`FakeRest::set_fault`]); `Refuse` closes the
//! listening socket and every open connection, so clients see "connection refused".
// Error answers are built once per request; boxing them buys nothing in a test server.
#![allow(clippy::result_large_err)]

mod reply;
mod sql;

#[allow(unused_imports)]
pub use reply::status_for;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::pg::PgCluster;

pub const SERVICE_KEY: &str = "test-service-role-key";
pub const ANON_KEY: &str = "test-anon-key";
/// A new-format secret key: not a JWT, so the gateway refuses it as a Bearer token.
pub const SB_SECRET_KEY: &str = "sb_secret_test0123456789abcdef";
/// The access token of the one signed-in user `/auth/v1/user` knows.
pub const USER_TOKEN: &str = "test-user-access-token";
pub const USER_ID: &str = "8d0f5a8e-7d0c-4a51-9a55-3b4c1a2f9e10";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 401 from the gateway: `{"message":"Invalid API key", "hint": …}`, no `code`.
    Unauthorized,
    /// 500 with PostgREST error JSON.
    ServerError,
    /// 502 with an HTML page, as a proxy sends it.
    HtmlBadGateway,
    /// 429 with this `Retry-After` value.
    TooMany(String),
    /// 429 with `Retry-After` as an HTTP-date this far after the answer.
    TooManyUntil(std::time::Duration),
    /// 200 with a body that is not what PostgREST sends (an HTML page).
    OddSuccess,
    /// 200 with a JSON body of this many bytes.
    HugeSuccess(usize),
    /// Accept the request and never answer while the fault lasts.
    Stall,
    /// Nothing listens on the port.
    Refuse,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: hyper::HeaderMap,
    pub body: String,
    pub status: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
}

struct Shared {
    db: tokio::sync::Mutex<tokio_postgres::Client>,
    fault: watch::Sender<Fault>,
    seen: Mutex<Vec<Seen>>,
}

pub struct FakeRest {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRest {
    /// Serves `pg` on 127.0.0.1 and a free port.
    pub async fn start(pg: &PgCluster) -> Result<FakeRest> {
        FakeRest::start_on(pg, "127.0.0.1".parse()?).await
    }

    /// Serves `pg` on `ip` and a free port (e.g. the host end of a veth into a lab namespace).
    pub async fn start_on(pg: &PgCluster, ip: std::net::IpAddr) -> Result<FakeRest> {
        let db = pg.connect().await?;
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::None);
        let shared = Arc::new(Shared {
            db: tokio::sync::Mutex::new(db),
            fault,
            seen: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(FakeRest { addr, shared, task })
    }

    /// What to put in `SUPABASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_fault(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    /// Every request so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for FakeRest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts until told to refuse, then closes everything and waits to be allowed back.
async fn serve(first: TcpListener, shared: Arc<Shared>) {
    let addr = match first.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut listener = Some(first);
    let mut faults = shared.fault.subscribe();
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => {
                let _ = faults.wait_for(|f| *f != Fault::Refuse).await;
                match TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(_) => return,
                }
            }
        };
        // Connections end when this sender is dropped.
        let (close, closed) = watch::channel(());
        loop {
            tokio::select! {
                _ = faults.wait_for(|f| *f == Fault::Refuse) => break,
                accepted = l.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let shared = shared.clone();
                    let mut closed = closed.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::select! {
                            _ = conn => {}
                            _ = closed.changed() => {}
                        }
                    });
                }
            }
        }
        drop(l);
        drop(close);
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .and_then(|q| reqwest::Url::parse(&format!("http://query/?{q}")).ok())
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let mut seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
        at: std::time::Instant::now(),
    };
    let fault = shared.fault.borrow().clone();
    let resp = match fault {
        // Never answered: the client's own timeout ends it, even after the fault is lifted
        // (an answer arriving then would be a different failure than the one under test).
        Fault::Stall => std::future::pending().await,
        Fault::Refuse => {
            let mut faults = shared.fault.subscribe();
            let _ = faults.wait_for(|f| *f != fault).await;
            // The client has long given up; this answer goes nowhere.
            plain(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stalled")
        }
        Fault::Unauthorized => json(
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Invalid API key","hint":"Double check your Supabase `anon` or `service_role` API key."}"#,
        ),
        Fault::ServerError => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"code":"XX000","details":null,"hint":null,"message":"injected internal error"}"#,
        ),
        Fault::HtmlBadGateway => plain(
            StatusCode::BAD_GATEWAY,
            "text/html",
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
        ),
        Fault::TooManyUntil(d) => {
            let at = httpdate::fmt_http_date(std::time::SystemTime::now() + d);
            too_many(&at)
        }
        Fault::TooMany(after) => too_many(&after),
        Fault::HugeSuccess(n) => json(
            StatusCode::OK,
            &format!("[{{\"id\":\"{}\"}}]", "x".repeat(n)),
        ),
        Fault::OddSuccess => plain(
            StatusCode::OK,
            "text/html",
            "<html><head><title>Captive portal</title></head></html>",
        ),
        Fault::None if parts.uri.path() == "/auth/v1/user" => user(&parts.headers),
        Fault::None => match auth(&parts.headers) {
            Err(r) => r,
            Ok(role) => sql::dispatch(&shared.db, role, &parts, &seen.query, &body).await,
        },
    };
    seen.status = resp.status().as_u16();
    if let Ok(mut s) = shared.seen.lock() {
        s.push(seen);
    }
    Ok(resp)
}

/// The gateway's checks, with its messages (no `code`).
fn auth(headers: &hyper::HeaderMap) -> Result<&'static str, Response<Full<Bytes>>> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let role = match get("apikey") {
        None => {
            return Err(json(
                StatusCode::UNAUTHORIZED,
                r#"{"message":"No API key found in request","hint":"No `apikey` request header or url param was found."}"#,
            ));
        }
        Some(SERVICE_KEY) => "service_role",
        Some(SB_SECRET_KEY) => {
            if headers.contains_key("authorization") {
                return Err(json(
                    StatusCode::UNAUTHORIZED,
                    r#"{"message":"Invalid authorization header: secret keys are not JWTs; send them in apikey only"}"#,
                ));
            }
            "service_role"
        }
        Some(ANON_KEY) => "anon",
        Some(_) => {
            return Err(json(
                StatusCode::UNAUTHORIZED,
                r#"{"message":"Invalid API key","hint":"Double check your Supabase `anon` or `service_role` API key."}"#,
            ));
        }
    };
    // A signed-in user: the anon key with the user's access token.
    if role == "anon" && get("authorization") == Some(&format!("Bearer {USER_TOKEN}")) {
        return Ok("authenticated");
    }
    if let Some(bearer) = get("authorization")
        && Some(bearer.trim_start_matches("Bearer ")) != get("apikey")
    {
        return Err(json(
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Invalid authorization header: the Bearer token does not match the apikey"}"#,
        ));
    }
    Ok(role)
}

/// Supabase Auth's "who is this token": enough for `supabase.auth.getUser(jwt)`.
fn user(headers: &hyper::HeaderMap) -> Response<Full<Bytes>> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if !matches!(get("apikey"), Some(SERVICE_KEY | ANON_KEY)) {
        return json(StatusCode::UNAUTHORIZED, r#"{"message":"Invalid API key"}"#);
    }
    if get("authorization") != Some(&format!("Bearer {USER_TOKEN}")) {
        return json(
            StatusCode::FORBIDDEN,
            r#"{"code":403,"error_code":"bad_jwt","msg":"invalid JWT: unable to parse or verify signature"}"#,
        );
    }
    let body = serde_json::json!({
        "id": USER_ID, "aud": "authenticated", "role": "authenticated",
        "email": "user@example.org", "app_metadata": {}, "user_metadata": {},
        "created_at": "2026-11-01T00:00:00Z"
    });
    json(StatusCode::OK, &body.to_string())
}

fn too_many(retry_after: &str) -> Response<Full<Bytes>> {
    let mut r = json(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"message":"Too many requests"}"#,
    );
    if let Ok(v) = retry_after.parse() {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

pub(crate) fn json(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    plain(status, "application/json; charset=utf-8", body)
}

pub(crate) fn plain(status: StatusCode, ctype: &str, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert("content-type", v);
    }
    r
}
