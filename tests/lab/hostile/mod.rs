//! The daemon on a hostile network, in namespaces: a half-open connection flood from one
//! namespace while another creates peers, sealed and signed answers opened by a real client,
//! a request replayed across a restart, and `nft`/`tc` that hang.
//!
//! Needs root, `wireguard-go`, `wg`, `nft`, `tc`, `prlimit`: run with `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{BIN, Daemon, Notify, SECRET};
use common::netns::Lab;
use serde_json::Value;
use waylume::core::{answer, auth, seal};

const SERVER_ID: &str = "lab-node";

/// Runs `f` on a thread inside network namespace `ns`: sockets it opens live there.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// Runs the future `make` returns to completion on a thread inside namespace `ns`.
fn block_on_in_netns<T: Send + 'static, F: std::future::Future<Output = T>>(
    ns: &str,
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(make())
    })
    .join()
    .unwrap()
}

/// What a daemon tells systemd, read all the time on a thread of its own: a datagram socket
/// nobody reads fills up, and the daemon's next notification would block.
pub struct Notes {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Notes {
    pub fn drain(mut notify: Notify) -> Notes {
        let seen = Arc::new(Mutex::new(std::mem::take(&mut notify.seen)));
        let weak = Arc::downgrade(&seen);
        // Ends when the `Notes` goes.
        std::thread::spawn(move || {
            while let Some(s) = weak.upgrade() {
                drop(s);
                notify.wait("", Duration::from_millis(200));
                if let Some(s) = weak.upgrade() {
                    s.lock().unwrap().append(&mut notify.seen);
                }
            }
        });
        Notes { seen }
    }

    /// Waits until a message has the line `line`.
    pub fn wait(&self, line: &str, limit: Duration) -> bool {
        common::netns::poll(limit, || self.count(line) > 0)
    }

    /// Whether a message so far had every one of `lines`.
    pub fn any_with(&self, lines: &[&str]) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .any(|m| lines.iter().all(|want| m.lines().any(|l| l == *want)))
    }

    /// How many messages so far had the line `line`.
    pub fn count(&self, line: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|m| m.lines().any(|l| l == line)).count()
    }
}

/// Starts the daemon as `wrapper… waylume-server serve`; returns once it is READY.
fn start(d: &Daemon, lab: &mut Lab, name: &str, wrapper: &[&str]) -> (u32, Notes) {
    let log = lab.dir.path().join(format!("{name}.log"));
    let mut notify = Notify::new(lab.dir.path(), &format!("notify-{name}"));
    let mut env = d.env();
    let sock = notify.path.display().to_string();
    env.push(("NOTIFY_SOCKET", &sock));
    let mut argv = wrapper.to_vec();
    argv.extend([BIN, "serve"]);
    let pid = lab.spawn(&d.ns, &argv, &env, &log);
    let ready = notify.wait("READY=1", Duration::from_secs(30));
    assert!(
        ready,
        "not READY: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (pid, Notes::drain(notify))
}

/// One signed request as an Edge Function makes it, and the raw answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
    nonce: String,
}

impl Answer {
    /// The answer as a client must read it: signature first, then the sealed fields.
    fn opened(&self) -> Value {
        let mut v: Value = serde_json::from_slice(&self.body).unwrap();
        seal::open_fields(
            v.as_object_mut().unwrap(),
            SECRET.as_bytes(),
            SERVER_ID,
            &self.nonce,
        )
        .unwrap();
        v
    }
}

/// A signed request: method, path, body, timestamp, nonce and the signature headers.
#[derive(Clone)]
struct Signed {
    path: String,
    body: Vec<u8>,
    nonce: String,
    headers: Vec<(&'static str, String)>,
}

fn sign(method: &str, path: &str, body: &[u8]) -> Signed {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nonce: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let req = auth::Request {
        method,
        path_and_query: path,
        body,
    };
    let sig = auth::sign(SECRET.as_bytes(), SERVER_ID, &req, ts, &nonce);
    Signed {
        path: path.into(),
        body: body.to_vec(),
        nonce: nonce.clone(),
        headers: vec![
            (auth::HEADER_TIMESTAMP, ts.to_string()),
            (auth::HEADER_NONCE, nonce),
            (auth::HEADER_SIGNATURE, sig),
        ],
    }
}

async fn send(client: &reqwest::Client, base: &str, req: &Signed) -> Answer {
    try_send(client, base, req).await.unwrap()
}

/// Like `send`, but a request that gets no answer at all is an error, not a panic.
async fn try_send(client: &reqwest::Client, base: &str, req: &Signed) -> Result<Answer, String> {
    let mut r = client
        .post(format!("{base}{}", req.path))
        .header("content-type", "application/json")
        .body(req.body.clone());
    for (k, v) in &req.headers {
        r = r.header(*k, v);
    }
    let resp = r.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let sig = resp
        .headers()
        .get(auth::HEADER_SIGNATURE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.bytes().await.unwrap().to_vec();
    answer::verify(
        SECRET.as_bytes(),
        SERVER_ID,
        &req.nonce,
        status,
        &body,
        sig.as_deref(),
    )
    .unwrap_or_else(|e| panic!("{status} {}: {e}", String::from_utf8_lossy(&body)));
    Ok(Answer {
        status,
        body,
        nonce: req.nonce.clone(),
    })
}

/// Sends `reqs` in order from namespace `ns`; the answers.
fn send_from(ns: &str, base: &str, reqs: Vec<Signed>) -> Vec<Answer> {
    let base = base.to_string();
    block_on_in_netns(ns, move || async move {
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for r in &reqs {
            out.push(send(&client, &base, r).await);
        }
        out
    })
}

/// A value from the daemon's `/metrics`, read from namespace `ns`.
fn metric(ns: &str, base: &str, name: &str) -> f64 {
    let url = format!("{base}/metrics");
    let text = block_on_in_netns(ns, move || async move {
        reqwest::get(url).await.unwrap().text().await.unwrap()
    });
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics"))
}

fn raise_own_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

mod answers;
mod flood;
mod hung;
