//! Read-back of `tc -j qdisc|class|filter show dev D` into the plan's observed form.
//! iproute2 6.1 prints HTB classes as text even with `-j`; later versions print JSON. Both are
//! accepted.
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

/// Filters under `1:`: hash tables (`fh` `X:` with a divisor) and entries (`fh` `X:B:N`).
pub fn parse_filters(json: &str, dev: &mut ObservedDev) -> Result<(), ParseError> {
    for f in array(json)? {
        let Some(o) = f.get("options") else { continue };
        let Some(fh) = s(o, "fh") else { continue };
        let parts: Vec<&str> = fh.split(':').collect();
        let hex = |x: &str| {
            if x.is_empty() {
                Some(0)
            } else {
                u32::from_str_radix(x, 16).ok()
            }
        };
        let Some(ht) = parts
            .first()
            .and_then(|x| hex(x))
            .and_then(|x| u16::try_from(x).ok())
        else {
            continue;
        };
        if let Some(d) = o.get("ht_divisor").and_then(Value::as_u64) {
            dev.tables.insert(ht, u32::try_from(d).unwrap_or(0));
            continue;
        }
        let bkt = parts
            .get(1)
            .and_then(|x| hex(x))
            .and_then(|x| u8::try_from(x).ok());
        let node = parts
            .get(2)
            .and_then(|x| hex(x))
            .and_then(|x| u16::try_from(x).ok());
        let (Some(bkt), Some(node)) = (bkt, node) else {
            continue;
        };
        let m = o.get("match");
        let mut obs = ObservedFilter {
            value: hex_u32(m.and_then(|m| m.get("value"))),
            mask: hex_u32(m.and_then(|m| m.get("mask"))),
            off: m
                .and_then(|m| m.get("off"))
                .and_then(Value::as_i64)
                .map(|x| x as i32),
            link: s(o, "link")
                .and_then(handle)
                .and_then(|(t, _)| u16::try_from(t).ok()),
            flowid: s(o, "flowid").map(String::from),
            hash: None,
        };
        if let (Some(hm), Some(ho)) = (
            hex_u32(o.get("hash_mask")),
            o.get("hash_off").and_then(Value::as_i64),
        ) {
            obs.hash = Some((hm, ho as i32));
        }
        dev.filters.insert((ht, bkt, node), obs);
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

#[cfg(test)]
mod tests;
