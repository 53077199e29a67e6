//! The operator's client for the node API: signs requests the way an Edge Function does.
use anyhow::{Context, Result};
use serde_json::Value;

use crate::config::{Config, Secret};
use crate::core::{answer, auth, seal};

/// Where the API is and how to sign for it.
pub struct Target {
    pub url: String,
    pub server_id: String,
    pub secret: Option<Secret>,
}

impl Target {
    /// From the node's own config (file and environment) where it loads, then `WAYLUME_API_URL`.
    pub fn from_env(cfg: Result<Config>) -> Result<Target> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (port, server_id, secret) = match cfg {
            Ok(c) => (c.api.port, Some(c.server_id.to_string()), c.api.secret),
            Err(e) => {
                log::debug!("node config not usable here ({e}); using the environment only");
                let port = env("EXTERNAL_PORT")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(3000);
                let secret = match (env("WAYLUME_API_SECRET"), env("WAYLUME_API_SECRET_FILE")) {
                    (Some(s), _) => Some(Secret::new(s)),
                    (None, Some(f)) => Some(Secret::new(
                        std::fs::read_to_string(&f)
                            .with_context(|| format!("reading {f}"))?
                            .trim_end()
                            .to_string(),
                    )),
                    (None, None) => None,
                };
                (port, env("SERVER_ID"), secret)
            }
        };
        Ok(Target {
            url: env("WAYLUME_API_URL")
                .unwrap_or_else(|| format!("http://127.0.0.1:{port}"))
                .trim_end_matches('/')
                .into(),
            server_id: server_id.unwrap_or_default(),
            secret,
        })
    }

    /// Sends one request; returns the status and the body as JSON (or as a string if it is not).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("waylume-server/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let mut req = client.request(method.clone(), format!("{}{path}", self.url));
        if body.is_some() {
            req = req
                .header("content-type", "application/json")
                .body(bytes.clone());
        }
        let nonce: String = (0..16)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        if let Some(secret) = &self.secret {
            let ts = crate::sys::clock::unix_now();
            let r = auth::Request {
                method: method.as_str(),
                path_and_query: path,
                body: &bytes,
            };
            let sig = auth::sign(secret.expose().as_bytes(), &self.server_id, &r, ts, &nonce);
            req = req
                .header(auth::HEADER_TIMESTAMP, ts.to_string())
                .header(auth::HEADER_NONCE, &nonce)
                .header(auth::HEADER_SIGNATURE, sig);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the node API at {}", self.url))?;
        let status = resp.status().as_u16();
        let signature = resp
            .headers()
            .get(auth::HEADER_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await?;
        let Some(secret) = &self.secret else {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return Ok((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ));
        };
        let secret = secret.expose().as_bytes();
        // Nothing of an answer is shown before its signature checks out.
        answer::verify(
            secret,
            &self.server_id,
            &nonce,
            status,
            &bytes,
            signature.as_deref(),
        )
        .with_context(|| format!("refusing the answer from {} ({status})", self.url))?;
        let mut value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if let Some(fields) = value.as_object_mut() {
            seal::open_fields(fields, secret, &self.server_id, &nonce)
                .context("cannot open the sealed secrets of the answer")?;
        }
        Ok((status, value))
    }
}
