use super::*;
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn peer(id: &str, handshake: Option<u64>, cap: Option<u64>) -> Value {
    json!({
        "peer_id": id,
        "address": "10.0.0.2",
        "session_id": "first",
        "status": "active",
        "speed_limit": {"download_kbps": 2000, "upload_kbps": null},
        "data_cap_bytes": cap,
        "stats": {
            "rx_bytes": 1_572_864,
            "tx_bytes": 512,
            "last_handshake": handshake,
            "cap_used_bytes": 1_073_741_824u64,
            "protocols": {"tls": {"bytes": 2048, "flows": 1}},
        },
    })
}

#[test]
fn a_table_line_per_peer_with_aligned_columns() {
    let text = table(
        &[
            peer("a1", Some(NOW - 120), Some(10 * 1_073_741_824)),
            peer("b2-longer-id", None, None),
        ],
        NOW,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ID "), "{text}");
    assert!(
        lines[1].contains("1.5 MiB") && lines[1].contains("512 B"),
        "{text}"
    );
    assert!(lines[1].contains("2 min ago"), "{text}");
    assert!(lines[1].contains("2 Mbit/s/∞"), "{text}");
    assert!(lines[1].contains("1.0 GiB/10.0 GiB"), "{text}");
    assert!(lines[2].contains("never"), "{text}");
    // Columns line up: every field starts at the header's offset.
    let col = |l: &str, what: &str| l.find(what).map(|b| l[..b].chars().count());
    assert_eq!(col(lines[0], "ADDRESS"), col(lines[1], "10.0.0.2"));
    assert_eq!(col(lines[0], "ADDRESS"), col(lines[2], "10.0.0.2"));
    assert_eq!(table(&[], NOW), "no peers\n");
}

#[test]
fn details_show_one_peer_as_lines() {
    let text = details(&peer("a1", Some(NOW - 7200), None), NOW);
    assert!(text.contains("id:             a1\n"), "{text}");
    assert!(text.contains("handshake:      2 h ago\n"), "{text}");
    assert!(text.contains("protocols:      tls 2.0 KiB\n"), "{text}");
}

#[test]
fn human_units() {
    assert_eq!(bytes(0), "0 B");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(1024), "1.0 KiB");
    assert_eq!(bytes(u64::MAX), "16.0 EiB");
    assert_eq!(ago(NOW, NOW + 5), "just now");
    assert_eq!(ago(NOW, NOW - 42), "42 s ago");
    assert_eq!(ago(NOW, NOW - 3599), "59 min ago");
    assert_eq!(ago(NOW, NOW - 86_400), "1 day ago");
    assert_eq!(ago(NOW, NOW - 3 * 86_400), "3 days ago");
    assert_eq!(rate(&json!(500)), "500 kbit/s");
    assert_eq!(rate(&json!(1500)), "1.5 Mbit/s");
    assert_eq!(rate(&json!(100_000_000)), "100 Gbit/s");
    assert_eq!(rate(&Value::Null), "∞");
}
