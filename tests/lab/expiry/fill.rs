//! The API side of the expiry test: signed creates over several connections at once, each
//! landing on the expiry second asked for, and the node's peer count.
use std::time::{SystemTime, UNIX_EPOCH};

use super::{NODE, SERVER_ID};
use crate::harness::SECRET;
use waylume::cli::Target;

/// Concurrent API connections filling the node.
const WORKERS: usize = 8;

/// A peer as the test knows it.
#[derive(Clone, Debug)]
pub struct Made {
    pub id: String,
    pub address: String,
    pub public_key: String,
    pub shaped: bool,
    pub config: String,
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub fn target() -> Target {
    Target {
        url: format!("http://{NODE}:3000"),
        server_id: SERVER_ID.into(),
        secret: Some(waylume::config::Secret::new(SECRET)),
    }
}

/// Peers the node counts, from its `/health` (public, so unsigned).
pub async fn peers_left() -> u64 {
    let public = Target {
        secret: None,
        ..target()
    };
    let (_, h) = public
        .call(reqwest::Method::GET, "/health", None)
        .await
        .unwrap();
    h["capacity"]["peers"].as_u64().unwrap()
}

/// Creates peer number `i`: every 20th shaped, every 10th with a data cap. With `until`, its
/// expiry is that unix second exactly: a create that landed in the next second (the node counts
/// from its own clock) is deleted and made again.
pub async fn create(api: &Target, i: usize, until: Option<u64>) -> Made {
    let shaped = i.is_multiple_of(20);
    loop {
        let mut body = serde_json::json!({"session_id": format!("exp-{i}")});
        if shaped {
            body["speed_limit"] = serde_json::json!({"download_kbps": 8000, "upload_kbps": 4000});
        }
        if i % 10 == 5 {
            body["data_cap_bytes"] = serde_json::json!(1_000_000_000u64);
        }
        if let Some(u) = until {
            body["expires_in_secs"] = serde_json::json!(u.saturating_sub(unix_now() as u64));
        }
        let (status, p) = api
            .call(reqwest::Method::POST, "/api/peers", Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 201, "{p}");
        let id = p["peer_id"].as_str().unwrap().to_string();
        if until.is_some() && p["expires_at"].as_u64() != until {
            let del = serde_json::json!({"peer_id": id});
            let (status, answer) = api
                .call(reqwest::Method::POST, "/api/peers/delete", Some(&del))
                .await
                .unwrap();
            assert_eq!(status, 200, "{answer}");
            continue;
        }
        return Made {
            id,
            address: p["address"].as_str().unwrap().into(),
            public_key: p["public_key"].as_str().unwrap().into(),
            shaped,
            config: p["config"].as_str().unwrap_or_default().into(),
        };
    }
}

/// Peers `range` created over `WORKERS` connections at once.
pub async fn fill(range: std::ops::Range<usize>, until: Option<u64>) -> Vec<Made> {
    let all: Vec<usize> = range.collect();
    let mut tasks = Vec::new();
    for part in all.chunks(all.len().div_ceil(WORKERS).max(1)) {
        let part = part.to_vec();
        tasks.push(tokio::spawn(async move {
            let api = target();
            let mut out = Vec::new();
            for i in part {
                out.push(create(&api, i, until).await);
            }
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    out
}
