//! Read-back of `tc -j qdisc|class|filter show dev D` into the plan's observed form.
//! iproute2 6.1 prints HTB classes as text even with `-j`; later versions print JSON. Both are
//! accepted.
use serde::Deserialize;
use serde_json::Value;

use crate::core::plan::{ObservedClass, ObservedDev, ObservedFilter, Rate};

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("tc output is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn array(json: &str) -> Result<Vec<Value>, ParseError> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_str::<Vec<Value>>(json)?)
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `"1:a"` → `(1, 0xa)`; `"a:"` → `(0xa, 0)`.
fn handle(h: &str) -> Option<(u32, u32)> {
    let (maj, min) = h.split_once(':')?;
    let hex = |x: &str| {
        if x.is_empty() {
            Some(0)
        } else {
            u32::from_str_radix(x, 16).ok()
        }
    };
    Some((hex(maj)?, hex(min)?))
}

/// Minor of a class `1:x`, if it belongs to our root.
fn our_minor(h: &str) -> Option<u16> {
    match handle(h)? {
        (1, m) => u16::try_from(m).ok(),
        _ => None,
    }
}

pub fn parse_qdiscs(json: &str, dev: &mut ObservedDev) -> Result<(), ParseError> {
    for q in array(json)? {
        let kind = s(&q, "kind").unwrap_or_default();
        let h = s(&q, "handle").unwrap_or_default();
        let root = q.get("root").and_then(Value::as_bool).unwrap_or(false);
        if root {
            dev.root_htb = kind == "htb" && h == "1:";
            dev.root_other = !dev.root_htb && h != "0:";
        } else if kind == "ingress" {
            dev.ingress = true;
        } else if let Some(m) = s(&q, "parent").and_then(our_minor) {
            let limit = q
                .get("options")
                .and_then(|o| o.get("limit"))
                .and_then(Value::as_u64);
            dev.leaves.insert(m, (kind.to_string(), limit));
        }
    }
    Ok(())
}

pub fn parse_classes(out: &str, dev: &mut ObservedDev) -> Result<(), ParseError> {
    if out.trim_start().starts_with('[') {
        for c in array(out)? {
            let Some(m) = s(&c, "handle").and_then(our_minor) else {
                continue;
            };
            let rate = |k: &str| match c.get(k) {
                Some(Value::Number(n)) => Rate::Bytes(n.as_u64().unwrap_or(0)),
                Some(Value::String(t)) => Rate::Text(t.clone()),
                _ => Rate::Bytes(0),
            };
            let parent = s(&c, "parent").map(String::from);
            dev.classes.insert(
                m,
                ObservedClass {
                    parent,
                    rate: rate("rate"),
                    ceil: rate("ceil"),
                },
            );
        }
        return Ok(());
    }
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 3 || t[0] != "class" || t[1] != "htb" {
            continue;
        }
        let Some(m) = our_minor(t[2]) else { continue };
        let after = |k: &str| t.iter().position(|x| *x == k).and_then(|i| t.get(i + 1));
        let parent = after("parent").map(|p| p.to_string());
        let rate = |k: &str| Rate::Text(after(k).map(|x| x.to_string()).unwrap_or_default());
        dev.classes.insert(
            m,
            ObservedClass {
                parent,
                rate: rate("rate"),
                ceil: rate("ceil"),
            },
        );
    }
    Ok(())
}

fn hex_u32(v: Option<&Value>) -> Option<u32> {
    u32::from_str_radix(v?.as_str()?, 16).ok()
}

/// A JSON object read as its key/value pairs in order, repeated keys kept: tc prints one
/// `"match"` key per match key of a u32 filter, in one object.
#[derive(Debug, Default)]
struct Pairs(Vec<(String, Value)>);

impl Pairs {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = m.next_entry::<String, Value>()? {
                    v.push(kv);
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// One entry of `tc -j filter show`: a priority's header (no options), a hash table or a
/// filter.
#[derive(Debug, Deserialize)]
struct FilterEntry {
    protocol: Option<String>,
    pref: Option<u16>,
    kind: Option<String>,
    options: Option<Pairs>,
}

/// `"10:2:1"` → `(0x10, 2, 1)`; `"800:"` → `(0x800, 0, 0)`; empty parts are zero.
fn u32_handle(fh: &str) -> Option<(u16, u8, u16)> {
    let mut parts = fh.split(':').map(|x| {
        if x.is_empty() {
            Some(0)
        } else {
            u32::from_str_radix(x, 16).ok()
        }
    });
    let ht = u16::try_from(parts.next()??).ok()?;
    let bkt = u8::try_from(parts.next().unwrap_or(Some(0))?).ok()?;
    let node = u16::try_from(parts.next().unwrap_or(Some(0))?).ok()?;
    Some((ht, bkt, node))
}

/// Filters under `1:` by priority: hash tables (`fh` `X:` with a divisor; the kernel numbers
/// each priority's root `800:` and up) and entries (`fh` `X:B:N`).
pub fn parse_filters(json: &str, dev: &mut ObservedDev) -> Result<(), ParseError> {
    if json.trim().is_empty() {
        return Ok(());
    }
    for f in serde_json::from_str::<Vec<FilterEntry>>(json)? {
        let Some(pref) = f.pref else { continue };
        let prio = dev.prios.entry(pref).or_default();
        prio.kind = f.kind.unwrap_or_default();
        prio.protocol = f.protocol.unwrap_or_default();
        let Some(o) = f.options else { continue };
        let Some((ht, bkt, node)) = o.get("fh").and_then(Value::as_str).and_then(u32_handle) else {
            continue;
        };
        if let Some(d) = o.get("ht_divisor").and_then(Value::as_u64) {
            if ht & 0x800 != 0 {
                prio.root = Some(ht);
            } else {
                prio.tables.insert(ht, u32::try_from(d).unwrap_or(0));
            }
            continue;
        }
        let keys = o
            .all("match")
            .filter_map(|m| {
                let off = m.get("off").and_then(Value::as_i64)?;
                Some((
                    hex_u32(m.get("value"))?,
                    hex_u32(m.get("mask"))?,
                    i32::try_from(off).ok()?,
                ))
            })
            .collect();
        let hash = match (
            hex_u32(o.get("hash_mask")),
            o.get("hash_off").and_then(Value::as_i64),
        ) {
            (Some(m), Some(off)) => i32::try_from(off).ok().map(|off| (m, off)),
            _ => None,
        };
        let obs = ObservedFilter {
            keys,
            hash,
            link: o
                .get("link")
                .and_then(Value::as_str)
                .and_then(handle)
                .and_then(|(t, _)| u16::try_from(t).ok()),
            flowid: o.get("flowid").and_then(Value::as_str).map(String::from),
        };
        prio.filters.insert((ht, bkt, node), obs);
    }
    Ok(())
}

/// Filters under `ffff:`: the devices their mirred actions redirect to.
pub fn parse_ingress_filters(json: &str, dev: &mut ObservedDev) -> Result<(), ParseError> {
    for f in array(json)? {
        let actions = f
            .get("options")
            .and_then(|o| o.get("actions"))
            .and_then(Value::as_array);
        for a in actions.into_iter().flatten() {
            if s(a, "kind") == Some("mirred")
                && let Some(to) = s(a, "to_dev")
            {
                dev.redirects.push(to.to_string());
            }
        }
    }
    Ok(())
}

pub mod netlink;
pub use netlink::{TcNetlinkError, TcRead, TcSocket};

#[cfg(test)]
mod tests;
