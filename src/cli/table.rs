//! The operator client's terminal view of peers: one compact line per peer, the way `wg show`
//! reads, built from the API's JSON (the same document `--json` prints). Pure: the current time
//! is an argument.
use serde_json::Value;

const HEADER: [&str; 9] = [
    "ID",
    "ADDRESS",
    "SESSION",
    "STATUS",
    "RX",
    "TX",
    "HANDSHAKE",
    "LIMIT ↓/↑",
    "CAP USED/TOTAL",
];

/// The table for a list of peers (`GET /api/peers`'s `peers`), columns padded to their widest
/// cell. `now` is Unix seconds.
pub fn table(peers: &[Value], now: u64) -> String {
    if peers.is_empty() {
        return "no peers\n".into();
    }
    let rows: Vec<[String; 9]> = peers.iter().map(|p| row(p, now)).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for cells in std::iter::once(HEADER.map(str::to_string)).chain(rows) {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One peer as `key: value` lines, for `peers get`.
pub fn details(p: &Value, now: u64) -> String {
    let cells = row(p, now);
    let mut out = String::new();
    for (name, value) in HEADER.iter().zip(cells) {
        out.push_str(&format!(
            "{:<15} {value}\n",
            format!("{}:", name.to_lowercase())
        ));
    }
    for (name, key) in [
        ("public key:", "public_key"),
        ("user:", "user_id"),
        ("endpoint:", "endpoint"),
    ] {
        if let Some(v) = p[key].as_str() {
            out.push_str(&format!("{name:<15} {v}\n"));
        }
    }
    if let Some(v6) = p["address_v6"].as_str() {
        out.push_str(&format!("{:<15} {v6}\n", "address v6:"));
    }
    if let Some(protocols) = p["stats"]["protocols"]
        .as_object()
        .filter(|m| !m.is_empty())
    {
        let parts: Vec<String> = protocols
            .iter()
            .map(|(name, v)| format!("{name} {}", bytes(v["bytes"].as_u64().unwrap_or(0))))
            .collect();
        out.push_str(&format!("{:<15} {}\n", "protocols:", parts.join(", ")));
    }
    out
}

fn row(p: &Value, now: u64) -> [String; 9] {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let stats = &p["stats"];
    let limit = &p["speed_limit"];
    let cap = match p["data_cap_bytes"].as_u64() {
        Some(total) => format!(
            "{}/{}",
            bytes(stats["cap_used_bytes"].as_u64().unwrap_or(0)),
            bytes(total)
        ),
        None => "-".into(),
    };
    [
        text(&p["peer_id"]),
        text(&p["address"]),
        text(&p["session_id"]),
        text(&p["status"]),
        bytes(stats["rx_bytes"].as_u64().unwrap_or(0)),
        bytes(stats["tx_bytes"].as_u64().unwrap_or(0)),
        stats["last_handshake"]
            .as_u64()
            .map_or_else(|| "never".into(), |t| ago(now, t)),
        if limit["download_kbps"].is_null() && limit["upload_kbps"].is_null() {
            "-".into()
        } else {
            format!(
                "{}/{}",
                rate(&limit["download_kbps"]),
                rate(&limit["upload_kbps"])
            )
        },
        cap,
    ]
}

/// Bytes in binary units with one decimal: `0 B`, `1023 B`, `1.5 KiB`, `12.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A rate in kbit/s as people say it: `500 kbit/s`, `2 Mbit/s`, `1.5 Gbit/s`; none is `∞`.
fn rate(kbps: &Value) -> String {
    let Some(k) = kbps.as_u64() else {
        return "∞".into();
    };
    let (v, unit) = match k {
        k if k >= 1_000_000 => (k as f64 / 1_000_000.0, "Gbit/s"),
        k if k >= 1_000 => (k as f64 / 1_000.0, "Mbit/s"),
        k => (k as f64, "kbit/s"),
    };
    let v = format!("{v:.1}");
    format!("{} {unit}", v.strip_suffix(".0").unwrap_or(&v))
}

/// How long ago `then` was: `just now`, `42 s ago`, `2 min ago`, `3 h ago`, `5 days ago`.
pub fn ago(now: u64, then: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..=4 => "just now".into(),
        5..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86_399 => format!("{} h ago", d / 3600),
        86_400..=172_799 => "1 day ago".into(),
        _ => format!("{} days ago", d / 86_400),
    }
}

#[cfg(test)]
mod tests;
