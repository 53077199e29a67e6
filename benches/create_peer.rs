//! Creating a peer with 10 and with 10,000 existing peers, in-process through `Node` with the
//! real SQLite store and the in-memory WireGuard seam (so the kernel's own cost is not measured
//! here; the lab benchmark measures the userspace backend). Prints both medians and the ratio.
#![allow(clippy::print_stdout)]
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use waylume::config::PeerLifetimes;
use waylume::core::clientconf::ServerSide;
use waylume::core::plan::PlanInput;
use waylume::core::registry::{Fresh, NewPeer, Registry, Selector};
use waylume::node::{Node, Removal, Seams};
use waylume::store::Store;
use waylume::sys::fake::{FakeEnforcer, FakeWireGuard};
use wireguard_control::Key;

fn fresh(i: u64) -> Fresh {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_le_bytes());
    let mut k = [7u8; 32];
    k[1..9].copy_from_slice(&i.to_le_bytes());
    Fresh {
        id,
        private_key: Key(k),
        preshared_key: Key([1; 32]),
    }
}

fn node_with(n: u64, dir: &std::path::Path) -> Node {
    let store = Store::open(dir).expect("store");
    let server = ServerSide {
        public_key: Key([9; 32]).get_public(),
        endpoint: "192.0.2.1:51820".into(),
        dns: vec![],
        mtu: 1420,
        persistent_keepalive: 25,
    };
    let subnet = "10.0.0.0/8".parse().expect("subnet");
    let registry = Registry::new(subnet, None, 32767);
    let lifetimes = PeerLifetimes {
        idle_timeout: None,
        handshake_grace: Duration::from_secs(600),
    };
    let seams = Seams {
        wg: Arc::new(FakeWireGuard::default()),
        policy: Arc::new(FakeEnforcer::default()),
        rules: PlanInput {
            iface: "wl-bench".into(),
            ifb: "ifb-wl-bench".into(),
            subnet,
            subnet_v6: None,
            server_addr: "10.0.0.1".parse().expect("server"),
            outward: None,
            isolate: true,
            blocked_v4: Vec::new(),
            blocked_v6: Vec::new(),
            shaping: true,
            peers: Vec::new(),
        },
    };
    let mut node = Node::open(registry, store, server, seams, lifetimes).expect("node");
    for i in 0..n {
        node.create(&NewPeer::default(), fresh(i), 0)
            .expect("create");
    }
    node
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// (existing peers, create times) per run.
type Samples = Arc<Mutex<Vec<(u64, Vec<Duration>)>>>;

fn bench(c: &mut Criterion) {
    let samples: Samples = Arc::default();
    let mut group = c.benchmark_group("create_peer");
    group.sample_size(30);
    for n in [10u64, 10_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = node_with(n, dir.path());
        let mut next = 1_000_000u64;
        let mut times = Vec::new();
        group.bench_function(format!("with_{n}_peers"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    next += 1;
                    let t = Instant::now();
                    let (s, _) = node
                        .create(&NewPeer::default(), fresh(next), 0)
                        .expect("create");
                    let d = t.elapsed();
                    total += d;
                    times.push(d);
                    // Keep the count at n: the delete is not timed.
                    node.delete(&Selector::Id(s.peer.id), Removal::Deleted)
                        .expect("delete");
                }
                total
            })
        });
        samples.lock().expect("samples").push((n, times));
    }
    group.finish();
    let mut s = samples.lock().expect("samples");
    let [(n0, a), (n1, b)] = &mut s[..] else {
        return;
    };
    let (ma, mb) = (median(a), median(b));
    println!(
        "create_peer median: {n0} peers {ma:?}, {n1} peers {mb:?}, ratio {:.2}",
        mb.as_secs_f64() / ma.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
