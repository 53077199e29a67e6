//! TunnelLab benchmark of the data plane (root, network namespaces; run by scripts/bench-dataplane.sh,
//! not in CI). Forwarding throughput through the tunnel with 10 and with 5,000 peers that all
//! have speed limits and caps, the measured peer added last; the time to install 5,000 peers
//! from nothing and to add one more. Prints ratios measured in one run.
#![allow(clippy::unwrap_used, clippy::print_stdout)]
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::netns::wait_for;
use common::tunnels::*;
use waylume::core::plan::{PeerChange, PeerPolicy, PlanInput};
use waylume::progress::Progress;

const REPS: usize = 3;

fn dummy(i: u32) -> PeerPolicy {
    // From 10.77.1.0 upwards: clear of the lab's clients (10.77.0.2, .3).
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 77, 1, 0)) + i);
    PeerPolicy {
        download_kbps: Some(10_000),
        upload_kbps: Some(10_000),
        cap_bytes: Some(1 << 30),
        ..policy(addr)
    }
}

/// The measured peer: limited and capped far above what the lab can push.
fn measured() -> PeerPolicy {
    PeerPolicy {
        download_kbps: Some(10_000_000),
        upload_kbps: Some(10_000_000),
        cap_bytes: Some(1 << 50),
        ..policy(A)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Received UDP packets per second for 64-byte datagrams from A to the internet host.
fn udp_pps(lab: &TunnelLab, port: u16) -> f64 {
    let p = port.to_string();
    let out = lab
        .ns(
            &lab.a,
            &[
                "iperf3", "-c", INET, "-p", &p, "-u", "-b", "0", "-l", "64", "-t", "3", "-J",
            ],
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["end"]["sum"];
    let got = s["packets"].as_f64().unwrap() - s["lost_packets"].as_f64().unwrap();
    got / s["seconds"].as_f64().unwrap()
}

struct Rates {
    up: f64,
    down: f64,
    udp: f64,
}

fn measure(lab: &TunnelLab, progress: &mut Progress, what: &str) -> Rates {
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut udp = Vec::new();
    for rep in 1..=REPS {
        progress.step(&format!("{what}: run {rep}/{REPS}"));
        up.push(lab.iperf(&lab.a, 5201, false));
        down.push(lab.iperf(&lab.a, 5201, true));
        udp.push(udp_pps(lab, 5201));
    }
    Rates {
        up: median(up),
        down: median(down),
        udp: median(udp),
    }
}

fn with_peers(lab: &TunnelLab, n: u32) -> PlanInput {
    let mut peers: Vec<_> = (0..n.saturating_sub(2)).map(dummy).collect();
    peers.push(policy(B));
    peers.push(measured());
    lab.input(peers)
}

fn main() {
    let mut lab = TunnelLab::new("pbnch");
    lab.spawn(
        &lab.inet.clone(),
        &["iperf3", "-s", "-B", INET, "-p", "5201"],
    );
    let dp = lab.dataplane();
    // Steps: the runs at each size, installing 5,000 peers, adding one at a time.
    let mut progress = Progress::new("data-plane bench", 2 * REPS as u64 + 2);
    wait_for("iperf3 server", Duration::from_secs(5), || {
        lab.tcp_connects(&lab.a, INET, 5201)
    });

    // 10 peers; the measured one is added last, through the per-peer path.
    let small = with_peers(&lab, 10);
    let mut before = small.clone();
    before.peers.pop();
    dp.apply(&before).unwrap();
    dp.apply_change(&small, &PeerChange::Add(measured()))
        .unwrap();
    let r10 = measure(&lab, &mut progress, "10 peers");

    // 5,000 peers installed from nothing (table deleted, qdiscs removed), timed.
    progress.step("installing 5000 peers");
    let big = with_peers(&lab, 5000);
    let mut big_before = big.clone();
    big_before.peers.pop();
    dp.teardown(&small).unwrap();
    let t = Instant::now();
    dp.apply(&big_before).unwrap();
    let install = t.elapsed();
    let mut add = Vec::new();
    let t = Instant::now();
    dp.apply_change(&big, &PeerChange::Add(measured())).unwrap();
    add.push(t.elapsed().as_secs_f64());
    progress.step("adding peers one at a time");
    let mut cur = big.clone();
    for i in 0..5u32 {
        let p = dummy(6000 + i);
        cur.peers.push(p.clone());
        let t = Instant::now();
        dp.apply_change(&cur, &PeerChange::Add(p)).unwrap();
        add.push(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let idle = dp.apply(&cur).unwrap();
    let reconcile = t.elapsed();
    assert!(idle.is_empty(), "{:?}", idle.changes);
    let r5k = measure(&lab, &mut progress, "5000 peers");

    drop(progress);
    println!("peers                      10        5000     ratio");
    println!(
        "TCP upload   Mbit/s  {:>9.1} {:>11.1} {:>9.3}",
        r10.up,
        r5k.up,
        r5k.up / r10.up
    );
    println!(
        "TCP download Mbit/s  {:>9.1} {:>11.1} {:>9.3}",
        r10.down,
        r5k.down,
        r5k.down / r10.down
    );
    println!(
        "UDP 64 B     pkt/s   {:>9.0} {:>11.0} {:>9.3}",
        r10.udp,
        r5k.udp,
        r5k.udp / r10.udp
    );
    println!(
        "install 5,000 peers from nothing: {:.2} s",
        install.as_secs_f64()
    );
    println!(
        "add one peer at 5,000 (median of {}): {:.1} ms",
        add.len(),
        median(add) * 1000.0
    );
    println!(
        "full reconcile pass at 5,000: {:.2} s",
        reconcile.as_secs_f64()
    );
}
