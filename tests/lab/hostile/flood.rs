//! Slowloris from one namespace, signed creates from another.
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::NodeLab;
use common::netns::wait_for;

use super::*;

const FLOOD: usize = 2000;
const CREATES: usize = 200;

/// Keeps `FLOOD` connections open to `addr`, each with half a request head, reopening every one
/// the server closes, until `stop`. Returns how many it opened in all.
fn slowloris(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    opened: Arc<std::sync::atomic::AtomicUsize>,
) -> usize {
    let open = || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        let mut s = s;
        s.write_all(b"POST /api/peers HTTP/1.1\r\nHost: node\r\nX-Slow: ")
            .ok()?;
        s.set_nonblocking(true).ok()?;
        opened.fetch_add(1, Ordering::Relaxed);
        Some(s)
    };
    let mut held: Vec<Option<TcpStream>> = (0..FLOOD).map(|_| open()).collect();
    let mut total = held.iter().flatten().count();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        for slot in held.iter_mut() {
            let closed = match slot {
                None => true,
                Some(s) => {
                    matches!(s.peek(&mut buf), Ok(0))
                        || matches!(s.peek(&mut buf), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
                }
            };
            if closed {
                *slot = open();
                total += usize::from(slot.is_some());
            }
        }
        // Pacing of the load generator, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(20));
    }
    total
}

#[test]
#[ignore = "needs root"]
fn a_half_open_flood_from_one_namespace_leaves_signed_creates_working() {
    raise_own_file_limit();
    let nl = NodeLab::new("hf");
    let config = nl.lab.dir.path().join("api.toml");
    std::fs::write(&config, "[api]\nheader_timeout_secs = 3\n").unwrap();
    let d = nl.daemon(&[
        ("WAYLUME_API_BIND", "0.0.0.0"),
        ("WAYLUME_CONFIG", config.to_str().unwrap()),
    ]);
    let NodeLab {
        mut lab, cli, net, ..
    } = nl;
    // The file limit that used to run out: 1024, soft and hard, so the daemon cannot raise it.
    let (_pid, notes) = start(&d, &mut lab, "flood", &["prlimit", "--nofile=1024:1024"]);
    let daemon_log = lab.dir.path().join("flood.log");
    let _dump = DumpOnPanic(daemon_log.clone());
    let log = std::fs::read_to_string(&daemon_log).unwrap();
    assert!(
        log.contains("at most 384 connections, file limit 1024"),
        "{log}"
    );

    // Without a flood first, for comparison.
    let quiet = timed_creates(
        &cli,
        "http://100.64.1.1:3000",
        "quiet",
        CREATES / 2,
        daemon_log.clone(),
    );
    assert!(quiet.iter().all(|(a, _)| a.status == 201));

    // The flood comes from the "internet" side, the creates from the client side.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s, o) = (stop.clone(), opened.clone());
    let flood = in_netns(&net, move || {
        slowloris("198.18.2.1:3000".parse().unwrap(), s, o)
    });
    wait_for(
        "the flood's 2,000 connections",
        Duration::from_secs(120),
        || opened.load(Ordering::Relaxed) >= FLOOD,
    );
    let base = "http://100.64.1.1:3000";
    wait_for(
        "the per-address cap to refuse the flood",
        Duration::from_secs(30),
        || {
            metric(
                &cli,
                base,
                "waylume_api_connections_refused_total{reason=\"per_address\"}",
            ) > 0.0
        },
    );
    let runs_before = metric(&cli, base, "waylume_reconcile_runs_total");
    let watchdogs_before = notes.count("WATCHDOG=1");
    let errors_before = metric(&cli, base, "waylume_reconcile_errors_total");
    let t0 = Instant::now();

    let timed = timed_creates(&cli, base, "flood", CREATES, daemon_log.clone());
    for (a, _) in &timed {
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        assert!(
            a.opened()["config"]
                .as_str()
                .unwrap()
                .contains("PrivateKey")
        );
    }
    // Reconcile kept running under the flood, and without errors.
    let mut seen = Vec::new();
    let passed = common::netns::poll(Duration::from_secs(30), || {
        let runs = metric(&cli, base, "waylume_reconcile_runs_total");
        seen.push((t0.elapsed().as_millis(), runs));
        runs >= runs_before + 2.0
    });
    let tail = |log: &std::path::Path| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        passed,
        "reconcile stalled under the flood (before {runs_before}, then {:?}):\n{}",
        seen.last(),
        tail(&daemon_log)
    );
    // Each pass that worked tells the watchdog.
    wait_for(
        "watchdog pings under the flood",
        Duration::from_secs(30),
        || notes.count("WATCHDOG=1") >= watchdogs_before + 2,
    );
    let elapsed = t0.elapsed();
    let runs = metric(&cli, base, "waylume_reconcile_runs_total") - runs_before;
    assert_eq!(
        metric(&cli, base, "waylume_reconcile_errors_total"),
        errors_before
    );
    let open = metric(&cli, base, "waylume_api_connections");
    assert!(open <= 64.0 + 2.0, "the flood holds {open} connections");
    stop.store(true, Ordering::Relaxed);
    let total = flood.join().unwrap();

    eprintln!(
        "without a flood: {}; under a half-open flood ({total} connections opened from one \
         namespace): {}; reconcile: {runs} passes in {elapsed:?} (interval 1 s); {open} API \
         connections open at the end",
        percentiles(&quiet),
        percentiles(&timed),
    );
}

/// `n` signed creates in a row from `ns`, each with its latency.
fn timed_creates(
    ns: &str,
    base: &str,
    tag: &str,
    n: usize,
    log: std::path::PathBuf,
) -> Vec<(Answer, Duration)> {
    let reqs: Vec<Signed> = (0..n)
        .map(|i| {
            let body = format!("{{\"session_id\":\"{tag}-{i}\"}}");
            sign("POST", "/api/peers", body.as_bytes())
        })
        .collect();
    let base = base.to_string();
    block_on_in_netns(ns, move || async move {
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for r in &reqs {
            let t = Instant::now();
            match try_send(&client, &base, r).await {
                Ok(a) => out.push((a, t.elapsed())),
                Err(e) => panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()),
            }
        }
        out
    })
}

fn percentiles(timed: &[(Answer, Duration)]) -> String {
    let mut lat: Vec<Duration> = timed.iter().map(|(_, d)| *d).collect();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    format!(
        "{} signed creates, p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    )
}

/// Shows the end of the daemon's log when the test fails.
struct DumpOnPanic(std::path::PathBuf);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "daemon log (end):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}
