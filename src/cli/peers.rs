//! `waylume-server peers …`: one signed API call per command, the answer printed as JSON.
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::Target;

#[derive(Subcommand)]
pub enum PeersCmd {
    /// Create a peer; prints it with its wg-quick config.
    Create {
        #[arg(long)]
        session_id: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
        /// The client's own public key (no private key is returned then).
        #[arg(long)]
        public_key: Option<String>,
        #[arg(long)]
        download_kbps: Option<u64>,
        #[arg(long)]
        upload_kbps: Option<u64>,
        #[arg(long)]
        data_cap_bytes: Option<u64>,
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// List peers with their counters.
    List,
    /// Show one peer.
    Get { id: String },
    /// Delete a peer; prints its final usage.
    Delete { id: String },
    /// Set a peer's rates; an omitted direction is unlimited.
    SpeedLimit {
        id: String,
        #[arg(long)]
        download_kbps: Option<u64>,
        #[arg(long)]
        upload_kbps: Option<u64>,
    },
    /// Set a peer's data cap in bytes, or `none`.
    DataCap { id: String, bytes: String },
}

fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// Sends the command's request and prints the answer; non-2xx is a failed exit.
pub async fn peers(target: &Target, cmd: PeersCmd) -> Result<ExitCode> {
    use reqwest::Method;
    let (method, path, body): (Method, String, Option<Value>) = match cmd {
        PeersCmd::Create {
            session_id,
            user_id,
            public_key,
            download_kbps,
            upload_kbps,
            data_cap_bytes,
            expires_in_secs,
        } => {
            let mut b = json!({});
            let put = |b: &mut Value, k: &str, v: Value| {
                if !v.is_null() {
                    b[k] = v
                }
            };
            put(&mut b, "session_id", json!(session_id));
            put(&mut b, "user_id", json!(user_id));
            put(&mut b, "public_key", json!(public_key));
            if download_kbps.is_some() || upload_kbps.is_some() {
                b["speed_limit"] =
                    json!({"download_kbps": download_kbps, "upload_kbps": upload_kbps});
            }
            put(&mut b, "data_cap_bytes", json!(data_cap_bytes));
            put(&mut b, "expires_in_secs", json!(expires_in_secs));
            (Method::POST, "/api/peers".into(), Some(b))
        }
        PeersCmd::List => (Method::GET, "/api/peers".into(), None),
        PeersCmd::Get { id } => (Method::GET, format!("/api/peers/{id}"), None),
        PeersCmd::Delete { id } => (
            Method::POST,
            "/api/peers/delete".into(),
            Some(json!({"peer_id": id})),
        ),
        PeersCmd::SpeedLimit {
            id,
            download_kbps,
            upload_kbps,
        } => (
            Method::POST,
            "/api/peers/speed-limit".into(),
            Some(
                json!({"peer_id": id, "download_kbps": download_kbps, "upload_kbps": upload_kbps}),
            ),
        ),
        PeersCmd::DataCap { id, bytes } => {
            let cap: Value = match bytes.as_str() {
                "none" | "null" | "unlimited" => Value::Null,
                n => json!(
                    n.parse::<u64>()
                        .map_err(|_| anyhow::anyhow!("data cap {n:?}: a byte count or `none`"))?
                ),
            };
            (
                Method::POST,
                "/api/peers/data-cap".into(),
                Some(json!({"peer_id": id, "data_cap_bytes": cap})),
            )
        }
    };
    let (status, value) = target.call(method, &path, body.as_ref()).await?;
    write_stdout(&serde_json::to_string_pretty(&value)?)?;
    if (200..300).contains(&status) {
        Ok(ExitCode::SUCCESS)
    } else {
        log::error!("the node answered {status}");
        Ok(ExitCode::FAILURE)
    }
}
