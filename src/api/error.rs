//! The one place where errors become HTTP statuses.
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::core::auth::AuthError;
use crate::core::pool::PoolError;
use crate::core::registry::CreateError;
use crate::node::NodeError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("unsupported content type; send application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed_request",
            ApiError::Auth(_) => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Invalid(_) => "invalid_request",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    pub fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        super::json_response(self.status(), &body)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        match e {
            NodeError::NotFound => ApiError::NotFound,
            NodeError::Create(CreateError::KeyInUse | CreateError::SessionMismatch) => {
                ApiError::Conflict(e.to_string())
            }
            NodeError::Create(
                CreateError::AtCapacity(_) | CreateError::Pool(PoolError::Exhausted),
            ) => ApiError::Unavailable(e.to_string()),
            NodeError::Create(CreateError::Pool(_)) | NodeError::Store(_) => {
                log::error!("request failed: {e}");
                ApiError::Internal
            }
            NodeError::Dataplane(crate::sys::dataplane::DataplaneError::Plan(p)) => {
                ApiError::Invalid(p.to_string())
            }
            NodeError::Dataplane(_) => {
                log::error!("request failed: {e}");
                ApiError::Unavailable("data plane unavailable; the node retries on its own".into())
            }
            NodeError::WireGuard(_) => {
                log::error!("request failed: {e}");
                ApiError::Unavailable("data plane unavailable".into())
            }
        }
    }
}
