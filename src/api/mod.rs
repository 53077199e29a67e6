//! The REST API: one warp filter that reads the whole request, checks its signature and routes it.
//! Changes go to the node's thread through its handle; reads (`GET /api/peers`, `/health`,
//! `/metrics`) come from the view it publishes and never wait for a change. Every error leaves
//! through `ApiError`.
//!
//! Why not one warp filter per route: the signature covers the method, the path with its query
//! and the raw body, so the whole request is read and verified before anything is routed or
//! parsed. Composed filters would each take the body apart on their own, and a rejection from
//! one would say which routes exist to a caller that has not signed. `Route::parse` is the one
//! route table.
mod answer;
mod dto;
mod error;
mod guard;
pub mod listen;
pub mod metrics;
pub mod replay;
mod route;
mod status;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::json;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode, header};
use warp::hyper::body::Bytes;
use warp::reply::Response;

pub use dto::{MAX_CAP_BYTES, PeerView};
pub use error::ApiError;
pub use guard::STUCK_AFTER;
pub use route::Route;

use crate::control::HealthHandle;
use crate::core::auth::{self, Headers, Request, Verifier};
use crate::core::registry::Fresh;
use crate::node::{NodeError, NodeHandle, PeerStatus, Removal};
use crate::sys::inspection::Inspection;
use metrics::Metrics;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

pub struct Api {
    pub node: NodeHandle,
    pub metrics: Arc<Metrics>,
    pub max_capacity: u16,
    verifier: Option<Mutex<Verifier>>,
    signer: Option<answer::Signer>,
    floor: Option<Arc<replay::ReplayFloor>>,
    commands: Option<(Arc<crate::sys::runner::InFlight>, std::time::Duration)>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    /// `None`: standalone, no control plane.
    control: Option<HealthHandle>,
    inspection: Option<Arc<Inspection>>,
}

impl Api {
    /// `secret`: `None` accepts unsigned requests (the API then listens on loopback only).
    pub fn new(
        node: NodeHandle,
        metrics: Arc<Metrics>,
        max_capacity: u16,
        secret: Option<(&[u8], &str)>,
        clock: impl Fn() -> u64 + Send + Sync + 'static,
        control: Option<HealthHandle>,
    ) -> Api {
        Api {
            node,
            metrics,
            max_capacity,
            verifier: secret.map(|(s, id)| Mutex::new(Verifier::new(s, id))),
            signer: secret.map(|(s, id)| answer::Signer::new(s, id, true)),
            floor: None,
            commands: None,
            clock: Box::new(clock),
            control,
            inspection: None,
        }
    }

    /// Adds each peer's per-protocol breakdown to the peers the API shows.
    pub fn with_inspection(mut self, inspection: Arc<Inspection>) -> Api {
        self.inspection = Some(inspection);
        self
    }

    fn view(&self, s: &PeerStatus, secrets: bool) -> PeerView {
        let protocols = match &self.inspection {
            Some(i) => crate::sys::inspection::protocols_json(&i.traffic(&s.peer.id)),
            None => serde_json::Map::new(),
        };
        PeerView::new(&self.node, s, secrets, protocols)
    }
}

pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(bytes.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Every request, whatever its path, goes through `handle`.
pub fn routes(
    api: Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  body| {
                let api = api.clone();
                async move {
                    let started = Instant::now();
                    let body = read_body(&headers, body).await;
                    let nonce = headers
                        .get(auth::HEADER_NONCE)
                        .and_then(|v| v.to_str().ok())
                        .filter(|n| auth::valid_nonce(n))
                        .map(str::to_string);
                    let (route, result) = api
                        .handle(
                            &method,
                            path.as_str(),
                            &query,
                            &headers,
                            body,
                            nonce.as_deref(),
                        )
                        .await;
                    let mut response = result.unwrap_or_else(ApiError::into_response);
                    if let (true, Some(signer), Some(nonce)) =
                        (path.as_str().starts_with("/api/"), &api.signer, &nonce)
                    {
                        response = signer.sign(response, nonce).await;
                    }
                    api.metrics.observe_request(
                        route,
                        response.status().as_u16(),
                        started.elapsed().as_secs_f64(),
                    );
                    response
                }
            },
        )
}

async fn read_body<S, B>(headers: &HeaderMap, body: S) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    let mut out = Vec::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::Malformed(format!("reading body: {e}")))?;
        if out.len() + chunk.remaining() > MAX_BODY {
            return Err(ApiError::TooLarge(MAX_BODY));
        }
        let bytes: Bytes = chunk.copy_to_bytes(chunk.remaining());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

