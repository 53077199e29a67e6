//! The binary's own entry points: config validation and refusals to start, each with one line
//! naming the cause. None of these needs root: they fail before touching the network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_waylume-server");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("ERROR"))
        .map(String::from)
        .collect()
}

#[test]
fn check_config_accepts_the_fixtures_and_names_bad_keys() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let ok = run(
        &[
            "check-config",
            "--config",
            &format!("{dir}/tests/fixtures/config/valid/minimal.toml"),
        ],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = run(
        &[
            "check-config",
            "--config",
            &format!("{dir}/tests/fixtures/config/invalid/capacity.toml"),
        ],
        &[],
    );
    assert_eq!(bad.status.code(), Some(78), "EX_CONFIG");
    let lines = error_lines(&bad);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("node.max_capacity"), "{lines:?}");
    let env = run(&["check-config"], &[("SERVER_ID", "bad id/with slash")]);
    assert!(!env.status.success());
    assert!(error_lines(&env)[0].contains("server_id"));
    let via_env = run(
        &["check-config"],
        &[("WAYLUME_CONFIG", "/nonexistent/waylume.toml")],
    );
    assert!(!via_env.status.success());
    assert!(error_lines(&via_env)[0].contains("/nonexistent/waylume.toml"));
}

#[test]
fn serve_refuses_a_corrupt_store_and_an_unusable_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.db"), vec![b'x'; 4096]).unwrap();
    let state = dir.path().display().to_string();
    let out = run(
        &["serve"],
        &[("WAYLUME_STATE_DIR", &state), ("SERVER_ID", "t")],
    );
    assert!(!out.status.success());
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("state.db") && lines[0].contains("not a database"),
        "{lines:?}"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_file = format!("{}/state", file.display());
    let out = run(
        &["serve"],
        &[("WAYLUME_STATE_DIR", &under_file), ("SERVER_ID", "t")],
    );
    assert!(!out.status.success());
    let lines = error_lines(&out);
    assert!(
        lines[0].contains("state directory") && lines[0].contains(&under_file),
        "{lines:?}"
    );
}

#[test]
fn keygen_prints_a_key_and_a_secret() {
    let out = run(&["keygen"], &[]);
    let key = String::from_utf8(out.stdout).unwrap();
    assert!(
        wireguard_control::Key::from_base64(key.trim()).is_ok(),
        "{key}"
    );
    let out = run(&["keygen", "--api-secret"], &[]);
    let secret = String::from_utf8(out.stdout).unwrap();
    assert_eq!(secret.trim().len(), 64);
    assert!(secret.trim().bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn the_client_exits_non_zero_when_the_node_is_unreachable() {
    // Port 9 on loopback: nothing listens there in a test environment.
    let out = run(
        &["peers", "list"],
        &[
            ("WAYLUME_API_URL", "http://127.0.0.1:9"),
            ("SERVER_ID", "t"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        error_lines(&out)[0].contains("cannot reach the node API"),
        "{:?}",
        error_lines(&out)
    );
}

#[test]
fn keygen_derives_a_node_secret_from_the_fleet_master() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master");
    std::fs::write(&master, "00".repeat(32) + "\n").unwrap();
    let m = master.to_str().unwrap();
    let derive = |id: &str| {
        let out = run(
            &[
                "keygen",
                "--api-secret",
                "--from-master",
                m,
                "--server-id",
                id,
            ],
            &[],
        );
        assert!(out.status.success(), "{:?}", error_lines(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // hex(HMAC-SHA256(master, "node-1")), computed independently with Python's hmac module.
    assert_eq!(
        derive("node-1"),
        "5d8202cef8db9400e62c2cb5ded855281e141f1d09a80bce902fcb7cc712daa0"
    );
    assert_ne!(derive("node-2"), derive("node-1"));
    // The server id defaults to the node's own.
    let out = run(
        &["keygen", "--api-secret", "--from-master", m],
        &[("SERVER_ID", "node-1")],
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        derive("node-1")
    );

    // A weak master, a bad id and a missing file are refused with one line and print nothing.
    std::fs::write(&master, "fleet").unwrap();
    for (args, want) in [
        (vec!["--server-id", "node-1"], "fleet master"),
        (vec!["--server-id", "bad id"], "server id"),
    ] {
        let mut all = vec!["keygen", "--api-secret", "--from-master", m];
        all.extend(args);
        let out = run(&all, &[]);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert!(
            error_lines(&out)[0].contains(want),
            "{:?}",
            error_lines(&out)
        );
    }
    let out = run(
        &[
            "keygen",
            "--api-secret",
            "--from-master",
            "/nonexistent",
            "--server-id",
            "a",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn check_config_refuses_a_weak_secret_and_plain_http_supabase() {
    let out = run(
        &["check-config"],
        &[("WAYLUME_API_SECRET", "short-secret"), ("SERVER_ID", "a")],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        error_lines(&out)[0].contains("api.secret"),
        "{:?}",
        error_lines(&out)
    );
    let out = run(
        &["check-config"],
        &[
            ("SUPABASE_URL", "http://project.supabase.co"),
            ("SUPABASE_KEY", "k"),
            ("SERVER_ID", "a"),
        ],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        error_lines(&out)[0].contains("https"),
        "{:?}",
        error_lines(&out)
    );
}

/// A one-shot HTTP server on loopback that answers whatever it is asked with `answer`.
fn fake_node(answer: &'static str) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        s.write_all(answer.as_bytes()).unwrap();
    });
    (url, t)
}

#[test]
fn the_client_refuses_unsigned_and_altered_answers() {
    let secret = "ab".repeat(32);
    let body = r#"{"peers":[{"endpoint":"198.51.100.66:51820"}]}"#;
    let unsigned: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let forged: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-waylume-signature: v1={}\r\nconnection: close\r\n\r\n{body}",
            body.len(),
            "0".repeat(64)
        )
        .into_boxed_str(),
    );
    for (answer, want) in [(unsigned, "not signed"), (forged, "does not match")] {
        let (url, server) = fake_node(answer);
        let out = run(
            &["peers", "list"],
            &[
                ("WAYLUME_API_URL", &url),
                ("WAYLUME_API_SECRET", &secret),
                ("SERVER_ID", "a"),
            ],
        );
        server.join().unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "printed an unchecked answer");
        let errors = error_lines(&out);
        assert!(errors[0].contains("refusing the answer"), "{errors:?}");
        assert!(errors[0].contains(want), "{errors:?}");
    }
}
