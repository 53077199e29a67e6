//! Sealing the secrets of a create answer for the caller who signed the request. Pure: the IV is
//! an argument.
//!
//! key = HKDF-SHA256(salt = `waylume-seal-v1`, ikm = API secret, info = the request's nonce), 32
//! bytes; then AES-256-GCM with a fresh 12-byte IV and the server id as associated data. The sealed
//! text is standard base64 of IV ‖ ciphertext ‖ 16-byte tag. Only a holder of the API secret can
//! open it, the key is new for every request, and Web Crypto has every step built in (`HKDF`,
//! `AES-GCM`), so an Edge Function opens it without a library.
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use sha2::Sha256;

/// What an answer names as its sealing scheme.
pub const SCHEME: &str = "hkdf-sha256-aes-256-gcm-v1";
const SALT: &[u8] = b"waylume-seal-v1";
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed text is not base64")]
    Encoding,
    #[error("sealed text is too short")]
    Truncated,
    #[error("sealed text does not open with this secret and nonce (altered, or not for us)")]
    Open,
    #[error("unknown sealing scheme (this client knows {SCHEME})")]
    Scheme,
}

fn cipher(secret: &[u8], nonce: &str) -> Aes256Gcm {
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 × 32; `expand` cannot fail for it.
    if Hkdf::<Sha256>::new(Some(SALT), secret)
        .expand(nonce.as_bytes(), &mut key)
        .is_err()
    {
        unreachable!("HKDF-SHA256 expands to 32 bytes");
    }
    Aes256Gcm::new(&key.into())
}

/// Seals `plain` for the caller of the request with `nonce`.
pub fn seal(secret: &[u8], server_id: &str, nonce: &str, iv: [u8; IV_LEN], plain: &[u8]) -> String {
    let payload = Payload {
        msg: plain,
        aad: server_id.as_bytes(),
    };
    // Encryption fails only for plaintexts beyond 64 GiB.
    let sealed = match cipher(secret, nonce).encrypt(Nonce::from_slice(&iv), payload) {
        Ok(c) => c,
        Err(_) => unreachable!("AES-GCM encrypts anything below 64 GiB"),
    };
    let mut out = iv.to_vec();
    out.extend_from_slice(&sealed);
    STANDARD.encode(out)
}

/// Opens what [`seal`] made; any change to the text, the secret, the nonce or the server id fails.
pub fn open(
    secret: &[u8],
    server_id: &str,
    nonce: &str,
    sealed: &str,
) -> Result<Vec<u8>, SealError> {
    let raw = STANDARD
        .decode(sealed.trim())
        .map_err(|_| SealError::Encoding)?;
    if raw.len() < IV_LEN + TAG_LEN {
        return Err(SealError::Truncated);
    }
    let (iv, body) = raw.split_at(IV_LEN);
    let payload = Payload {
        msg: body,
        aad: server_id.as_bytes(),
    };
    cipher(secret, nonce)
        .decrypt(Nonce::from_slice(iv), payload)
        .map_err(|_| SealError::Open)
}

/// The fields of a create answer that are sealed.
pub const SEALED_FIELDS: [&str; 3] = ["private_key", "preshared_key", "config"];

/// Moves the secret fields of an answer into `"sealed": {"scheme", "data"}`, where `data` seals
/// a JSON object holding them.
pub fn seal_fields(
    answer: &mut serde_json::Map<String, serde_json::Value>,
    secret: &[u8],
    server_id: &str,
    nonce: &str,
    iv: [u8; IV_LEN],
) {
    let mut inner = serde_json::Map::new();
    for f in SEALED_FIELDS {
        if let Some(v) = answer.remove(f) {
            inner.insert(f.to_string(), v);
        }
    }
    let plain = serde_json::Value::Object(inner).to_string();
    let data = seal(secret, server_id, nonce, iv, plain.as_bytes());
    answer.insert(
        "sealed".into(),
        serde_json::json!({ "scheme": SCHEME, "data": data }),
    );
}