type Routed = (&'static str, Result<Response, ApiError>);

impl Api {
    async fn handle(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Result<Vec<u8>, ApiError>,
        nonce: Option<&str>,
    ) -> Routed {
        let route = Route::parse(method, path);
        match &route {
            Ok(Route::Health) => return ("health", Ok(self.health())),
            Ok(Route::Metrics) => return ("metrics", Ok(self.metrics_text())),
            // Outside /api/ nothing is signed, so nothing is revealed by a 404.
            Err(_) if !path.starts_with("/api/") => return ("unknown", Err(ApiError::NotFound)),
            _ => {}
        }
        let body = match body {
            Ok(b) => b,
            Err(e) => return ("unknown", Err(e)),
        };
        let path_and_query = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        if let Err(e) = self.authenticate(method, &path_and_query, headers, &body) {
            log::debug!("rejected {method} {path}: {e}");
            return ("unauthorized", Err(e.into()));
        }
        let route = match route {
            Ok(r) => r,
            Err(e) => return ("unknown", Err(e)),
        };
        let name = route.name();
        if let Err(e) = self.record_floor(headers).await {
            return (name, Err(e));
        }
        if route.has_body() {
            let json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
                });
            if !json {
                return (name, Err(ApiError::UnsupportedMediaType));
            }
        }
        if route.has_body()
            && let Err(e) = self.not_stuck()
        {
            return (name, Err(e));
        }
        (name, self.dispatch(route, query, body, nonce).await)
    }

    fn authenticate(
        &self,
        method: &Method,
        pq: &str,
        h: &HeaderMap,
        body: &[u8],
    ) -> Result<(), auth::AuthError> {
        let Some(v) = &self.verifier else {
            return Ok(());
        };
        let get = |name| h.get(name).and_then(|v| v.to_str().ok());
        let headers = Headers {
            timestamp: get(auth::HEADER_TIMESTAMP),
            nonce: get(auth::HEADER_NONCE),
            signature: get(auth::HEADER_SIGNATURE),
        };
        let req = Request {
            method: method.as_str(),
            path_and_query: pq,
            body,
        };
        let now = (self.clock)();
        v.lock()
            .unwrap_or_else(|e| e.into_inner())
            .verify(&headers, &req, now)
    }

    async fn dispatch(
        self: &Arc<Self>,
        route: Route,
        query: &str,
        body: Vec<u8>,
        nonce: Option<&str>,
    ) -> Result<Response, ApiError> {
        let s = match route {
            Route::CreatePeer => return self.create(body, nonce).await,
            Route::DeletePeer => {
                let sel = parse::<dto::DeleteBody>(&body)?.selector()?;
                self.node.delete(sel, Removal::Deleted).await?
            }
            Route::SpeedLimit => {
                let b: dto::SpeedLimitBody = parse(&body)?;
                let (id, limit) = (
                    dto::peer_id(&b.peer_id)?,
                    dto::limit(b.download_kbps, b.upload_kbps)?,
                );
                self.change(move |n| n.set_limit(&id, limit)).await?
            }
            Route::DataCap => {
                let b: dto::DataCapBody = parse(&body)?;
                let (id, cap) = (dto::peer_id(&b.peer_id)?, dto::cap(b.data_cap_bytes)?);
                self.change(move |n| n.set_cap(&id, cap)).await?
            }
            Route::ListPeers => {
                let view = self.node.view();
                let Some(page) = dto::page(query)? else {
                    let views: Vec<PeerView> = view
                        .list()
                        .into_iter()
                        .map(|s| self.view(s, false))
                        .collect();
                    return Ok(json_response(StatusCode::OK, &json!({ "peers": views })));
                };
                let peers = view.page(page.after.as_ref(), page.limit);
                // A full page may have a next one; the caller asks with `after` = `next`.
                let next = (peers.len() == page.limit)
                    .then(|| peers.last().map(|s| s.peer.id.to_string()))
                    .flatten();
                let views: Vec<PeerView> = peers.into_iter().map(|s| self.view(s, false)).collect();
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({ "peers": views, "next": next }),
                ));
            }
            Route::GetPeer(id) => {
                let view = self.node.view();
                let s = id.and_then(|id| view.get(&id)).ok_or(ApiError::NotFound)?;
                return Ok(self.peer_response(StatusCode::OK, s, false));
            }
            Route::Health | Route::Metrics => return Err(ApiError::NotFound),
        };
        Ok(self.peer_response(StatusCode::OK, &s, false))
    }

    async fn create(
        self: &Arc<Self>,
        body: Vec<u8>,
        nonce: Option<&str>,
    ) -> Result<Response, ApiError> {
        let req = parse::<dto::CreateBody>(&body)?.validate(&self.node.server().public_key)?;
        let now = (self.clock)();
        let fresh = Fresh {
            id: rand::random(),
            private_key: wireguard_control::Key::generate_private(),
            preshared_key: wireguard_control::Key::generate_preshared(),
        };
        let (s, created) = self.change(move |n| n.create(&req, fresh, now)).await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        // A PeerView is plain data; encoding it cannot fail.
        let view = serde_json::to_value(self.view(&s, true))
            .map_err(|e| ApiError::Unavailable(format!("cannot encode the answer: {e}")))?;
        let view = match (&self.signer, nonce) {
            (Some(signer), Some(nonce)) => signer.seal_answer(view, nonce),
            _ => view,
        };
        Ok(json_response(status, &view))
    }

    fn peer_response(&self, status: StatusCode, s: &PeerStatus, secrets: bool) -> Response {
        json_response(status, &self.view(s, secrets))
    }

    /// A change, run on the node's thread.
    async fn change<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::node::Node) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, ApiError> {
        Ok(self.node.call(f).await??)
    }
}

/// Broken JSON is 400; valid JSON with wrong fields, types or values is 422.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::Malformed(format!("malformed JSON: {e}")))?;
    serde_json::from_value(v).map_err(|e| ApiError::Invalid(e.to_string()))
}
