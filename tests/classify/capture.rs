//! Live capture on the loopback interface: flows to an address of a pretend tunnel range are
//! classified, counted for the peer holding it, and reported with the policy's action; when the
//! address passes to another peer, that peer starts clean.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::packets::bt_handshake;
use waylume::core::classify::{Action, ClassifierConfig, Policy, Protocol};
use waylume::core::peer::PeerId;
use waylume::sys::capture::{self, CaptureConfig, DEFAULT_SNAPLEN, SharedStats};

/// Sends `payload` over a fresh TCP connection to `listener` and reads the echo of one byte.
fn send_over_tcp(listener: &TcpListener, payload: &[u8]) {
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(payload).expect("send");
    let mut buf = vec![0u8; payload.len()];
    server.read_exact(&mut buf).expect("receive");
    server.write_all(b"x").expect("reply");
    let mut one = [0u8; 1];
    client.read_exact(&mut one).expect("reply arrives");
}

#[test]
#[ignore = "needs root"]
fn loopback_flows_are_classified_per_peer() {
    // An address of its own in 127/8 stands for the peer, so other loopback traffic is not counted.
    let peer = Ipv4Addr::new(127, 77, (std::process::id() % 250) as u8, 1);
    let mut policy = Policy::default();
    policy.set(Protocol::Bittorrent, Action::Block);
    let cfg = CaptureConfig {
        interface: "lo".to_owned(),
        snaplen: DEFAULT_SNAPLEN,
        tunnel_nets: vec![format!("{peer}/32").parse().expect("net")],
        classifier: ClassifierConfig {
            keep_hostnames: true,
            ..ClassifierConfig::default()
        },
        policy,
    };
    // Which peer holds the address: the test hands it from one peer to the next.
    let first = PeerId::from_random([1; 16]);
    let holder = Arc::new(Mutex::new(first.clone()));
    let resolve = {
        let holder = holder.clone();
        Arc::new(move |ip: IpAddr| {
            (ip == IpAddr::V4(peer)).then(|| holder.lock().expect("holder").clone())
        })
    };
    let stats = SharedStats::default();
    let (tx, rx) = mpsc::channel();
    let handle = capture::start(cfg, stats.clone(), resolve, move |d| {
        let _ = tx.send(d.clone());
    })
    .expect("capture starts");

    let listener = TcpListener::bind((peer, 0)).expect("bind");
    send_over_tcp(&listener, &bt_handshake());
    send_over_tcp(&listener, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    send_over_tcp(&listener, b"SSH-2.0-test\r\n");

    let deadline = Instant::now() + Duration::from_secs(10);
    let traffic = loop {
        let t = stats.lock().expect("stats").peers.get(&first).copied();
        if let Some(t) = t.filter(|t| {
            t.flows_of(Protocol::Ssh) >= 1
                && t.flows_of(Protocol::Bittorrent) >= 1
                && t.flows_of(Protocol::Http) >= 1
        }) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "peer counters never showed the flows: {t:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(traffic.bytes_of(Protocol::Bittorrent) >= 68);
    assert!(traffic.bytes_of(Protocol::Http) > 0);

    let decisions: Vec<_> = rx
        .try_iter()
        .filter(|d| d.peer == IpAddr::V4(peer))
        .collect();
    let bt = decisions
        .iter()
        .find(|d| d.protocol == Protocol::Bittorrent)
        .expect("a BitTorrent decision");
    assert_eq!(bt.action, Action::Block);
    let http = decisions
        .iter()
        .find(|d| d.protocol == Protocol::Http)
        .expect("an HTTP decision");
    assert_eq!(http.action, Action::Report);
    assert_eq!(http.hostname.as_deref(), Some("t"));

    // The peer goes, another gets its address: it starts from zero, its flows are its own.
    stats.lock().expect("stats").remove_peer(&first);
    let second = PeerId::from_random([2; 16]);
    *holder.lock().expect("holder") = second.clone();
    assert!(!stats.lock().expect("stats").peers.contains_key(&first));
    send_over_tcp(&listener, b"SSH-2.0-next\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        let t = stats.lock().expect("stats").peers.get(&second).copied();
        if let Some(t) = t.filter(|t| t.flows_of(Protocol::Ssh) >= 1) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the new peer's flow was never counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(next.flows_of(Protocol::Bittorrent), 0);
    assert_eq!(next.bytes_of(Protocol::Bittorrent), 0);
    assert!(!stats.lock().expect("stats").peers.contains_key(&first));
    handle.stop().expect("capture stops cleanly");
}
