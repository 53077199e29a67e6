//! Host facts the plan needs, read with `ip -j`: the default-route interface (masquerade goes
//! out of it) and the networks the host has addresses in (peers may not reach them).
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::Value;

use super::Result;
use crate::core::plan::fence::{FenceInput, fenced};
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

/// The fenced networks for this host now: the fixed ranges, every network the host has an
/// address in, minus the tunnel's subnets and the allowed networks.
pub fn fenced_networks(
    runner: &dyn Runner,
    tunnel: &[IpNet],
    allow: &[IpNet],
) -> Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)> {
    let out = runner.run(&Cmd::new(["ip", "-j", "addr", "show"]))?;
    let input = FenceInput {
        host: parse_host_networks(&out)?,
        tunnel: tunnel.to_vec(),
        allow: allow.to_vec(),
    };
    Ok(fenced(&input))
}

/// The prefix of every address in `ip -j addr show`.
pub fn parse_host_networks(json: &str) -> std::result::Result<Vec<IpNet>, serde_json::Error> {
    let links: Vec<Value> = serde_json::from_str(json)?;
    let mut out = Vec::new();
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
            if let (Some(local), Some(len)) = (local, len)
                && let Ok(n) = IpNet::new(local, len)
            {
                out.push(n.trunc());
            }
        }
    }
    Ok(out)
}
