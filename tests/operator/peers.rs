//! `peers list/get/create` the way an operator runs them: through `script`'s pseudo-terminal
//! (a table, key: value lines, a QR code) and through a pipe (the API's JSON document).
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use common::node::{SECRET, SERVER_ID, TestNode};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_waylume-server");

/// A node whose API listens on a loopback port, on a runtime of its own.
struct Served {
    node: TestNode,
    url: String,
    rt: tokio::runtime::Runtime,
}

fn serve() -> Served {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt.block_on(async { TestNode::new("10.20.0.0/24", 50) });
    // The binary signs with the real clock; the node checks against its own.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    node.clock.store(now, std::sync::atomic::Ordering::SeqCst);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(
        warp::serve(waylume::api::routes(node.api.clone()))
            .incoming(listener)
            .run(),
    );
    Served { node, url, rt }
}

impl Served {
    fn env<'a>(&'a self, c: &'a mut Command) -> &'a mut Command {
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("WAYLUME_API_URL", &self.url)
            .env("WAYLUME_API_SECRET", std::str::from_utf8(SECRET).unwrap())
            .env("SERVER_ID", SERVER_ID)
            // No config file or state of this machine's node leaks in.
            .env("WAYLUME_CONFIG", "/nonexistent/waylume.toml")
    }

    /// `peers ARGS` with stdout a pipe.
    fn piped(&self, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        self.env(&mut c).arg("peers").args(args).output().unwrap()
    }

    /// `peers ARGS` with stdin, stdout and stderr on a pseudo-terminal (util-linux `script`).
    fn terminal(&self, args: &[&str]) -> (String, Option<i32>) {
        let mut line = format!("{BIN} peers");
        for a in args {
            line.push_str(&format!(" '{a}'"));
        }
        let mut c = Command::new("script");
        let out = self
            .env(&mut c)
            .env("TERM", "dumb")
            .args(["-qefc", &line, "/dev/null"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap().replace("\r\n", "\n");
        (text, out.status.code())
    }

    fn create(&self, args: &[&str]) -> Value {
        let out = self.piped(&[&["create"], args].concat());
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[test]
fn list_is_a_table_on_a_terminal_and_json_through_a_pipe() {
    let s = serve();
    let a = s.create(&[
        "--session-id",
        "alice",
        "--download-kbps",
        "2000",
        "--data-cap-bytes",
        "1048576",
    ]);
    s.create(&["--session-id", "bob"]);
    let id = a["peer_id"].as_str().unwrap();

    let (table, code) = s.terminal(&["list"]);
    assert_eq!(code, Some(0), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for column in [
        "ID",
        "ADDRESS",
        "SESSION",
        "STATUS",
        "RX",
        "TX",
        "HANDSHAKE",
        "LIMIT",
        "CAP",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    let alice = lines.iter().find(|l| l.contains("alice")).unwrap();
    assert!(alice.starts_with(id), "{table}");
    for cell in [
        "10.20.0.2",
        "active",
        "0 B",
        "never",
        "2 Mbit/s/∞",
        "0 B/1.0 MiB",
    ] {
        assert!(alice.contains(cell), "{cell} missing: {table}");
    }
    assert!(!table.contains('{'), "no JSON on a terminal: {table}");
    // --json asks for the document even on a terminal.
    let (json, _) = s.terminal(&["list", "--json"]);
    assert!(serde_json::from_str::<Value>(&json).is_ok(), "{json}");

    let out = s.piped(&["list"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let peers = doc["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    let p = peers.iter().find(|p| p["session_id"] == "alice").unwrap();
    assert_eq!(p["peer_id"], id);
    assert_eq!(p["address"], "10.20.0.2");
    assert_eq!(p["speed_limit"]["download_kbps"], 2000);
    assert_eq!(p["data_cap_bytes"], 1_048_576);
    for key in [
        "rx_bytes",
        "tx_bytes",
        "last_handshake",
        "cap_used_bytes",
        "capped",
    ] {
        assert!(p["stats"].get(key).is_some(), "{key}: {p}");
    }
    drop(s.rt);
    let _ = s.node;
}

#[test]
fn get_shows_one_peer_and_a_refusal_is_one_line_with_its_exit_code() {
    let s = serve();
    let a = s.create(&["--session-id", "carol"]);
    let id = a["peer_id"].as_str().unwrap();
    let (text, code) = s.terminal(&["get", id]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("id:             {id}\n")), "{text}");
    assert!(text.contains("session:        carol\n"), "{text}");
    let out = s.piped(&["get", id]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["peer_id"], id);

    let missing = "00000000-0000-4000-8000-000000000000";
    let out = s.piped(&["get", missing]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ERROR the node answered 404 "),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["error"]["code"].is_string(), "{doc}");
    let (text, code) = s.terminal(&["get", missing]);
    assert_eq!(code, Some(3));
    assert_eq!(text.lines().count(), 1, "only the error line: {text}");

    // Wrong usage is refused before anything is sent.
    let out = s.piped(&["data-cap", id, "lots"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let doc: Value = serde_json::from_slice(&s.piped(&["get", id]).stdout).unwrap();
    assert!(doc["data_cap_bytes"].is_null());
}

#[test]
fn create_prints_a_scannable_qr_code_and_writes_a_private_config_file() {
    let s = serve();
    let (text, code) = s.terminal(&["create", "--session-id", "dave", "--qr"]);
    assert_eq!(code, Some(0), "{text}");
    let qr: String = text
        .lines()
        .take_while(|l| !l.starts_with("id:"))
        .map(|l| format!("{l}\n"))
        .collect();
    // The code ends on a line of its own, before the peer's lines.
    assert!(text.contains("▀\nid:"), "{text}");
    let config = decode(&qr);
    assert!(config.starts_with("[Interface]\n"), "{config}");
    assert!(config.contains("Address = 10.20.0.2"), "{config}");
    assert!(text.contains("session:        dave\n"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("erin.conf");
    let out = s.piped(&[
        "create",
        "--session-id",
        "erin",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        doc["config"].as_str().unwrap()
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // An existing file is never overwritten, and no peer is created for nothing.
    let before = s.node.peers().len();
    let out = s.piped(&[
        "create",
        "--session-id",
        "frank",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(s.node.peers().len(), before);
    // A refused create leaves no file behind.
    let other = dir.path().join("again.conf");
    let out = s.piped(&[
        "create",
        "--session-id",
        "erin",
        "--download-kbps",
        "5",
        "--output",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(!other.exists());
}

/// The printed QR code read back as a scanner would (see src/cli/qr.rs).
fn decode(printed: &str) -> String {
    let rows: Vec<Vec<bool>> = printed
        .lines()
        .filter(|l| !l.is_empty())
        .flat_map(|l| {
            let top = l.chars().map(|c| c == ' ' || c == '▄').collect::<Vec<_>>();
            let bottom = l.chars().map(|c| c == ' ' || c == '▀').collect::<Vec<_>>();
            [top, bottom]
        })
        .collect();
    let (w, h) = (rows[0].len() * 4, rows.len() * 4);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        if rows[y / 4].get(x / 4).copied().unwrap_or(false) {
            0
        } else {
            255
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "{printed}");
    grids[0].decode().unwrap().1
}
