//! Raw → typed, with the defaults. Each check names the key it is about.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

use super::raw::RawConfig;
use super::*;

use crate::core::classify::{Action, Policy, Protocol};

fn action(key: &str, v: &str) -> Result<Action, ConfigError> {
    match v {
        "report" => Ok(Action::Report),
        "throttle" => Ok(Action::Throttle),
        "block" => Ok(Action::Block),
        _ => Err(bad(
            key,
            format!("{v:?} is not one of report, throttle, block"),
        )),
    }
}

pub(super) fn ranged<T: TryFrom<i64>>(
    key: &str,
    v: Option<i64>,
    lo: i64,
    hi: i64,
    def: T,
) -> Result<T, ConfigError> {
    match v {
        None => Ok(def),
        Some(n) if (lo..=hi).contains(&n) => {
            T::try_from(n).map_err(|_| bad(key, format!("{n} is out of range {lo}..={hi}")))
        }
        Some(n) => Err(bad(key, format!("{n} is out of range {lo}..={hi}"))),
    }
}

/// Networks written as `addr/len` with no host bits, at most 256, none the whole address space
/// (that is `block_private_networks = false`).
fn allow_networks(items: Vec<String>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    const KEY: &str = "dataplane.allow_networks";
    if items.len() > 256 {
        return Err(bad(KEY, format!("{} networks, at most 256", items.len())));
    }
    let mut out = Vec::new();
    for s in items {
        let net: ipnet::IpNet = s
            .parse()
            .map_err(|_| bad(KEY, format!("{s:?} is not a network (addr/len)")))?;
        if net != net.trunc() {
            return Err(bad(
                KEY,
                format!("{s} has host bits set; the network is {}", net.trunc()),
            ));
        }
        if net.prefix_len() == 0 {
            return Err(bad(
                KEY,
                format!("{s} allows everything; set block_private_networks = false instead"),
            ));
        }
        out.push(net);
    }
    Ok(out)
}

pub(super) fn secs(
    key: &str,
    v: Option<i64>,
    lo: i64,
    hi: i64,
    def: u64,
) -> Result<Duration, ConfigError> {
    ranged(key, v, lo, hi, def).map(Duration::from_secs)
}

fn parsed<T: std::str::FromStr<Err = String>>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.parse().map_err(|e: String| bad(key, e))
}

/// A secret from its inline value or its file; a file's trailing newline is not part of it.
pub(super) fn secret(
    key: &str,
    inline: Option<String>,
    file: Option<String>,
    src: &Sources,
) -> Result<Option<Secret>, ConfigError> {
    let value = match (inline, file) {
        (Some(v), _) => v,
        (None, Some(path)) => (src.read_secret)(Path::new(&path))
            .map_err(|e| bad(&format!("{key}_file"), format!("cannot read {path}: {e}")))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => return Ok(None),
    };
    if value.trim().is_empty() {
        return Err(bad(key, "is empty"));
    }
    Ok(Some(Secret::new(value)))
}

