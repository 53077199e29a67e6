//! A throwaway PostgreSQL cluster per test: `initdb` into a temporary directory, listening on
//! 127.0.0.1 and a free port with `fsync=off`, the Supabase roles and the project's migration
//! applied. Dropping it stops the server and removes the directory.
//!
//! PostgreSQL refuses to run as root, so as root the binaries run as the `postgres` user
//! (`runuser`); as any other user they run as that user.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The roles a Supabase project has before any migration runs.
const SUPABASE_ROLES: &str = "
    create role anon nologin noinherit;
    create role authenticated nologin noinherit;
    create role service_role nologin noinherit bypassrls;
    create role authenticator login noinherit;
    grant anon, authenticated, service_role to authenticator;
    grant usage on schema public to anon, authenticated, service_role;
    alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
";

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Starts a cluster with the roles and every migration under `supabase/migrations` applied.
    pub async fn start() -> Result<PgCluster> {
        PgCluster::start_after("").await
    }

    /// Starts a cluster with the roles, then `before` (e.g. tables an earlier server made), then
    /// the migrations.
    pub async fn start_after(before: &str) -> Result<PgCluster> {
        let bin = bin_dir()?;
        let as_postgres = std::fs::metadata("/proc/self")?.uid() == 0;
        let dir = tempfile::Builder::new().prefix("waylume-pg-").tempdir()?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        // The port is free when probed; another process may take it before postgres binds, so try
        // a few.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={data} -c fsync=off -c full_page_writes=off",
                cluster.port
            );
            let log = format!("{data}/server.log");
            match cluster.run(
                "pg_ctl",
                &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
            ) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            let log = std::fs::read_to_string(format!("{data}/server.log")).unwrap_or_default();
            bail!("{e}\n{log}");
        }
        let db = cluster.connect().await?;
        db.batch_execute(SUPABASE_ROLES).await?;
        db.batch_execute(before)
            .await
            .context("applying the pre-existing schema")?;
        cluster.migrate().await?;
        Ok(cluster)
    }

    /// Applies every migration under `supabase/migrations` (again), each in its own session as
    /// `supabase db push` does.
    pub async fn migrate(&self) -> Result<()> {
        for sql in migrations()? {
            let text = std::fs::read_to_string(&sql)?;
            let db = self.connect().await?;
            db.batch_execute(&text)
                .await
                .with_context(|| format!("applying {}", sql.display()))?;
        }
        Ok(())
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn conn_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// A superuser connection; its driver task runs on the caller's runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.conn_string(), tokio_postgres::NoTls)
            .await
            .context("connecting to the test PostgreSQL")?;
        tokio::spawn(conn);
        Ok(client)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let data = self.data();
            // Immediate: the data is thrown away anyway.
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

/// `PG_BIN` if set, else the newest `/usr/lib/postgresql/<v>/bin` (Debian), else whatever
/// directory holds `initdb` on `PATH` (NixOS, other distributions).
fn bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .context("PostgreSQL not found: install it (Debian: postgresql) or set PG_BIN")
}

fn postgres_ids() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .context("running as root needs a `postgres` user to run PostgreSQL")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The migration files in the order Supabase applies them (by name).
pub fn migrations() -> Result<Vec<PathBuf>> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("supabase/migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "sql"));
    files.sort();
    Ok(files)
}
