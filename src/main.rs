//! `waylume-server`: the node daemon and its operator tools.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use waylume::cli::{self, PeersCmd};
use waylume::{app, sys};

#[derive(Parser)]
#[command(
    name = "waylume-server",
    version,
    about = "Self-managing WireGuard VPN node"
)]
struct Cli {
    /// TOML config file (also WAYLUME_CONFIG); environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (the default).
    Serve,
    /// Validate the effective configuration and exit; non-zero names the bad key.
    CheckConfig {
        /// Also check against this host (subnet overlap with existing routes).
        #[arg(long)]
        host: bool,
    },
    /// Operator client for the node API; signs requests with the API secret.
    Peers {
        #[command(subcommand)]
        cmd: PeersCmd,
    },
    /// Classify the flows of a capture file (pcap or pcapng) and print one line per flow.
    Inspect {
        /// The capture file.
        #[arg(long)]
        pcap: PathBuf,
        /// One JSON object per flow per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a new WireGuard private key, or with --api-secret a random API secret.
    Keygen {
        #[arg(long)]
        api_secret: bool,
        /// With --api-secret: print the node's secret derived from the fleet master secret in
        /// FILE (`-`: standard input), hex(HMAC-SHA256(master, server_id)).
        #[arg(long, value_name = "FILE", requires = "api_secret")]
        from_master: Option<PathBuf>,
        /// The node to derive for; default: this node's server_id from its config.
        #[arg(long, requires = "from_master")]
        server_id: Option<String>,
    },
    /// Print a shell completion script (e.g. `waylume-server completions bash >
    /// /usr/share/bash-completion/completions/waylume-server`).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `waylume-server man | man -l -`.
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sys::journal::init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e:#}");
            // 78 (EX_CONFIG): the unit does not restart into the same bad configuration.
            if e.downcast_ref::<waylume::config::ConfigError>().is_some() {
                ExitCode::from(78)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let cfg = app::load_config(cli.config.as_deref())?;
            runtime()?.block_on(app::serve(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { host } => {
            let cfg = app::load_config(cli.config.as_deref())?;
            if host {
                runtime()?.block_on(app::check_host(&cfg))?;
            }
            log::info!(
                "config ok: server_id {}, interface {}",
                cfg.server_id,
                cfg.wireguard.interface
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { pcap, json } => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            cli::inspect::run(&pcap, json, &mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen {
            from_master: Some(master),
            server_id,
            ..
        } => {
            let id = match server_id {
                Some(id) => id,
                None => app::load_config(cli.config.as_deref())?
                    .server_id
                    .to_string(),
            };
            write_stdout(&derive_secret(&master, &id)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { api_secret, .. } => {
            let text = if api_secret {
                (0..32)
                    .map(|_| format!("{:02x}", rand::random::<u8>()))
                    .collect()
            } else {
                wireguard_control::Key::generate_private().to_base64()
            };
            write_stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            // Into a buffer first: the generator panics on a write error (a closed pipe).
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "waylume-server", &mut text);
            write_bytes(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut text)?;
            write_bytes(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Peers { cmd } => {
            let target = cli::Target::from_env(app::load_config(cli.config.as_deref()))?;
            runtime()?.block_on(cli::peers(&target, cmd))
        }
    }
}

/// A node's API secret from the fleet master in `path`.
fn derive_secret(path: &std::path::Path, server_id: &str) -> Result<String> {
    use anyhow::Context;
    let id: waylume::config::ServerId = server_id
        .parse()
        .map_err(|e| anyhow::anyhow!("server id: {e}"))?;
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin().lock()).context("reading the master from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let master = text.trim_end_matches(['\n', '\r']);
    waylume::config::strong_secret(master).map_err(|e| anyhow::anyhow!("fleet master: {e}"))?;
    Ok(waylume::core::answer::node_secret(
        master.as_bytes(),
        id.as_str(),
    ))
}

fn write_bytes(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}
