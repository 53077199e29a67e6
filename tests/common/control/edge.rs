//! The connection-request Edge Function run under npm's Deno, as the tests use it.
use std::path::PathBuf;

use super::harness::PATIENCE;
use super::rest::SERVICE_KEY;
use super::wait_for;

pub fn function_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("supabase/functions/connection-request")
}

pub fn deno() -> PathBuf {
    function_dir().join("node_modules/.bin/deno")
}

/// A running function: its port, the process, and Deno's cache directory.
pub struct Function {
    pub port: u16,
    pub child: tokio::process::Child,
    /// The function's own log (stderr): which nodes failed and why.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `index.ts` against `supabase_url`, signing node requests with `api_secret`; returns
/// once it listens.
pub async fn start(supabase_url: &str, api_secret: &str) -> anyhow::Result<Function> {
    let deno = deno();
    anyhow::ensure!(
        deno.exists(),
        "{} missing: run npm ci in supabase/functions/connection-request",
        deno.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("function.log");
    let child = tokio::process::Command::new(&deno)
        .args([
            "run",
            "--node-modules-dir=manual",
            "--allow-net",
            "--allow-env",
            "--allow-read",
        ])
        .arg("index.ts")
        .current_dir(function_dir())
        .env("SUPABASE_URL", supabase_url)
        .env("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
        .env("WAYLUME_API_SECRET", api_secret)
        .env("PORT", port.to_string())
        .env("DENO_DIR", dir.path())
        .env("DENO_NO_UPDATE_CHECK", "1")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    wait_for("the function to listen", PATIENCE, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await?;
    Ok(Function {
        port,
        child,
        log,
        _dir: dir,
    })
}
