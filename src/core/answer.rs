//! Answer signatures and per-node secrets. Pure.
//!
//! Every answer to a signed `/api/*` request carries `x-waylume-signature: v1=<hex>`, an
//! HMAC-SHA256 with the API secret over (lines joined by `\n`, no trailing newline):
//! `waylume-v1-answer`, SERVER_ID, the request's nonce, the status code (decimal), lowercase hex
//! SHA-256 of the body. A caller that checks it knows the answer came from the node that holds
//! the secret, for its own request, and was not altered on the way.
//!
//! A fleet can give each node its own secret without storing one per node: the node secret is
//! lowercase hex of HMAC-SHA256(master, SERVER_ID), so a secret stolen from one node opens no
//! other node, and whoever holds the master (the Edge Function) derives any node's secret.
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::{hex, mac, unhex};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("the answer is not signed")]
    Unsigned,
    #[error("the answer's signature is malformed")]
    Malformed,
    #[error("the answer's signature does not match: altered, or not from this node")]
    BadSignature,
}

pub fn string_to_sign(server_id: &str, nonce: &str, status: u16, body: &[u8]) -> String {
    let body_hash = hex(&Sha256::digest(body));
    format!("waylume-v1-answer\n{server_id}\n{nonce}\n{status}\n{body_hash}")
}

/// The value of the answer's signature header.
pub fn sign(secret: &[u8], server_id: &str, nonce: &str, status: u16, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex(&mac(
            secret,
            &string_to_sign(server_id, nonce, status, body)
        ))
    )
}

/// Checks an answer's signature header (`None` when the answer had none).
pub fn verify(
    secret: &[u8],
    server_id: &str,
    nonce: &str,
    status: u16,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), AnswerError> {
    let given = header
        .ok_or(AnswerError::Unsigned)?
        .strip_prefix("v1=")
        .and_then(unhex)
        .filter(|g| g.len() == 32)
        .ok_or(AnswerError::Malformed)?;
    let want = mac(secret, &string_to_sign(server_id, nonce, status, body));
    if bool::from(want.ct_eq(&given)) {
        Ok(())
    } else {
        Err(AnswerError::BadSignature)
    }
}

/// A node's API secret derived from the fleet master: hex(HMAC-SHA256(master, server_id)).
pub fn node_secret(master: &[u8], server_id: &str) -> String {
    hex(&mac(master, server_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef";

    #[test]
    fn known_vector() {
        // Computed independently with Python's hmac and hashlib modules.
        assert_eq!(
            string_to_sign("node-1", NONCE, 201, b"{}"),
            "waylume-v1-answer\nnode-1\n0123456789abcdef\n201\n\
             44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let sig = sign(b"secret", "node-1", NONCE, 201, b"{}");
        assert_eq!(
            sig,
            "v1=28d693ba328e5c9e94e6f706206799a269cefa4ce4cf7d28fa55999db0f4d832"
        );
        assert_eq!(
            verify(b"secret", "node-1", NONCE, 201, b"{}", Some(&sig)),
            Ok(())
        );
        assert_eq!(
            node_secret(b"fleet-master", "node-1"),
            "9cd8880848e5fe8a3619f598a061993b36cc2cf6fc1d4860169129fc0571a650"
        );
    }

    #[test]
    fn refuses_altered_unsigned_and_foreign_answers() {
        let sig = sign(b"k", "a", NONCE, 200, b"{\"endpoint\":\"1.2.3.4:51820\"}");
        let check = |secret: &[u8], id, nonce, status, body: &[u8], h: Option<&str>| {
            verify(secret, id, nonce, status, body, h)
        };
        let body = b"{\"endpoint\":\"1.2.3.4:51820\"}";
        assert_eq!(check(b"k", "a", NONCE, 200, body, Some(&sig)), Ok(()));
        let altered = b"{\"endpoint\":\"6.6.6.6:51820\"}";
        assert_eq!(
            check(b"k", "a", NONCE, 200, altered, Some(&sig)),
            Err(AnswerError::BadSignature)
        );
        assert_eq!(
            check(b"k", "a", NONCE, 500, body, Some(&sig)),
            Err(AnswerError::BadSignature)
        );
        // An answer to another request (another nonce) does not pass for this one.
        assert_eq!(
            check(b"k", "a", "fedcba9876543210", 200, body, Some(&sig)),
            Err(AnswerError::BadSignature)
        );
        assert_eq!(
            check(b"k", "b", NONCE, 200, body, Some(&sig)),
            Err(AnswerError::BadSignature)
        );
        assert_eq!(
            check(b"K", "a", NONCE, 200, body, Some(&sig)),
            Err(AnswerError::BadSignature)
        );
        assert_eq!(
            check(b"k", "a", NONCE, 200, body, None),
            Err(AnswerError::Unsigned)
        );
        for bad in ["", "v1=", "v1=zz", "v2=00", &sig[3..], "v1=00"] {
            assert_eq!(
                check(b"k", "a", NONCE, 200, body, Some(bad)),
                Err(AnswerError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn node_secrets_differ_per_node_and_are_long_enough() {
        let a = node_secret(b"m", "node-a");
        assert_eq!(a.len(), 64);
        assert_ne!(a, node_secret(b"m", "node-b"));
        assert_ne!(a, node_secret(b"M", "node-a"));
    }
}
