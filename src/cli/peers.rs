//! `waylume-server peers …`: one signed API call per command; the answer shown by
//! `super::output` (a table on a terminal, JSON otherwise).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::Target;
use super::output::{self, ConfigSinks, View};

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
        /// Also print the wg-quick config as a QR code (for the WireGuard phone apps).
        #[arg(long)]
        qr: bool,
        /// Write the wg-quick config to FILE (created with mode 0600, never overwritten).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print the API's JSON answer even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// List peers: a table on a terminal, JSON when piped or with --json.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one peer: `key: value` lines on a terminal, JSON when piped or with --json.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
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
    DataCap {
        id: String,
        #[arg(value_parser = cap_arg)]
        bytes: Cap,
    },
}

/// A data cap on the command line: bytes, or unlimited.
#[derive(Debug, Clone, Copy)]
pub struct Cap(Option<u64>);

/// Parsed by clap, so a bad value is a usage error (exit 2) like any other.
fn cap_arg(s: &str) -> Result<Cap, String> {
    match s {
        "none" | "null" | "unlimited" => Ok(Cap(None)),
        n => n
            .parse()
            .map(|b| Cap(Some(b)))
            .map_err(|_| format!("{n:?}: a byte count or `none`")),
    }
}

/// Sends the command's request and shows the answer; a refusal exits with
/// `output::EXIT_REFUSED`.
pub async fn peers(target: &Target, cmd: PeersCmd) -> Result<ExitCode> {
    use reqwest::Method;
    let mut view = View::Json;
    let mut json_flag = false;
    let mut sinks = ConfigSinks::default();
    let (method, path, body): (Method, String, Option<Value>) = match cmd {
        PeersCmd::Create {
            session_id,
            user_id,
            public_key,
            download_kbps,
            upload_kbps,
            data_cap_bytes,
            expires_in_secs,
            qr,
            output,
            json,
        } => {
            (view, json_flag) = (View::Created, json);
            sinks = ConfigSinks::new(qr, output.as_deref())?;
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
        PeersCmd::List { json } => {
            (view, json_flag) = (View::List, json);
            (Method::GET, "/api/peers".into(), None)
        }
        PeersCmd::Get { id, json } => {
            (view, json_flag) = (View::Peer, json);
            (Method::GET, format!("/api/peers/{id}"), None)
        }
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
        PeersCmd::DataCap { id, bytes } => (
            Method::POST,
            "/api/peers/data-cap".into(),
            Some(json!({"peer_id": id, "data_cap_bytes": bytes.0})),
        ),
    };
    let (status, value) = match target.call(method, &path, body.as_ref()).await {
        Ok(answer) => answer,
        Err(e) => {
            sinks.discard();
            return Err(e);
        }
    };
    let now = crate::sys::clock::unix_now();
    output::show(
        view,
        output::human(json_flag),
        status,
        &value,
        &mut sinks,
        now,
    )
}
