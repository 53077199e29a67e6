//! The routes, parsed once from the method and path. Each names its metrics label; a peers
//! path with another method is 405, anything else 404.
use warp::http::Method;

use super::ApiError;
use crate::core::peer::PeerId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    CreatePeer,
    DeletePeer,
    SpeedLimit,
    DataCap,
    ListPeers,
    /// A path segment that is not a peer id finds no peer: 404.
    GetPeer(Option<PeerId>),
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Result<Route, ApiError> {
        let (get, post) = (*method == Method::GET, *method == Method::POST);
        match path {
            "/health" if get => return Ok(Route::Health),
            "/metrics" if get => return Ok(Route::Metrics),
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/api/") else {
            return Err(ApiError::NotFound);
        };
        let segments: Vec<&str> = rest.split('/').collect();
        match (segments.as_slice(), get, post) {
            (["peers"], _, true) => Ok(Route::CreatePeer),
            (["peers"], true, _) => Ok(Route::ListPeers),
            (["peers", "delete"], _, true) => Ok(Route::DeletePeer),
            (["peers", "speed-limit"], _, true) => Ok(Route::SpeedLimit),
            (["peers", "data-cap"], _, true) => Ok(Route::DataCap),
            (["peers", id], true, _) => Ok(Route::GetPeer(PeerId::parse(id))),
            (["peers"] | ["peers", _], _, _) => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NotFound),
        }
    }

    /// The `route` label in `/metrics`.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::CreatePeer => "create_peer",
            Route::DeletePeer => "delete_peer",
            Route::SpeedLimit => "speed_limit",
            Route::DataCap => "data_cap",
            Route::ListPeers => "list_peers",
            Route::GetPeer(_) => "get_peer",
        }
    }

    /// Everything under `/api/` needs a signature; `/health` and `/metrics` do not.
    pub fn signed(&self) -> bool {
        !matches!(self, Route::Health | Route::Metrics)
    }

    /// Requests that carry a JSON body.
    pub fn has_body(&self) -> bool {
        matches!(
            self,
            Route::CreatePeer | Route::DeletePeer | Route::SpeedLimit | Route::DataCap
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_refusals() {
        let id = "0123456789abcdef0123456789abcdef";
        let get = |p: &str| Route::parse(&Method::GET, p).map(|r| r.name());
        let post = |p: &str| Route::parse(&Method::POST, p).map(|r| r.name());
        assert_eq!(get("/health").unwrap(), "health");
        assert_eq!(get("/api/peers").unwrap(), "list_peers");
        assert_eq!(post("/api/peers").unwrap(), "create_peer");
        assert_eq!(post("/api/peers/data-cap").unwrap(), "data_cap");
        assert_eq!(
            Route::parse(&Method::GET, &format!("/api/peers/{id}")).unwrap(),
            Route::GetPeer(PeerId::parse(id))
        );
        assert_eq!(get("/api/peers/nope").unwrap(), "get_peer");
        assert_eq!(get("/api/peers/delete").unwrap(), "get_peer");
        assert!(matches!(post("/health"), Err(ApiError::NotFound)));
        assert!(matches!(
            post(&format!("/api/peers/{id}")),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(
            Route::parse(&Method::DELETE, "/api/peers"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(get("/api/peers/a/b"), Err(ApiError::NotFound)));
        assert!(matches!(get("/api/other"), Err(ApiError::NotFound)));
        assert!(matches!(get("/"), Err(ApiError::NotFound)));
    }
}
