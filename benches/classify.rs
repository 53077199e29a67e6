//! Classifier throughput in packets per second over a mix of flows: TLS, HTTP, QUIC, DNS,
//! BitTorrent and unknown traffic, each flow with packets after its first few (the common case
//! a live capture sees: most packets belong to flows already decided).
use common::packets::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use waylume::core::classify::{Classifier, ClassifierConfig};
use waylume::core::packet;

/// Roughly 10,000 packets over 500 flows, interleaved.
fn mix() -> Vec<Vec<u8>> {
    let mut flows: Vec<Vec<Vec<u8>>> = Vec::new();
    for i in 0..500u16 {
        let c = format!("10.{}.{}.2", i / 200, i % 200);
        let sport = 30000 + i;
        let data = vec![0x5au8; 1200];
        let mut f = match i % 6 {
            0 => vec![tcp(
                &c,
                sport,
                "192.0.2.1",
                443,
                1,
                0x18,
                &client_hello("example.org", 300),
            )],
            1 => vec![tcp(
                &c,
                sport,
                "192.0.2.1",
                80,
                1,
                0x18,
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
            )],
            2 => vec![udp(
                &c,
                sport,
                "192.0.2.1",
                443,
                &quic_initial(1, 0xc3, 1250),
            )],
            3 => vec![udp(
                &c,
                sport,
                "192.0.2.53",
                53,
                &dns_query(i, "example.org"),
            )],
            4 => vec![tcp(&c, sport, "192.0.2.1", 6881, 1, 0x18, &bt_handshake())],
            _ => vec![tcp(&c, sport, "192.0.2.1", 9000, 1, 0x18, &data)],
        };
        for k in 0..19u32 {
            f.push(if i % 6 == 2 || i % 6 == 3 {
                udp(
                    "192.0.2.1",
                    443,
                    &c,
                    sport,
                    &data[..(k as usize * 50) % 1200 + 1],
                )
            } else {
                tcp("192.0.2.1", 443, &c, sport, k * 1200, 0x10, &data)
            });
        }
        flows.push(f);
    }
    let mut out = Vec::new();
    for k in 0..20 {
        for f in &flows {
            out.push(f[k].clone());
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let packets = mix();
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(packets.len() as u64));
    g.bench_function("mix", |b| {
        b.iter(|| {
            let mut cl = Classifier::new(ClassifierConfig::default());
            for (i, p) in packets.iter().enumerate() {
                if let Ok(pk) = packet::parse_ip(p) {
                    cl.observe(i as u64, &pk, &mut |_| {});
                }
            }
            cl.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