/// Puts the sealed fields of an answer back in place; an answer without `sealed` is left as is.
pub fn open_fields(
    answer: &mut serde_json::Map<String, serde_json::Value>,
    secret: &[u8],
    server_id: &str,
    nonce: &str,
) -> Result<(), SealError> {
    let Some(sealed) = answer.remove("sealed") else {
        return Ok(());
    };
    if sealed["scheme"] != SCHEME {
        return Err(SealError::Scheme);
    }
    let data = sealed["data"].as_str().ok_or(SealError::Encoding)?;
    let plain = open(secret, server_id, nonce, data)?;
    let serde_json::Value::Object(inner) =
        serde_json::from_slice(&plain).map_err(|_| SealError::Encoding)?
    else {
        return Err(SealError::Encoding);
    };
    for (k, v) in inner {
        if SEALED_FIELDS.contains(&k.as_str()) {
            answer.insert(k, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef";
    const IV: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn known_vector() {
        // Computed independently with Python's `cryptography` (HKDF, AESGCM).
        let sealed = seal(b"secret", "node-1", NONCE, IV, b"{\"private_key\":\"x\"}");
        assert_eq!(
            sealed,
            "AQIDBAUGBwgJCgsMONlP/fLfspmCOaXGL0SuQc96421iTynj2BQHE/usQ8MvkDQ="
        );
        assert_eq!(
            open(b"secret", "node-1", NONCE, &sealed).unwrap(),
            b"{\"private_key\":\"x\"}"
        );
    }

    #[test]
    fn refuses_altered_text_and_other_secrets_nonces_nodes() {
        let sealed = seal(b"k", "a", NONCE, IV, b"private");
        assert_eq!(open(b"k", "a", NONCE, &sealed).unwrap(), b"private");
        assert_eq!(open(b"K", "a", NONCE, &sealed), Err(SealError::Open));
        assert_eq!(
            open(b"k", "a", "fedcba9876543210", &sealed),
            Err(SealError::Open)
        );
        assert_eq!(open(b"k", "b", NONCE, &sealed), Err(SealError::Open));
        let mut raw = STANDARD.decode(&sealed).unwrap();
        for i in [0, 12, raw.len() - 1] {
            raw[i] ^= 1;
            assert_eq!(
                open(b"k", "a", NONCE, &STANDARD.encode(&raw)),
                Err(SealError::Open),
                "byte {i}"
            );
            raw[i] ^= 1;
        }
        assert_eq!(
            open(b"k", "a", NONCE, "not base64!"),
            Err(SealError::Encoding)
        );
        assert_eq!(
            open(b"k", "a", NONCE, &STANDARD.encode([0u8; 27])),
            Err(SealError::Truncated)
        );
    }

    #[test]
    fn answer_fields_round_trip_and_leave_nothing_in_clear() {
        let orig = serde_json::json!({
            "peer_id": "p", "private_key": "PRIV", "preshared_key": "PSK",
            "config": "[Interface]\nPrivateKey = PRIV\n", "endpoint": "1.2.3.4:51820",
        });
        let mut a = orig.as_object().unwrap().clone();
        seal_fields(&mut a, b"k", "a", NONCE, IV);
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains("PRIV") && !text.contains("PSK"), "{text}");
        assert_eq!(a["sealed"]["scheme"], SCHEME);
        assert_eq!(a["endpoint"], "1.2.3.4:51820");
        let mut wrong = a.clone();
        assert_eq!(
            open_fields(&mut wrong, b"k", "a", "fedcba9876543210"),
            Err(SealError::Open)
        );
        let mut unknown = a.clone();
        unknown["sealed"]["scheme"] = "rot13".into();
        assert_eq!(
            open_fields(&mut unknown, b"k", "a", NONCE),
            Err(SealError::Scheme)
        );
        open_fields(&mut a, b"k", "a", NONCE).unwrap();
        assert_eq!(serde_json::Value::Object(a), orig);
    }

    #[test]
    fn each_request_gets_its_own_key() {
        let a = seal(b"k", "a", "nonce-aaaaaaaaaaaa", IV, b"same");
        let b = seal(b"k", "a", "nonce-bbbbbbbbbbbb", IV, b"same");
        assert_ne!(a, b);
    }
}
