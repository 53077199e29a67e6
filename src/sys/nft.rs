//! Read-back of `nft -j list table inet waylume` into the plan's observed form.
use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::core::plan::{ObservedChain, ObservedNft, ObservedQuota, TABLE};

pub mod netlink;
pub mod wire;

pub use netlink::{NetlinkError, NfSocket, NftLink};

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("nft output is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("nft output has no `nftables` array")]
    Shape,
}

/// Parses the JSON listing; objects of other tables (from `list ruleset`) are ignored.
pub fn parse_table(json: &str) -> Result<ObservedNft, ParseError> {
    let v: Value = serde_json::from_str(json)?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(ParseError::Shape)?;
    let mut o = ObservedNft::default();
    for item in items {
        let Some((kind, body)) = item.as_object().and_then(|m| m.iter().next()) else {
            continue;
        };
        let ours = body.get("family").and_then(Value::as_str) == Some("inet")
            && (body.get("table").and_then(Value::as_str) == Some(TABLE));
        if !ours {
            continue;
        }
        let name = str_of(body, "name");
        match kind.as_str() {
            "chain" => {
                let c = o.chains.entry(name).or_default();
                c.kind = body.get("type").and_then(Value::as_str).map(String::from);
                c.hook = body.get("hook").and_then(Value::as_str).map(String::from);
                c.prio = body.get("prio").and_then(Value::as_i64).map(|p| p as i32);
                c.policy = body.get("policy").and_then(Value::as_str).map(String::from);
            }
            "rule" => {
                let chain = str_of(body, "chain");
                let comment = body
                    .get("comment")
                    .and_then(Value::as_str)
                    .map(String::from);
                o.chains
                    .entry(chain)
                    .or_insert_with(ObservedChain::default)
                    .comments
                    .push(comment);
            }
            "quota" => {
                let q = ObservedQuota {
                    bytes: body.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                    used: body.get("used").and_then(Value::as_u64).unwrap_or(0),
                    inv: body.get("inv").and_then(Value::as_bool).unwrap_or(false),
                };
                o.quotas.insert(name, q);
            }
            "set" => {
                let ty = str_of(body, "type");
                let elems = elems(body).iter().filter_map(set_elem).collect();
                o.sets.insert(name, (ty, elems));
            }
            "map" => map(&mut o, name, body),
            _ => {}
        }
    }
    Ok(o)
}

fn str_of(body: &Value, key: &str) -> String {
    body.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn elems(body: &Value) -> Vec<Value> {
    body.get("elem")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `"1.2.3.4"` → `1.2.3.4/32`; `{"prefix": {"addr", "len"}}` → `addr/len`.
fn set_elem(e: &Value) -> Option<String> {
    let e = e.get("elem").and_then(|x| x.get("val")).unwrap_or(e);
    if let Some(s) = e.as_str() {
        let ip: IpAddr = s.parse().ok()?;
        return Some(IpNet::from(ip).to_string());
    }
    let p = e.get("prefix")?;
    let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
    let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
    IpNet::new(addr, len).ok().map(|n| n.to_string())
}

fn map(o: &mut ObservedNft, name: String, body: &Value) {
    let ty = body.get("type").and_then(Value::as_str);
    let to = body.get("map").and_then(Value::as_str);
    let pairs = elems(body).into_iter().filter_map(|e| {
        let pair = e.as_array()?;
        let key: IpAddr = pair.first()?.as_str()?.parse().ok()?;
        let val = pair.get(1)?.as_str()?.to_string();
        Some((key, val))
    });
    match (ty, to) {
        (Some("ipv4_addr"), Some("quota")) => {
            let m = pairs
                .filter_map(|(k, v)| match k {
                    IpAddr::V4(a) => Some((a, v)),
                    IpAddr::V6(_) => None,
                })
                .collect();
            o.maps4.insert(name, m);
        }
        (Some("ipv6_addr"), Some("quota")) => {
            let m = pairs
                .filter_map(|(k, v)| match k {
                    IpAddr::V6(a) => Some((a, v)),
                    IpAddr::V4(_) => None,
                })
                .collect();
            o.maps6.insert(name, m);
        }
        _ => {
            o.other_maps.insert(name);
        }
    }
}

/// Whether `nft` said the table does not exist (an answer, not a failure).
pub fn is_missing_table(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

/// Normalised element strings of a set, for tests and logs.
pub fn set_elems(obs: &ObservedNft, name: &str) -> BTreeSet<String> {
    obs.sets
        .get(name)
        .map(|(_, e)| e.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
