//! The `[api]` section: where the API listens, its secret, how it treats connections, TLS.
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use super::raw::RawApi;
use super::validate::{ranged, secret, secs};
use super::{ConfigError, Secret, Sources, bad};

/// The least entropy an API secret must carry: it is the only thing between the internet and
/// every peer's keys.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub port: u16,
    pub bind: IpAddr,
    /// `None`: the API listens on loopback only.
    pub secret: Option<Secret>,
    /// Seal the secrets of a create answer for the caller; off only when asked (`api.seal`).
    pub seal: bool,
    pub limits: ConnLimits,
    pub tls: Option<TlsFiles>,
    /// One `/metrics` series per peer (peer ids are unbounded labels, so off by default).
    pub metrics_per_peer: bool,
}

/// How the listener treats connections; see `api::listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at once; `None`: sized from the file limit at start.
    pub max_connections: Option<usize>,
    pub max_per_address: usize,
    /// To receive a request's headers; also how long an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// To receive a request's body once its headers are in.
    pub body_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: None,
            max_per_address: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// An operator's certificate chain and key, read and checked at load.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_pem: String,
    pub key_pem: Secret,
}

/// How many bytes a secret written as hex or base64 carries; `None` when it is neither.
fn secret_bytes(s: &str) -> Option<usize> {
    if s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(s.len() / 2);
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
        .map(|b| b.len())
}

fn check_secret(s: &Secret) -> Result<(), ConfigError> {
    strong_secret(s.expose()).map_err(|e| bad("api.secret", e))
}

/// Whether `s` carries at least [`MIN_SECRET_BYTES`] bytes written as hex or base64; the error
/// says what is wrong and how to make a good one.
pub fn strong_secret(s: &str) -> Result<(), String> {
    match secret_bytes(s) {
        Some(n) if n >= MIN_SECRET_BYTES => Ok(()),
        found => Err(format!(
            "must be at least {MIN_SECRET_BYTES} random bytes written as hex or base64 ({}); \
                 make one with `waylume-server keygen --api-secret`",
            match found {
                Some(n) => format!("this one has {n}"),
                None => "this one is neither".into(),
            }
        )),
    }
}

fn tls(raw: &RawApi, src: &Sources) -> Result<Option<TlsFiles>, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => {
            return Err(bad("api.tls_key_file", "tls_cert_file is set, this is not"));
        }
        (None, Some(_)) => {
            return Err(bad("api.tls_cert_file", "tls_key_file is set, this is not"));
        }
    };
    let read = |key: &str, path: &str| {
        (src.read_secret)(Path::new(path)).map_err(|e| bad(key, format!("cannot read {path}: {e}")))
    };
    let cert_pem = read("api.tls_cert_file", cert)?;
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("api.tls_cert_file", format!("{cert}: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "api.tls_cert_file",
            format!("{cert}: no certificate in it"),
        ));
    }
    let key_pem = read("api.tls_key_file", key)?;
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        bad(
            "api.tls_key_file",
            format!("{key}: no usable private key: {e}"),
        )
    })?;
    Ok(Some(TlsFiles {
        cert_pem,
        key_pem: Secret::new(key_pem),
    }))
}

pub fn validate(raw: RawApi, src: &Sources) -> Result<ApiConfig, ConfigError> {
    let api_secret = secret(
        "api.secret",
        raw.secret.clone(),
        raw.secret_file.clone(),
        src,
    )?;
    if let Some(s) = &api_secret {
        check_secret(s)?;
    }
    let bind = match &raw.bind {
        Some(b) => b
            .parse::<IpAddr>()
            .map_err(|_| bad("api.bind", format!("{b:?} is not an IP address")))?,
        None if api_secret.is_some() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    if api_secret.is_none() && !bind.is_loopback() {
        return Err(bad(
            "api.bind",
            format!(
                "{bind} is not loopback, and no API secret is set (api.secret_file / WAYLUME_API_SECRET)"
            ),
        ));
    }
    let def = ConnLimits::default();
    let limits = ConnLimits {
        max_connections: match raw.max_connections {
            None => None,
            v => Some(ranged("api.max_connections", v, 16, 1_000_000, 0)?),
        },
        max_per_address: ranged(
            "api.max_connections_per_address",
            raw.max_connections_per_address,
            1,
            1_000_000,
            def.max_per_address,
        )?,
        header_timeout: secs(
            "api.header_timeout_secs",
            raw.header_timeout_secs,
            1,
            300,
            10,
        )?,
        body_timeout: secs("api.body_timeout_secs", raw.body_timeout_secs, 1, 300, 10)?,
    };
    Ok(ApiConfig {
        port: ranged("api.port", raw.port, 1, 65535, 3000)?,
        bind,
        secret: api_secret,
        seal: raw.seal.unwrap_or(true),
        tls: tls(&raw, src)?,
        limits,
        metrics_per_peer: raw.metrics_per_peer.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_strength_counts_decoded_bytes() {
        assert_eq!(secret_bytes(&"ab".repeat(32)), Some(32));
        assert_eq!(secret_bytes(&STANDARD.encode([7u8; 32])), Some(32));
        assert_eq!(
            secret_bytes(&URL_SAFE_NO_PAD.encode([0xfbu8; 40])),
            Some(40)
        );
        assert_eq!(secret_bytes("x"), None);
        assert_eq!(secret_bytes("hunter2!"), None);
        assert!(check_secret(&Secret::new("ab".repeat(31))).is_err());
        assert!(check_secret(&Secret::new("ab".repeat(32))).is_ok());
        // Long but guessable text is neither hex nor base64 of enough bytes.
        let e =
            check_secret(&Secret::new("correct horse battery staple and more words")).unwrap_err();
        assert!(e.to_string().contains("keygen --api-secret"), "{e}");
    }
}
