//! Configuration: built-in defaults, then the TOML file, then the environment. The result is one
//! validated [`Config`] of typed values; every error names the key it is about.
mod api;
mod raw;
mod types;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

pub use api::{ApiConfig, ConnLimits, MIN_SECRET_BYTES, TlsFiles, strong_secret};
pub use raw::RawConfig;
pub use types::{Backend, Endpoint, IfName, Secret, ServerId};

/// One bad key and why. Displayed as a single line, the way an operator reads it in the journal.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("config: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server_id: ServerId,
    pub state_dir: PathBuf,
    pub teardown_on_stop: bool,
    pub api: ApiConfig,
    pub wireguard: WireguardConfig,
    pub node: NodeConfig,
    /// `None` is standalone mode: no registration, heartbeat or usage reports.
    pub supabase: Option<SupabaseConfig>,
    pub dataplane: DataplaneConfig,
    pub peers: PeerLifetimes,
    pub inspection: InspectionConfig,
}

#[derive(Debug, Clone)]
pub struct WireguardConfig {
    pub interface: IfName,
    pub backend: Backend,
    pub listen_port: u16,
    pub subnet: Ipv4Net,
    pub subnet_v6: Option<Ipv6Net>,
    /// What client configs name as `Endpoint`; `None` means "ask the host at start".
    pub endpoint: Option<Endpoint>,
    pub dns: Vec<IpAddr>,
    pub mtu: u16,
    pub persistent_keepalive: u16,
}

impl WireguardConfig {
    /// The node's own tunnel address: the first host of the subnet.
    pub fn server_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub max_capacity: u16,
}

#[derive(Debug, Clone)]
pub struct SupabaseConfig {
    pub url: String,
    pub key: Secret,
    pub heartbeat_interval: Duration,
    pub usage_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    pub reconcile_interval: Duration,
    pub isolation: bool,
    pub block_private_networks: bool,
    /// Fenced networks peers may reach all the same (internal services).
    pub allow_networks: Vec<ipnet::IpNet>,
    pub shaping: bool,
    /// How long one `nft`/`tc`/`ip` call may run before it is killed.
    pub command_timeout: Duration,
}

pub use crate::core::lifetime::PeerLifetimes;

#[derive(Debug, Clone)]
pub struct InspectionConfig {
    pub enabled: bool,
    pub log_hostnames: bool,
    pub policy: crate::core::classify::Policy,
}

/// Where the process's outside inputs come from; a value so tests can hand in their own.
pub struct Sources<'a> {
    pub file: Option<(&'a Path, &'a str)>,
    pub env: &'a BTreeMap<String, String>,
    /// Reads a secret file; `(path) -> contents`.
    pub read_secret: &'a dyn Fn(&Path) -> std::io::Result<String>,
    /// The host name, the default `server_id`.
    pub hostname: &'a str,
}

impl Config {
    pub fn load(src: &Sources) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = match src.file {
            Some((path, text)) => toml::from_str(text).map_err(|e| toml_error(path, text, &e))?,
            None => RawConfig::default(),
        };
        for (name, key, set) in raw::ENV {
            if let Some(v) = src.env.get(*name) {
                set(&mut raw, v).map_err(|r| bad(&format!("{name} ({key})"), r))?;
            }
        }
        if let Some(dir) = src.env.get("CREDENTIALS_DIRECTORY") {
            let dir = Path::new(dir);
            if raw.api.secret.is_none() && raw.api.secret_file.is_none() {
                let p = dir.join("api-secret");
                if p.exists() {
                    raw.api.secret_file = Some(p.display().to_string());
                }
            }
            if raw.supabase.key.is_none() && raw.supabase.key_file.is_none() {
                let p = dir.join("supabase-key");
                if p.exists() {
                    raw.supabase.key_file = Some(p.display().to_string());
                }
            }
        }
        validate::validate(raw, src)
    }
}

/// A TOML error as one line: file, line number, the offending line, and what is wrong with it.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let line_no = text[..at].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    bad(
        &format!("{}:{line_no}", path.display()),
        format!("{} (`{line}`)", e.message().trim()),
    )
}

mod validate;
pub use validate::check_subnet_overlap;

#[cfg(test)]
mod tests;
