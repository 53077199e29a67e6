//! Host facts the plan needs, read with `ip -j`: the default-route interface (masquerade goes
//! out of it) and the host's directly connected private networks (peers may not reach them).
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::Value;

use super::Result;
use crate::sys::runner::{Cmd, Runner};

/// The interface of the IPv4 default route, if there is one.
pub fn default_route_interface(runner: &dyn Runner) -> Result<Option<String>> {
    let out = runner.run(&Cmd::new(["ip", "-j", "-4", "route", "show", "default"]))?;
    Ok(parse_default_route(&out)?)
}

pub fn parse_default_route(json: &str) -> std::result::Result<Option<String>, serde_json::Error> {
    let v: Vec<Value> = serde_json::from_str(json)?;
    Ok(v.iter()
        .find_map(|r| r.get("dev").and_then(Value::as_str))
        .map(String::from))
}

const PRIVATE_V4: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];

/// 169.254.0.0/16 and fe80::/10 always, plus every private network an address of this host
/// sits in, except the tunnel's own subnets.
pub fn blocked_defaults(
    runner: &dyn Runner,
    tunnel: Ipv4Net,
    tunnel_v6: Option<Ipv6Net>,
) -> Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)> {
    let out = runner.run(&Cmd::new(["ip", "-j", "addr", "show"]))?;
    Ok(parse_blocked(&out, tunnel, tunnel_v6)?)
}

pub fn parse_blocked(
    json: &str,
    tunnel: Ipv4Net,
    tunnel_v6: Option<Ipv6Net>,
) -> std::result::Result<(Vec<Ipv4Net>, Vec<Ipv6Net>), serde_json::Error> {
    let links: Vec<Value> = serde_json::from_str(json)?;
    let private: Vec<Ipv4Net> = PRIVATE_V4.iter().filter_map(|s| s.parse().ok()).collect();
    let ula: Option<Ipv6Net> = "fc00::/7".parse().ok();
    let mut v4: Vec<Ipv4Net> = private
        .iter()
        .filter(|n| n.prefix_len() == 16 && n.network().octets()[0] == 169)
        .copied()
        .collect();
    let mut v6: Vec<Ipv6Net> = "fe80::/10".parse().into_iter().collect();
    for link in &links {
        let addrs = link.get("addr_info").and_then(Value::as_array);
        for a in addrs.into_iter().flatten() {
            let local = a
                .get("local")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            let len = a
                .get("prefixlen")
                .and_then(Value::as_u64)
                .and_then(|l| u8::try_from(l).ok());
            let (Some(local), Some(len)) = (local, len) else {
                continue;
            };
            match IpNet::new(local, len).map(|n| n.trunc()) {
                Ok(IpNet::V4(n)) => {
                    let is_private = private.iter().any(|p| p.contains(&n.network()));
                    let overlaps = tunnel.contains(&n.network()) || n.contains(&tunnel.network());
                    if is_private && !overlaps && !n.network().is_loopback() {
                        v4.push(n);
                    }
                }
                Ok(IpNet::V6(n)) => {
                    let is_ula = ula.is_some_and(|u| u.contains(&n.network()));
                    let overlaps = tunnel_v6
                        .is_some_and(|t| t.contains(&n.network()) || n.contains(&t.network()));
                    if is_ula && !overlaps {
                        v6.push(n);
                    }
                }
                Err(_) => {}
            }
        }
    }
    Ok((Ipv4Net::aggregate(&v4), Ipv6Net::aggregate(&v6)))
}
