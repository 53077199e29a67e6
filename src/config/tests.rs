use std::collections::BTreeMap;
use std::path::Path;

use super::*;

/// 32 bytes in hex, as `keygen --api-secret` prints.
const STRONG: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let read = |p: &Path| match p.to_str() {
        Some("/secrets/api") => Ok(format!("{STRONG}\n")),
        Some("/secrets/short") => Ok("s3cret\n".to_string()),
        Some("/secrets/empty") => Ok("\n".to_string()),
        _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
    };
    Config::load(&Sources {
        file: toml.map(|t| (Path::new("test.toml"), t)),
        env: &env,
        read_secret: &read,
        hostname: "testhost",
    })
}

fn fixtures(kind: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind);
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn defaults_are_standalone_and_loopback() {
    let c = load(None, &[]).unwrap();
    assert_eq!(c.server_id.as_str(), "testhost");
    assert_eq!(c.api.port, 3000);
    assert!(c.api.bind.is_loopback());
    assert!(c.api.secret.is_none());
    assert!(c.supabase.is_none());
    assert_eq!(c.wireguard.interface.as_str(), "wg0");
    assert_eq!(c.wireguard.subnet.to_string(), "10.0.0.0/8");
    assert_eq!(c.wireguard.server_address().to_string(), "10.0.0.1");
    assert_eq!(c.wireguard.listen_port, 51820);
    assert_eq!(c.wireguard.mtu, 1420);
    assert_eq!(c.node.max_capacity, 1000);
    assert_eq!(c.dataplane.reconcile_interval.as_secs(), 5);
}

#[test]
fn env_overrides_file_and_secret_binds_everywhere() {
    let file = "server_id = \"from-file\"\n[api]\nport = 4000\n";
    let c = load(
        Some(file),
        &[
            ("SERVER_ID", "from-env"),
            ("WAYLUME_API_SECRET_FILE", "/secrets/api"),
            ("MAX_CAPACITY", "5"),
        ],
    )
    .unwrap();
    assert_eq!(c.server_id.as_str(), "from-env");
    assert_eq!(c.api.port, 4000);
    assert_eq!(c.api.secret.as_ref().unwrap().expose(), STRONG);
    assert!(c.api.bind.is_unspecified());
    assert_eq!(c.node.max_capacity, 5);
}

#[test]
fn secrets_never_show_in_debug() {
    let c = load(
        None,
        &[
            ("WAYLUME_API_SECRET", STRONG),
            ("SUPABASE_URL", "https://x.supabase.co"),
            ("SUPABASE_KEY", "key-material-123"),
        ],
    )
    .unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(STRONG), "{dbg}");
    assert!(!dbg.contains("key-material-123"), "{dbg}");
}

#[test]
fn bad_env_values_name_the_variable() {
    let e = load(None, &[("EXTERNAL_PORT", "70000")]).unwrap_err();
    assert_eq!(e.key, "api.port");
    let e = load(None, &[("EXTERNAL_PORT", "http")]).unwrap_err();
    assert!(e.key.contains("EXTERNAL_PORT"), "{e}");
    let e = load(None, &[("WAYLUME_API_SECRET_FILE", "/secrets/empty")]).unwrap_err();
    assert_eq!(e.key, "api.secret");
    let e = load(None, &[("WAYLUME_API_SECRET_FILE", "/secrets/missing")]).unwrap_err();
    assert_eq!(e.key, "api.secret_file");
    let e = load(
        None,
        &[
            ("SUPABASE_URL", "https://x.supabase.co"),
            ("SUPABASE_KEY", " "),
        ],
    )
    .unwrap_err();
    assert_eq!(e.key, "supabase.key");
}

