//! `inspect` over small captures written here, one per supported link type.

use std::process::Command;

use common::packets::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_waylume-server");

/// A BitTorrent flow, an HTTP flow (IPv6) and a DNS flow, as raw IP packets.
fn sample_packets() -> Vec<Vec<u8>> {
    vec![
        tcp("10.0.0.2", 40000, "192.0.2.9", 51413, 1, 0x02, b""),
        tcp("192.0.2.9", 51413, "10.0.0.2", 40000, 1, 0x12, b""),
        tcp(
            "10.0.0.2",
            40000,
            "192.0.2.9",
            51413,
            2,
            0x18,
            &bt_handshake(),
        ),
        tcp(
            "2001:db8::1",
            40001,
            "2001:db8::2",
            80,
            1,
            0x18,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        tcp(
            "2001:db8::2",
            80,
            "2001:db8::1",
            40001,
            1,
            0x18,
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ),
        udp(
            "10.0.0.2",
            50000,
            "192.0.2.53",
            53,
            &dns_query(7, "example.org"),
        ),
    ]
}

fn run_inspect(linktype: u32, frames: &[Vec<u8>], json: bool) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sample.pcap");
    std::fs::write(&path, pcap_file(linktype, frames)).expect("write capture");
    let mut cmd = Command::new(BIN);
    cmd.arg("inspect").arg("--pcap").arg(&path);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run inspect");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_sample_json(stdout: &str) {
    let flows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(flows.len(), 3, "{stdout}");
    let bt = &flows[0];
    assert_eq!(bt["l4"], "tcp");
    assert_eq!(bt["a"], "10.0.0.2:40000");
    assert_eq!(bt["b"], "192.0.2.9:51413");
    assert_eq!(bt["protocol"], "bittorrent");
    assert_eq!(bt["packets_inspected"], 1);
    assert_eq!(bt["packets"], 3);
    assert_eq!(bt["bytes"], 40 + 40 + 40 + 68);
    assert_eq!(flows[1]["a"], "[2001:db8::1]:40001");
    assert_eq!(flows[1]["protocol"], "http");
    assert_eq!(flows[2]["l4"], "udp");
    assert_eq!(flows[2]["protocol"], "dns");
}

#[test]
fn raw_ip_capture() {
    let (ok, out, err) = run_inspect(101, &sample_packets(), true);
    assert!(ok, "{err}");
    check_sample_json(&out);
}

#[test]
fn ethernet_with_vlan_tags() {
    let frames: Vec<_> = sample_packets()
        .iter()
        .enumerate()
        .map(|(i, p)| ethernet(p, &[10, 20][..i % 3]))
        .collect();
    let (ok, out, err) = run_inspect(1, &frames, true);
    assert!(ok, "{err}");
    check_sample_json(&out);
}

#[test]
fn linux_cooked_v1_and_v2() {
    let v1: Vec<_> = sample_packets().iter().map(|p| sll(p)).collect();
    let (ok, out, err) = run_inspect(113, &v1, true);
    assert!(ok, "{err}");
    check_sample_json(&out);
    let v2: Vec<_> = sample_packets().iter().map(|p| sll2(p)).collect();
    let (ok, out, err) = run_inspect(276, &v2, true);
    assert!(ok, "{err}");
    check_sample_json(&out);
}

#[test]
fn bsd_null_loopback() {
    let frames: Vec<_> = sample_packets().iter().map(|p| null(p)).collect();
    let (ok, out, err) = run_inspect(0, &frames, true);
    assert!(ok, "{err}");
    check_sample_json(&out);
}

#[test]
fn unsupported_link_type_fails_with_a_message() {
    // LINKTYPE_IEEE802_11 (105).
    let (ok, out, err) = run_inspect(105, &sample_packets(), true);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("unsupported link type"), "{err}");
}

#[test]
fn missing_file_fails() {
    let out = Command::new(BIN)
        .args(["inspect", "--pcap", "/nonexistent/none.pcap"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open capture"));
}

#[test]
fn table_output_names_each_flow() {
    let (ok, out, err) = run_inspect(101, &sample_packets(), false);
    assert!(ok, "{err}");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("l4"));
    assert!(lines[1].contains("bittorrent") && lines[1].contains("10.0.0.2:40000"));
    assert!(lines[2].contains("http"));
    assert!(lines[3].contains("dns"));
}

#[test]
fn garbage_frames_are_skipped() {
    let mut frames = vec![vec![0u8; 3], vec![0x45; 30], vec![0x60, 1, 2]];
    frames.extend(sample_packets());
    let (ok, out, err) = run_inspect(101, &frames, true);
    assert!(ok, "{err}");
    check_sample_json(&out);
}

#[test]
fn cisco_hdlc_and_ppp() {
    let hdlc: Vec<_> = sample_packets()
        .iter()
        .map(|p| {
            let mut f = vec![0x0f, 0x00];
            f.extend_from_slice(&if p[0] >> 4 == 6 { 0x86ddu16 } else { 0x0800 }.to_be_bytes());
            f.extend_from_slice(p);
            f
        })
        .collect();
    let (ok, out, err) = run_inspect(104, &hdlc, true);
    assert!(ok, "{err}");
    check_sample_json(&out);
    let ppp: Vec<_> = sample_packets()
        .iter()
        .map(|p| {
            let mut f = vec![0xff, 0x03];
            f.extend_from_slice(&if p[0] >> 4 == 6 { 0x0057u16 } else { 0x0021 }.to_be_bytes());
            f.extend_from_slice(p);
            f
        })
        .collect();
    let (ok, out, err) = run_inspect(9, &ppp, true);
    assert!(ok, "{err}");
    check_sample_json(&out);
}

#[test]
fn tracker_requests_are_http_with_the_bittorrent_app() {
    let announce = tcp(
        "10.0.0.2",
        40100,
        "192.0.2.7",
        6969,
        1,
        0x18,
        b"GET /announce?info_hash=%aa%bb&peer_id=-XX-&port=6881 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let (ok, out, err) = run_inspect(101, &[announce], true);
    assert!(ok, "{err}");
    let flow: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(flow["protocol"], "http");
    assert_eq!(flow["app"], "bittorrent");
}