fn optional_text(key: &str, v: Option<String>) -> Result<Option<String>, ConfigError> {
    match v {
        Some(s) if s.len() > 100 || s.chars().any(char::is_control) => {
            Err(bad(key, "must be at most 100 printable characters"))
        }
        Some(s) if s.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

fn coordinate(key: &str, v: Option<f64>, limit: f64) -> Result<Option<f64>, ConfigError> {
    match v {
        Some(x) if !x.is_finite() || x.abs() > limit => {
            Err(bad(key, format!("{x} is outside -{limit}..={limit}")))
        }
        other => Ok(other),
    }
}

pub fn validate(raw: RawConfig, src: &Sources) -> Result<Config, ConfigError> {
    let server_id = match raw.server_id {
        Some(s) => parsed("server_id", &s)?,
        None if raw.require_server_id.unwrap_or(false) => {
            return Err(bad(
                "server_id",
                "not set, and require_server_id is on: give SERVER_ID (on the cloud image it comes \
                 from the config drive, in /etc/waylume/node.env)",
            ));
        }
        None => parsed("server_id", src.hostname).map_err(|e| {
            bad(
                "server_id",
                format!("not set, and the host name is unusable: {}", e.reason),
            )
        })?,
    };
    let api = super::api::validate(raw.api, src)?;

    let wg = raw.wireguard;
    let subnet: Ipv4Net = parsed_net(
        "wireguard.subnet",
        wg.subnet.as_deref().unwrap_or("10.0.0.0/8"),
    )?;
    if subnet.prefix_len() > 30 {
        return Err(bad(
            "wireguard.subnet",
            format!("{subnet} leaves no room for peers (at most /30)"),
        ));
    }
    let subnet_v6 = match wg.subnet_v6 {
        Some(s) => {
            let net: Ipv6Net = s.parse().map_err(|_| {
                bad(
                    "wireguard.subnet_v6",
                    format!("{s:?} is not an IPv6 network"),
                )
            })?;
            if net != net.trunc() || net.prefix_len() > 112 {
                return Err(bad(
                    "wireguard.subnet_v6",
                    format!("{s} must be a network address, /112 or larger"),
                ));
            }
            Some(net)
        }
        None => None,
    };
    let listen_port = ranged("wireguard.listen_port", wg.listen_port, 1, 65535, 51820)?;
    if listen_port == api.port {
        return Err(bad(
            "wireguard.listen_port",
            format!("{listen_port} is also the API port"),
        ));
    }
    let dns = wg
        .dns
        .unwrap_or_else(|| vec!["1.1.1.1".into()])
        .iter()
        .map(|d| {
            d.parse::<IpAddr>()
                .map_err(|_| bad("wireguard.dns", format!("{d:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let wireguard = WireguardConfig {
        interface: parsed(
            "wireguard.interface",
            wg.interface.as_deref().unwrap_or("wg0"),
        )?,
        backend: parsed("wireguard.backend", wg.backend.as_deref().unwrap_or("auto"))?,
        listen_port,
        subnet,
        subnet_v6,
        endpoint: wg
            .endpoint
            .map(|e| parsed("wireguard.endpoint", &e))
            .transpose()?,
        dns,
        mtu: ranged("wireguard.mtu", wg.mtu, 1280, 9000, 1420)?,
        persistent_keepalive: ranged(
            "wireguard.persistent_keepalive",
            wg.persistent_keepalive,
            0,
            3600,
            25,
        )?,
    };

    let node = NodeConfig {
        country: optional_text("node.country", raw.node.country)?,
        city: optional_text("node.city", raw.node.city)?,
        latitude: coordinate("node.latitude", raw.node.latitude, 90.0)?,
        longitude: coordinate("node.longitude", raw.node.longitude, 180.0)?,
        max_capacity: ranged("node.max_capacity", raw.node.max_capacity, 1, 32767, 1000)?,
    };

    let sb = raw.supabase;
    let key = secret("supabase.key", sb.key, sb.key_file, src)?;
    let supabase = match sb.url {
        None => None,
        Some(url) => {
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| bad("supabase.url", format!("{url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(bad(
                    "supabase.url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
            // The service key travels in every request: plain HTTP only to this host.
            if parsed.scheme() == "http"
                && !is_loopback(&parsed)
                && !sb.insecure_http.unwrap_or(false)
            {
                return Err(bad(
                    "supabase.url",
                    format!("{url:?} must use https (plain http only to a loopback address)"),
                ));
            }
            Some(SupabaseConfig {
                url: url.trim_end_matches('/').to_string(),
                key: key.ok_or_else(|| {
                    bad(
                        "supabase.key",
                        "SUPABASE_URL is set but no key (SUPABASE_KEY / SUPABASE_KEY_FILE)",
                    )
                })?,
                heartbeat_interval: secs(
                    "supabase.heartbeat_interval_secs",
                    sb.heartbeat_interval_secs,
                    1,
                    3600,
                    30,
                )?,
                usage_interval: secs(
                    "supabase.usage_interval_secs",
                    sb.usage_interval_secs,
                    1,
                    86400,
                    60,
                )?,
            })
        }
    };

    let dp = raw.dataplane;
    if let Some(b) = dp.firewall_backend.as_deref().filter(|b| *b != "nft") {
        return Err(bad(
            "dataplane.firewall_backend",
            format!("{b:?} is not supported (nft)"),
        ));
    }
    let dataplane = DataplaneConfig {
        reconcile_interval: secs(
            "dataplane.reconcile_interval_secs",
            dp.reconcile_interval_secs,
            1,
            3600,
            5,
        )?,
        isolation: dp.isolation.unwrap_or(true),
        block_private_networks: dp.block_private_networks.unwrap_or(true),
        allow_networks: allow_networks(dp.allow_networks.unwrap_or_default())?,
        shaping: dp.shaping.unwrap_or(true),
        command_timeout: secs(
            "dataplane.command_timeout_secs",
            dp.command_timeout_secs,
            1,
            600,
            crate::sys::runner::DEFAULT_TIMEOUT.as_secs(),
        )?,
    };

    let peers = PeerLifetimes {
        idle_timeout: match raw.peers.idle_timeout_secs {
            None | Some(0) => None,
            v => Some(secs("peers.idle_timeout_secs", v, 60, 365 * 86400, 0)?),
        },
        handshake_grace: secs(
            "peers.handshake_grace_secs",
            raw.peers.handshake_grace_secs,
            10,
            365 * 86400,
            600,
        )?,
    };

    let mut policy = Policy::default();
    for (name, act) in raw.inspection.policy.unwrap_or_default() {
        let key = format!("inspection.policy.{name}");
        let Some(proto) = Protocol::ALL.into_iter().find(|p| p.as_str() == name) else {
            let names: Vec<&str> = Protocol::ALL.iter().map(|p| p.as_str()).collect();
            return Err(bad(
                &key,
                format!("unknown protocol (one of {})", names.join(", ")),
            ));
        };
        policy.set(proto, action(&key, &act)?);
    }
    let inspection = InspectionConfig {
        enabled: raw.inspection.enabled.unwrap_or(true),
        log_hostnames: raw.inspection.log_hostnames.unwrap_or(false),
        policy,
    };

    let state_dir = PathBuf::from(
        raw.state_dir
            .unwrap_or_else(|| "/var/lib/waylume-server".into()),
    );
    if !state_dir.is_absolute() {
        return Err(bad(
            "state_dir",
            format!("{} is not an absolute path", state_dir.display()),
        ));
    }
    Ok(Config {
        server_id,
        state_dir,
        teardown_on_stop: raw.teardown_on_stop.unwrap_or(false),
        api,
        wireguard,
        node,
        supabase,
        dataplane,
        peers,
        inspection,
    })
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

fn parsed_net(key: &str, s: &str) -> Result<Ipv4Net, ConfigError> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| bad(key, format!("{s:?} is not an IPv4 network (a.b.c.d/len)")))?;
    if net != net.trunc() {
        return Err(bad(
            key,
            format!(
                "{s} is not a network address (did you mean {}?)",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

/// The subnet must not overlap a route the host already has (other than ours on `iface`).
pub fn check_subnet_overlap(
    subnet: Ipv4Net,
    routes: &[(Ipv4Net, String)],
    iface: &str,
) -> Result<(), ConfigError> {
    match routes.iter().find(|(net, dev)| {
        dev != iface
            && net.prefix_len() > 0
            && (net.contains(&subnet.network()) || subnet.contains(&net.network()))
    }) {
        Some((net, dev)) => Err(bad(
            "wireguard.subnet",
            format!("{subnet} overlaps the route {net} on {dev}"),
        )),
        None => Ok(()),
    }
}
