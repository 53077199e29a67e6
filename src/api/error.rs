//! The one place where errors become HTTP statuses.
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::core::auth::AuthError;
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
            NodeError::Conflict(_) => ApiError::Conflict(e.to_string()),
            NodeError::Full(_) => ApiError::Unavailable(e.to_string()),
            NodeError::Rejected(p) => ApiError::Invalid(p.to_string()),
            NodeError::Unavailable(cause) => {
                log::error!("request failed: {cause}");
                ApiError::Unavailable(
                    "the node cannot make this change now; it retries repairs on its own".into(),
                )
            }
        }
    }
}