#[test]
fn valid_fixtures_load() {
    for (path, text) in fixtures("valid") {
        let env = [("WAYLUME_API_SECRET", STRONG), ("SUPABASE_KEY", "k")];
        load(Some(&text), &env).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn invalid_fixtures_fail_naming_the_key() {
    let all = fixtures("invalid");
    assert!(all.len() >= 10);
    for (path, text) in all {
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{path}: no '# error:' line"));
        let err = load(Some(&text), &[]).expect_err(&path).to_string();
        assert!(err.contains(want), "{path}: {err:?} does not name {want:?}");
        assert_eq!(err.lines().count(), 1, "{path}: {err:?}");
    }
}

#[test]
fn subnet_overlap_is_refused() {
    let routes = vec![
        ("192.168.1.0/24".parse().unwrap(), "eth0".to_string()),
        ("10.0.0.0/8".parse().unwrap(), "wg0".to_string()),
    ];
    assert!(check_subnet_overlap("10.0.0.0/8".parse().unwrap(), &routes, "wg0").is_ok());
    let e = check_subnet_overlap("192.168.0.0/16".parse().unwrap(), &routes, "wg0").unwrap_err();
    assert!(e.to_string().contains("eth0"));
}

#[test]
fn weak_secrets_are_refused_naming_the_key() {
    for weak in [
        "x",
        "hunter2-very-secret",
        &STRONG[..62],
        "snakeoil-api-secret-for-vm-tests",
    ] {
        let e = load(None, &[("WAYLUME_API_SECRET", weak)]).unwrap_err();
        assert_eq!(e.key, "api.secret", "{weak}: {e}");
    }
    let e = load(None, &[("WAYLUME_API_SECRET_FILE", "/secrets/short")]).unwrap_err();
    assert_eq!(e.key, "api.secret");
    // base64 of 32 random bytes is as good as hex.
    let b64 = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=";
    assert!(load(None, &[("WAYLUME_API_SECRET", b64)]).is_ok());
}

#[test]
fn supabase_over_plain_http_only_on_loopback() {
    let with = |url: &str| load(None, &[("SUPABASE_URL", url), ("SUPABASE_KEY", "k")]);
    for bad in [
        "http://project.supabase.co",
        "http://10.0.0.5:54321",
        "http://localhost.evil.net",
    ] {
        let e = with(bad).unwrap_err();
        assert_eq!(e.key, "supabase.url", "{bad}: {e}");
        assert!(e.reason.contains("https"), "{e}");
    }
    let lab = load(
        None,
        &[
            ("SUPABASE_URL", "http://10.0.0.5:54321"),
            ("SUPABASE_KEY", "k"),
            ("WAYLUME_SUPABASE_INSECURE_HTTP", "true"),
        ],
    );
    assert!(lab.is_ok(), "an explicit opt-in allows a lab's plain http");
    for good in [
        "https://project.supabase.co",
        "http://127.0.0.1:54321",
        "http://[::1]:8000",
        "http://localhost:54321",
    ] {
        assert!(with(good).is_ok(), "{good}");
    }
}

#[test]
fn api_connection_settings_and_sealing() {
    let c = load(None, &[]).unwrap();
    assert!(c.api.seal);
    assert_eq!(c.api.limits, ConnLimits::default());
    assert!(c.api.tls.is_none());
    let file = "[api]\nseal = false\nmax_connections = 500\nmax_connections_per_address = 8\nheader_timeout_secs = 5\nbody_timeout_secs = 7\n";
    let c = load(Some(file), &[]).unwrap();
    assert!(!c.api.seal);
    assert_eq!(c.api.limits.max_connections, Some(500));
    assert_eq!(c.api.limits.max_per_address, 8);
    assert_eq!(c.api.limits.header_timeout.as_secs(), 5);
    assert_eq!(c.api.limits.body_timeout.as_secs(), 7);
    for (bad, key) in [
        ("max_connections = 0", "api.max_connections"),
        (
            "max_connections_per_address = 0",
            "api.max_connections_per_address",
        ),
        ("header_timeout_secs = 0", "api.header_timeout_secs"),
        ("body_timeout_secs = 100000", "api.body_timeout_secs"),
        ("tls_cert_file = \"/secrets/api\"", "api.tls_key_file"),
        ("tls_key_file = \"/secrets/api\"", "api.tls_cert_file"),
        (
            "tls_cert_file = \"/secrets/api\"\ntls_key_file = \"/secrets/api\"",
            "api.tls_cert_file",
        ),
        (
            "tls_cert_file = \"/nope\"\ntls_key_file = \"/secrets/api\"",
            "api.tls_cert_file",
        ),
    ] {
        let e = load(Some(&format!("[api]\n{bad}\n")), &[]).unwrap_err();
        assert_eq!(e.key, key, "{bad}: {e}");
    }
}
