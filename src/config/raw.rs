//! The configuration as written: a TOML file overlaid with environment variables. Every field is
//! optional here; `super::validate` turns this into a typed [`super::Config`].
use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server_id: Option<String>,
    /// Refuse the host-name default: a fleet image must be told its id.
    pub require_server_id: Option<bool>,
    pub state_dir: Option<String>,
    pub teardown_on_stop: Option<bool>,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub wireguard: RawWireguard,
    #[serde(default)]
    pub node: RawNode,
    #[serde(default)]
    pub supabase: RawSupabase,
    #[serde(default)]
    pub dataplane: RawDataplane,
    #[serde(default)]
    pub peers: RawPeers,
    #[serde(default)]
    pub inspection: RawInspection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub port: Option<i64>,
    pub bind: Option<String>,
    pub secret_file: Option<String>,
    pub metrics_per_peer: Option<bool>,
    /// Only from the environment (`WAYLUME_API_SECRET`): a secret is never written in a file
    /// that may end up world-readable.
    #[serde(skip)]
    pub secret: Option<String>,
    pub seal: Option<bool>,
    pub max_connections: Option<i64>,
    pub max_connections_per_address: Option<i64>,
    pub header_timeout_secs: Option<i64>,
    pub body_timeout_secs: Option<i64>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWireguard {
    pub interface: Option<String>,
    pub backend: Option<String>,
    pub listen_port: Option<i64>,
    pub subnet: Option<String>,
    pub subnet_v6: Option<String>,
    pub endpoint: Option<String>,
    pub dns: Option<Vec<String>>,
    pub mtu: Option<i64>,
    pub persistent_keepalive: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub max_capacity: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupabase {
    pub url: Option<String>,
    pub key_file: Option<String>,
    #[serde(skip)]
    pub key: Option<String>,
    pub heartbeat_interval_secs: Option<i64>,
    pub usage_interval_secs: Option<i64>,
    /// Plain http to a non-loopback address: only for a lab on a private link.
    pub insecure_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataplane {
    pub reconcile_interval_secs: Option<i64>,
    pub isolation: Option<bool>,
    pub block_private_networks: Option<bool>,
    pub allow_networks: Option<Vec<String>>,
    pub shaping: Option<bool>,
    pub firewall_backend: Option<String>,
    pub command_timeout_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeers {
    pub idle_timeout_secs: Option<i64>,
    pub handshake_grace_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInspection {
    pub enabled: Option<bool>,
    pub log_hostnames: Option<bool>,
    pub policy: Option<BTreeMap<String, String>>,
}

/// One environment variable and where it lands; `Some(key)` names the TOML key for messages.
type EnvSetter = fn(&mut RawConfig, &str) -> Result<(), String>;

fn int(v: &str) -> Result<i64, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a whole number"))
}

fn float(v: &str) -> Result<f64, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a number"))
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean (true/false)")),
    }
}

/// Sets one field from an environment value with a converter.
macro_rules! env {
    ($name:literal, $($field:ident).+, $conv:ident) => {
        ($name, stringify!($($field).+), |r: &mut RawConfig, v: &str| {
            r.$($field).+ = Some($conv(v)?);
            Ok(())
        })
    };
}

fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

fn list(v: &str) -> Result<Vec<String>, String> {
    let items = v.split(',').map(str::trim).filter(|s| !s.is_empty());
    Ok(items.map(str::to_string).collect())
}

/// The environment names, upstream ones first, each with the TOML key it sets. Later wins over
/// the file.
pub const ENV: &[(&str, &str, EnvSetter)] = &[
    env!("SERVER_ID", server_id, text),
    env!("EXTERNAL_PORT", api.port, int),
    env!("MAX_CAPACITY", node.max_capacity, int),
    env!("SERVER_COUNTRY", node.country, text),
    env!("SERVER_CITY", node.city, text),
    env!("SERVER_COORDS_LAT", node.latitude, float),
    env!("SERVER_COORDS_LON", node.longitude, float),
    env!("SUPABASE_URL", supabase.url, text),
    env!("SUPABASE_KEY", supabase.key, text),
    env!("SUPABASE_KEY_FILE", supabase.key_file, text),
    env!(
        "WAYLUME_SUPABASE_INSECURE_HTTP",
        supabase.insecure_http,
        boolean
    ),
    env!("WAYLUME_REQUIRE_SERVER_ID", require_server_id, boolean),
    env!("WAYLUME_STATE_DIR", state_dir, text),
    env!("WAYLUME_TEARDOWN_ON_STOP", teardown_on_stop, boolean),
    env!("WAYLUME_API_BIND", api.bind, text),
    env!("WAYLUME_API_SECRET", api.secret, text),
    env!("WAYLUME_API_SECRET_FILE", api.secret_file, text),
    env!("WAYLUME_API_SEAL", api.seal, boolean),
    env!("WAYLUME_API_MAX_CONNECTIONS", api.max_connections, int),
    env!("WAYLUME_METRICS_PER_PEER", api.metrics_per_peer, boolean),
    env!("WAYLUME_INTERFACE", wireguard.interface, text),
    env!("WAYLUME_WG_BACKEND", wireguard.backend, text),
    env!("WAYLUME_LISTEN_PORT", wireguard.listen_port, int),
    env!("WAYLUME_SUBNET", wireguard.subnet, text),
    env!("WAYLUME_SUBNET_V6", wireguard.subnet_v6, text),
    env!("WAYLUME_ENDPOINT", wireguard.endpoint, text),
    env!("WAYLUME_DNS", wireguard.dns, list),
    env!("WAYLUME_MTU", wireguard.mtu, int),
    env!(
        "WAYLUME_RECONCILE_INTERVAL_SECS",
        dataplane.reconcile_interval_secs,
        int
    ),
    env!("WAYLUME_ISOLATION", dataplane.isolation, boolean),
    env!("WAYLUME_SHAPING", dataplane.shaping, boolean),
    env!(
        "WAYLUME_COMMAND_TIMEOUT_SECS",
        dataplane.command_timeout_secs,
        int
    ),
    env!("WAYLUME_ALLOW_NETWORKS", dataplane.allow_networks, list),
    env!("WAYLUME_IDLE_TIMEOUT_SECS", peers.idle_timeout_secs, int),
    env!(
        "WAYLUME_HEARTBEAT_INTERVAL_SECS",
        supabase.heartbeat_interval_secs,
        int
    ),
    env!(
        "WAYLUME_USAGE_INTERVAL_SECS",
        supabase.usage_interval_secs,
        int
    ),
    env!("WAYLUME_INSPECTION", inspection.enabled, boolean),
    env!("WAYLUME_LOG_HOSTNAMES", inspection.log_hostnames, boolean),
];
