//! Each detector on packets built here from the protocol specifications.

use common::packets::*;
use waylume::core::classify::{Classifier, ClassifierConfig, FlowKey, Protocol};
use waylume::core::packet::{self, TCP_SYN};

const C: &str = "10.0.0.2";
const S: &str = "192.0.2.9";

/// Feeds packets (raw IP) in order, one millisecond apart; returns the protocol of the first
/// packet's flow and how many packets were inspected.
fn classify(packets: &[Vec<u8>]) -> (Protocol, bool, u32) {
    let mut c = Classifier::new(ClassifierConfig::default());
    let first = packet::parse_ip(&packets[0]).expect("first packet parses");
    let (key, _) = FlowKey::of(&first);
    for (i, p) in packets.iter().enumerate() {
        let p = packet::parse_ip(p).expect("test packet parses");
        c.observe(i as u64 * 1000, &p, &mut |_| {});
    }
    let r = c.get(&key).expect("flow is tracked");
    (r.protocol, r.tracker, r.packets_inspected)
}

fn proto(packets: &[Vec<u8>]) -> Protocol {
    classify(packets).0
}

#[test]
fn bittorrent_handshake_over_tcp() {
    let syn = tcp(C, 40000, S, 51413, 1, TCP_SYN, b"");
    let hs = tcp(C, 40000, S, 51413, 2, 0x18, &bt_handshake());
    let (p, tracker, inspected) = classify(&[syn, hs]);
    assert_eq!((p, tracker, inspected), (Protocol::Bittorrent, false, 1));
}

#[test]
fn bittorrent_handshake_split_over_two_segments() {
    let hs = bt_handshake();
    let first = tcp(C, 40000, S, 6881, 100, 0x18, &hs[..7]);
    let second = tcp(C, 40000, S, 6881, 107, 0x18, &hs[7..]);
    assert_eq!(proto(std::slice::from_ref(&first)), Protocol::Unknown);
    assert_eq!(proto(&[first, second]), Protocol::Bittorrent);
}

#[test]
fn dht_query_is_bittorrent() {
    let q = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    assert_eq!(proto(&[udp(C, 6881, S, 6881, q)]), Protocol::Bittorrent);
}

#[test]
fn bencode_that_is_not_dht_is_not_bittorrent() {
    // Valid bencode, but no message type: not a DHT message.
    let d = b"d3:foo3:bar4:spami42ee";
    assert_eq!(proto(&[udp(C, 6881, S, 6881, d)]), Protocol::Unknown);
    // A DHT message followed by trailing bytes is not one datagram of bencode.
    let trailing = b"d1:t2:aa1:y1:qeXYZ";
    assert_eq!(proto(&[udp(C, 6881, S, 6881, trailing)]), Protocol::Unknown);
}

#[test]
fn udp_tracker_connect_and_local_discovery() {
    let mut connect = 0x0417_2710_1980u64.to_be_bytes().to_vec();
    connect.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(
        proto(&[udp(C, 50000, S, 6969, &connect)]),
        Protocol::Bittorrent
    );
    let lsd = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n\r\n";
    assert_eq!(
        proto(&[udp(C, 6771, "239.192.152.143", 6771, lsd)]),
        Protocol::Bittorrent
    );
}

#[test]
fn utp_handshake_syn_and_state() {
    let syn = udp(C, 50000, S, 6881, &utp(4, 0x1234, 1000, 77, 0, b""));
    let state = udp(S, 6881, C, 50000, &utp(2, 0x1234, 5000, 900, 77, b""));
    assert_eq!(proto(std::slice::from_ref(&syn)), Protocol::Unknown);
    assert_eq!(proto(&[syn, state]), Protocol::Bittorrent);
}

#[test]
fn utp_state_that_does_not_acknowledge_the_syn_is_not_enough() {
    let syn = udp(C, 50000, S, 6881, &utp(4, 0x1234, 1000, 77, 0, b""));
    let state = udp(S, 6881, C, 50000, &utp(2, 0x1234, 5000, 900, 78, b""));
    assert_eq!(proto(&[syn, state]), Protocol::Unknown);
}

