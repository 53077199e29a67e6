//! The three request shapes the node sends to PostgREST, one attempt each. Retrying is the
//! caller's decision (it re-sends fresh data on its own schedule), so nothing here sleeps.
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::Serialize;

use super::error::{ControlError, ErrorBody, parse_retry_after};
use crate::config::Secret;

/// Error bodies longer than this are cut before parsing; a proxy's error page needs no more.
const MAX_ERROR_BODY: usize = 16 * 1024;
/// The node asks only for tiny answers (`[{"id":…,"status":…}]`); anything bigger is refused as
/// it streams in, so a broken or hostile endpoint cannot make the node buffer without limit.
const MAX_BODY: usize = 64 * 1024;

pub(crate) struct Rest {
    http: reqwest::Client,
    /// `<SUPABASE_URL>/rest/v1/`
    base: Url,
}

impl Rest {
    pub fn new(
        url: &str,
        key: &Secret,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Rest, ControlError> {
        let bad = |reason: String| ControlError::Url {
            url: url.to_string(),
            reason,
        };
        let base = Url::parse(&format!("{}/rest/v1/", url.trim_end_matches('/')))
            .map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad("not an http(s) URL".into()));
        }
        let headers = auth_headers(key.expose())?;
        let http = reqwest::Client::builder()
            // Supabase refuses secret keys from browser-like agents.
            .user_agent(concat!("waylume-server/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .build()
            .map_err(|e| ControlError::Client(e.to_string()))?;
        Ok(Rest { http, base })
    }

    fn url(&self, table: &str, query: &[(&str, &str)]) -> Result<Url, ControlError> {
        let mut url = self
            .base
            .join(table)
            .map_err(|e| ControlError::Client(e.to_string()))?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(url)
    }

    /// `POST /<table>?on_conflict=<cols>` with `resolution=merge-duplicates`: insert or overwrite
    /// the listed columns. Any 2xx is success (201 inserted, 200 only updated).
    pub async fn upsert<T: Serialize + ?Sized>(
        &self,
        table: &str,
        on_conflict: &str,
        body: &T,
    ) -> Result<(), ControlError> {
        let url = self.url(table, &[("on_conflict", on_conflict)])?;
        let req = self
            .http
            .post(url)
            .header("Prefer", "resolution=merge-duplicates,return=minimal")
            .json(body);
        send(req).await.map(drop)
    }

    /// `PATCH /<table>?<column>=eq.<value>&select=<select>` with `return=representation`: the
    /// rows it changed, so an empty answer tells "no such row" apart from success.
    pub async fn patch_eq<T: Serialize + ?Sized>(
        &self,
        table: &str,
        column: &str,
        value: &str,
        select: &str,
        body: &T,
    ) -> Result<Vec<serde_json::Value>, ControlError> {
        let filter = format!("eq.{value}");
        let url = self.url(table, &[(column, filter.as_str()), ("select", select)])?;
        let req = self
            .http
            .request(Method::PATCH, url)
            .header("Prefer", "return=representation")
            .json(body);
        let bytes = send(req).await?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Array(rows)) => Ok(rows),
            _ => Err(ControlError::Unexpected(format!(
                "PATCH {table}: expected a JSON array, got {:?}",
                ErrorBody::parse(&bytes).message.unwrap_or_default()
            ))),
        }
    }
}

/// `apikey` always. New-format keys (`sb_secret_…`, `sb_publishable_…`) are not JWTs and
/// Supabase refuses them as a Bearer token; legacy JWT keys go in both headers.
pub(crate) fn auth_headers(key: &str) -> Result<HeaderMap, ControlError> {
    let bad = || ControlError::Client("the key is not a valid header value".into());
    let mut headers = HeaderMap::new();
    let mut apikey = HeaderValue::from_str(key).map_err(|_| bad())?;
    apikey.set_sensitive(true);
    headers.insert("apikey", apikey);
    if !key.starts_with("sb_") {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| bad())?;
        bearer.set_sensitive(true);
        headers.insert(AUTHORIZATION, bearer);
    }
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    Ok(headers)
}

/// One request; a non-2xx answer becomes [`ControlError::Status`] with its body read leniently.
async fn send(req: reqwest::RequestBuilder) -> Result<Vec<u8>, ControlError> {
    let mut resp = req.send().await.map_err(network)?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let cap = if status.is_success() {
        MAX_BODY
    } else {
        MAX_ERROR_BODY
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        let room = cap - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            if status.is_success() {
                return Err(ControlError::Unexpected(format!(
                    "an answer larger than {cap} bytes"
                )));
            }
            // An error page cut short still says what went wrong.
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(bytes);
    }
    Err(ControlError::Status {
        status: status.as_u16(),
        body: ErrorBody::parse(&bytes),
        retry_after,
    })
}

/// reqwest's Display stops at the outermost layer ("error sending request"); the cause chain
/// says what actually happened (refused, reset, timed out).
fn network(e: reqwest::Error) -> ControlError {
    let timed_out = e.is_timeout();
    let e = e.without_url();
    let mut msg = if timed_out {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    ControlError::Network(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_format_keys_are_not_sent_as_bearer() {
        for key in ["sb_secret_abc123", "sb_publishable_xyz"] {
            let h = auth_headers(key).unwrap();
            assert_eq!(h.get("apikey").unwrap(), key);
            assert!(h.get(AUTHORIZATION).is_none(), "{key}");
        }
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2ln";
        let h = auth_headers(jwt).unwrap();
        assert_eq!(h.get("apikey").unwrap(), jwt);
        assert_eq!(h.get(AUTHORIZATION).unwrap(), &format!("Bearer {jwt}"));
        assert!(auth_headers("bad\nkey").is_err());
    }
}
