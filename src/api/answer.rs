//! What a signed caller gets on top of the answer: the answer's signature and, in the answer to
//! a create, the peer's secrets sealed for it (see `core::answer` and `core::seal`).
use http_body_util::BodyExt;
use warp::http::HeaderValue;
use warp::reply::Response;

use crate::core::{answer, auth, seal};

pub struct Signer {
    secret: Vec<u8>,
    server_id: String,
    /// Seal create answers; off on a loopback-only API or with `api.seal = false`.
    pub seal: bool,
}

impl Signer {
    pub fn new(secret: &[u8], server_id: &str, seal: bool) -> Signer {
        Signer {
            secret: secret.to_vec(),
            server_id: server_id.to_string(),
            seal,
        }
    }

    /// Seals the secret fields of a create answer (a JSON object) when sealing is on.
    pub fn seal_answer(&self, mut v: serde_json::Value, nonce: &str) -> serde_json::Value {
        if let (true, Some(fields)) = (self.seal, v.as_object_mut()) {
            seal::seal_fields(fields, &self.secret, &self.server_id, nonce, rand::random());
        }
        v
    }

    /// Adds the answer's signature over `nonce`, status and body.
    pub async fn sign(&self, response: Response, nonce: &str) -> Response {
        let (mut parts, body) = response.into_parts();
        // Every answer body is built in memory; collecting it cannot fail in practice, and an
        // answer whose body cannot be read goes out unsigned (the caller refuses it).
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                log::error!("answer body unreadable, sent unsigned: {e}");
                return Response::from_parts(parts, Default::default());
            }
        };
        let sig = answer::sign(
            &self.secret,
            &self.server_id,
            nonce,
            parts.status.as_u16(),
            &bytes,
        );
        if let Ok(v) = HeaderValue::from_str(&sig) {
            parts.headers.insert(auth::HEADER_SIGNATURE, v);
        }
        Response::from_parts(parts, bytes.into())
    }
}