#[test]
fn utp_one_way_needs_a_consistent_run() {
    let data = |ts, seq| udp(C, 50000, S, 6881, &utp(0, 7, ts, seq, 40, b"payload"));
    assert_eq!(proto(&[data(1000, 1), data(2000, 2)]), Protocol::Unknown);
    assert_eq!(
        proto(&[data(1000, 1), data(2000, 2), data(3000, 3)]),
        Protocol::Bittorrent
    );
    // Repeated identical packets (a constant header) are not a uTP connection.
    assert_eq!(
        proto(&[data(10, 1), data(10, 1), data(10, 1), data(10, 1)]),
        Protocol::Unknown
    );
}

#[test]
fn stun_binding_response_is_not_utp() {
    // 0x0101 would read as uTP DATA version 1; the STUN magic cookie rules it out.
    let mut stun = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0, 0x20, 0, 8, 0, 1, 0x12, 0x34, 1, 2, 3, 4]);
    let pkts: Vec<_> = (0..6).map(|_| udp(C, 50000, S, 3478, &stun)).collect();
    assert_eq!(proto(&pkts), Protocol::Unknown);
}

#[test]
fn http_request_response_and_tracker() {
    let get = tcp(
        C,
        40001,
        S,
        80,
        1,
        0x18,
        b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n",
    );
    assert_eq!(classify(&[get]), (Protocol::Http, false, 1));
    let resp = tcp(S, 8080, C, 40002, 1, 0x18, b"HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!(proto(&[resp]), Protocol::Http);
    let announce = tcp(
        C,
        40003,
        S,
        6969,
        1,
        0x18,
        b"GET /announce?info_hash=%12%34&peer_id=-XX0001-&port=6881 HTTP/1.0\r\n\r\n",
    );
    assert_eq!(classify(&[announce]), (Protocol::Http, true, 1));
    // SSDP-like text with an unknown method is not HTTP.
    let other = tcp(C, 40004, S, 80, 1, 0x18, b"HELLO / HTTP/1.1\r\n\r\n");
    assert_eq!(proto(&[other]), Protocol::Unknown);
}

#[test]
fn ssh_banner() {
    let b = tcp(S, 22, C, 40005, 1, 0x18, b"SSH-2.0-OpenSSH_9.6\r\n");
    assert_eq!(proto(&[b]), Protocol::Ssh);
    let bad = tcp(S, 22, C, 40006, 1, 0x18, b"SSH-two-OpenSSH\r\n");
    assert_eq!(proto(&[bad]), Protocol::Unknown);
}

#[test]
fn tls_client_hello_whole_and_split() {
    let hello = client_hello("example.org", 1500);
    assert_eq!(
        proto(&[tcp(C, 40007, S, 443, 1, 0x18, &hello)]),
        Protocol::Tls
    );
    // Split after 3 bytes: too little to judge until the next segment arrives.
    let a = tcp(C, 40008, S, 443, 1, 0x18, &hello[..3]);
    let b = tcp(C, 40008, S, 443, 4, 0x18, &hello[3..]);
    assert_eq!(proto(std::slice::from_ref(&a)), Protocol::Unknown);
    assert_eq!(proto(&[a, b]), Protocol::Tls);
}

#[test]
fn tls_split_hello_with_a_gap_is_not_reassembled() {
    let hello = client_hello("example.org", 100);
    let a = tcp(C, 40009, S, 443, 1, 0x18, &hello[..3]);
    let b = tcp(C, 40009, S, 443, 50, 0x18, &hello[3..]);
    assert_eq!(proto(&[a, b]), Protocol::Unknown);
}

#[test]
fn tls_application_data_mid_stream() {
    let mut rec = vec![23, 3, 3, 0, 32];
    rec.extend_from_slice(&[0xaa; 32]);
    assert_eq!(
        proto(&[tcp(C, 40010, S, 443, 1, 0x18, &rec)]),
        Protocol::Tls
    );
    // The same header with a length that does not fit the segment is only a hint.
    let mut short = vec![23, 3, 3, 0x10, 0];
    short.extend_from_slice(&[0xaa; 32]);
    assert_eq!(
        proto(&[tcp(C, 40011, S, 443, 1, 0x18, &short)]),
        Protocol::Unknown
    );
}

#[test]
fn quic_initials_of_each_version() {
    for (version, first) in [
        (1u32, 0xc3u8),
        (0x6b33_43cf, 0xd3),
        (0xff00_001d, 0xc3),
        (0x1a2a_3a4a, 0xc0),
    ] {
        let p = udp(C, 50001, S, 443, &quic_initial(version, first, 1250));
        assert_eq!(proto(&[p]), Protocol::Quic, "version {version:#x}");
    }
    // Q050 and T051 use the IETF form; Q046 packs the id lengths in one byte.
    for tag in [*b"Q050", *b"T051"] {
        let p = udp(
            C,
            50002,
            S,
            443,
            &quic_initial(u32::from_be_bytes(tag), 0xc3, 1350),
        );
        assert_eq!(proto(&[p]), Protocol::Quic);
    }
    let mut q046 = vec![0xc3];
    q046.extend_from_slice(b"Q046");
    q046.push(0x50);
    q046.resize(1350, 0);
    assert_eq!(proto(&[udp(C, 50003, S, 443, &q046)]), Protocol::Quic);
    // Google QUIC Q043: public flags 0x0d, 8-byte connection id, version tag.
    let mut q043 = vec![0x0d];
    q043.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    q043.extend_from_slice(b"Q043");
    q043.resize(1350, 0);
    assert_eq!(proto(&[udp(C, 50004, S, 443, &q043)]), Protocol::Quic);
}

#[test]
fn quic_v1_initial_must_be_padded() {
    let small = udp(C, 50005, S, 443, &quic_initial(1, 0xc3, 300));
    assert_eq!(proto(&[small]), Protocol::Unknown);
    // A v2 packet with the v1 Initial type bits is not an Initial.
    let wrong = udp(C, 50006, S, 443, &quic_initial(0x6b33_43cf, 0xc3, 1250));
    assert_eq!(proto(&[wrong]), Protocol::Unknown);
}

#[test]
fn dns_over_udp_and_tcp_on_port_53_only() {
    let q = dns_query(0x1234, "example.org");
    assert_eq!(proto(&[udp(C, 50007, S, 53, &q)]), Protocol::Dns);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    assert_eq!(
        proto(&[tcp(C, 40012, S, 53, 1, 0x18, &framed)]),
        Protocol::Dns
    );
    // mDNS uses the same format on another port: a different protocol.
    assert_eq!(
        proto(&[udp(C, 5353, "224.0.0.251", 5353, &q)]),
        Protocol::Unknown
    );
    // Garbage on port 53 is not DNS.
    assert_eq!(
        proto(&[udp(C, 50008, S, 53, &[0xff; 40])]),
        Protocol::Unknown
    );
}

#[test]
fn budget_stops_inspection() {
    let junk: Vec<_> = (0..20)
        .map(|i| tcp(C, 40013, S, 9999, i * 10, 0x18, &[0x99; 10]))
        .collect();
    let (p, _, inspected) = classify(&junk);
    assert_eq!(p, Protocol::Unknown);
    assert_eq!(inspected, u32::from(ClassifierConfig::default().budget));
    // A handshake after the budget is spent is not looked at.
    let mut late = junk[..8].to_vec();
    late.push(tcp(C, 40013, S, 9999, 999, 0x18, &bt_handshake()));
    assert_eq!(proto(&late), Protocol::Unknown);
}

#[test]
fn ipv6_flows_classify_too() {
    let get = tcp(
        "2001:db8::1",
        40014,
        "2001:db8::2",
        80,
        1,
        0x18,
        b"HEAD / HTTP/1.1\r\n\r\n",
    );
    assert_eq!(proto(&[get]), Protocol::Http);
}

#[test]
fn http_request_line_split_over_segments() {
    let a = tcp(C, 40015, S, 80, 1, 0x18, b"GE");
    let b = tcp(C, 40015, S, 80, 3, 0x18, b"T /x HT");
    let c = tcp(C, 40015, S, 80, 10, 0x18, b"TP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(proto(&[a.clone(), b.clone()]), Protocol::Unknown);
    assert_eq!(classify(&[a, b, c]), (Protocol::Http, false, 3));
}

#[test]
fn a_new_syn_after_fin_starts_a_new_flow() {
    let mut c = Classifier::new(ClassifierConfig::default());
    let mut ended = Vec::new();
    let pkts = [
        tcp(C, 40016, S, 80, 1, TCP_SYN, b""),
        tcp(C, 40016, S, 80, 2, 0x18, b"GET / HTTP/1.1\r\n\r\n"),
        tcp(C, 40016, S, 80, 20, 0x11, b""),
        tcp(C, 40016, S, 80, 5000, TCP_SYN, b""),
        tcp(C, 40016, S, 80, 5001, 0x18, &bt_handshake()),
    ];
    for (i, p) in pkts.iter().enumerate() {
        let p = packet::parse_ip(p).expect("parses");
        c.observe(i as u64, &p, &mut |r| ended.push(r));
    }
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].protocol, ended[0].packets), (Protocol::Http, 3));
    c.drain(&mut |r| ended.push(r));
    assert_eq!(
        (ended[1].protocol, ended[1].packets),
        (Protocol::Bittorrent, 2)
    );
}

