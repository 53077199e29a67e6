use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warp::Filter;

use super::*;

/// A listener on loopback serving a tiny warp filter; the body is echoed back.
async fn start(
    limits: ConnLimits,
    max: usize,
    tls: Option<TlsAcceptor>,
) -> (SocketAddr, Arc<ListenStats>, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ListenStats::default());
    let (tx, rx) = watch::channel(false);
    let routes = warp::path("echo")
        .and(warp::body::bytes())
        .map(|b: warp::hyper::body::Bytes| b.to_vec());
    let how = Listen {
        limits,
        max_connections: max,
        tls,
        stats: stats.clone(),
    };
    tokio::spawn(serve(listener, warp::service(routes), how, rx));
    (addr, stats, tx)
}

fn limits(per_address: usize, header: u64, body: u64) -> ConnLimits {
    ConnLimits {
        max_connections: None,
        max_per_address: per_address,
        header_timeout: Duration::from_secs(header),
        body_timeout: Duration::from_secs(body),
    }
}

/// Reads until the server closes; a safety bound turns a hang into a failure.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("the server never closed the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

async fn echo(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
    )
    .await
    .ok()?;
    let text = until_closed(&mut s).await;
    text.starts_with("HTTP/1.1 200").then_some(text)
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share() {
    let (addr, stats, _stop) = start(limits(2, 30, 30), 100, None).await;
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    // The third from the same address is closed without an answer.
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert_eq!(until_closed(&mut third).await, "");
    assert!(stats.refused_per_address.load(Ordering::Relaxed) >= 1);
    // Once one held connection goes, requests pass again.
    drop(held);
    let mut answer = None;
    while answer.is_none() {
        answer = echo(addr).await;
    }
    assert!(answer.unwrap().ends_with("hi"));
}

#[tokio::test]
async fn a_full_listener_closes_new_connections_and_recovers() {
    let (addr, stats, _stop) = start(limits(100, 30, 30), 2, None).await;
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert_eq!(until_closed(&mut third).await, "");
    assert!(stats.refused_full.load(Ordering::Relaxed) >= 1);
    drop(held);
    let mut answer = None;
    while answer.is_none() {
        answer = echo(addr).await;
    }
}

#[tokio::test]
async fn half_sent_headers_and_idle_keep_alive_are_closed() {
    let (addr, stats, _stop) = start(limits(100, 1, 30), 100, None).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /echo HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Closed by the header timeout; hyper answers 408 first or just closes.
    let text = until_closed(&mut slow).await;
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // A kept-alive connection that sends nothing more is closed the same way.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let text = until_closed(&mut idle).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hi"), "{text}");
    let mut open = 1;
    while open > 0 {
        open = stats.open.load(Ordering::Relaxed);
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_trickled_body_is_cut_off() {
    let (addr, _stats, _stop) = start(limits(100, 30, 1), 100, None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly this")
        .await
        .unwrap();
    let text = until_closed(&mut s).await;
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn tls_with_the_operators_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=node.test",
            "-addext",
            "subjectAltName=DNS:node.test",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let files = TlsFiles {
        cert_pem: std::fs::read_to_string(&cert).unwrap(),
        key_pem: crate::config::Secret::new(std::fs::read_to_string(&key).unwrap()),
    };
    let (addr, _stats, _stop) = start(
        limits(100, 30, 30),
        100,
        Some(tls_acceptor(&files).unwrap()),
    )
    .await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(files.cert_pem.as_bytes()).unwrap())
        .resolve("node.test", addr)
        .build()
        .unwrap();
    let r = client
        .post(format!("https://node.test:{}/echo", addr.port()))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hi");
    // Plain HTTP to a TLS listener gets no answer.
    assert!(echo(addr).await.is_none());
}

#[test]
fn file_limit_and_default_cap() {
    let limit = raise_file_limit();
    assert!(limit >= 64);
    assert_eq!(default_max_connections(1024), 384);
    assert_eq!(default_max_connections(100), 16);
    assert_eq!(default_max_connections(u64::MAX), 65_536);
}