#[test]
fn policy_applies_the_stricter_action_to_tracker_requests() {
    use waylume::core::classify::{Action, Policy};
    let policy: Policy = [
        (Protocol::Bittorrent, Action::Block),
        (Protocol::Quic, Action::Throttle),
    ]
    .into_iter()
    .collect();
    assert_eq!(policy.decide(Protocol::Http, false), Action::Report);
    assert_eq!(policy.decide(Protocol::Http, true), Action::Block);
    assert_eq!(policy.decide(Protocol::Quic, false), Action::Throttle);
    let action: Action = serde_json::from_str("\"throttle\"").expect("lowercase names");
    assert_eq!(action, Action::Throttle);
    let proto: Protocol = serde_json::from_str("\"bittorrent\"").expect("lowercase names");
    assert_eq!(proto, Protocol::Bittorrent);
}

/// The hostname kept for the flow of `packets`, with hostnames on or off.
fn hostname(packets: &[Vec<u8>], keep: bool) -> Option<String> {
    let mut c = Classifier::new(ClassifierConfig {
        keep_hostnames: keep,
        ..Default::default()
    });
    let first = packet::parse_ip(&packets[0]).expect("parses");
    for (i, p) in packets.iter().enumerate() {
        let p = packet::parse_ip(p).expect("parses");
        c.observe(i as u64, &p, &mut |_| {});
    }
    c.hostname(&FlowKey::of(&first).0).map(str::to_owned)
}

#[test]
fn hostnames_only_when_asked_for() {
    let hello = tcp(
        C,
        40017,
        S,
        443,
        1,
        0x18,
        &client_hello("video.example.org", 200),
    );
    assert_eq!(
        hostname(std::slice::from_ref(&hello), true).as_deref(),
        Some("video.example.org")
    );
    assert_eq!(hostname(&[hello], false), None);
    let get = tcp(
        C,
        40018,
        S,
        80,
        1,
        0x18,
        b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT: www.example.net:8080\r\n\r\n",
    );
    assert_eq!(
        hostname(&[get], true).as_deref(),
        Some("www.example.net:8080")
    );
    // A header value that is not a hostname is not kept.
    let odd = tcp(
        C,
        40019,
        S,
        80,
        1,
        0x18,
        b"GET / HTTP/1.1\r\nHost: <script>\r\n\r\n",
    );
    assert_eq!(hostname(&[odd], true), None);
}
