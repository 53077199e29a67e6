//! uTP as BitTorrent clients send it is still found, and headers with impossible fields are not
//! counted as evidence.
use common::packets::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use waylume::core::classify::Protocol;

use super::negative::{Dgram, MS, T0, bytes, classify};

/// uTP as a BitTorrent client sends it: the sender's microsecond clock, capture times that
/// follow it with jitter, DATA sequence numbers one apart.
#[test]
fn real_utp_is_still_found() {
    let mut rng = StdRng::seed_from_u64(29);
    for _ in 0..50 {
        let conn: u16 = rng.random_range(1..=u16::MAX);
        let seq: u16 = rng.random();
        let clock: u32 = rng.random_range(1..u32::MAX / 2);
        // The connection handshake.
        let syn = (T0, true, utp(4, conn, clock, seq, 0, b""));
        let state = (
            T0 + 40 * MS,
            false,
            utp(2, conn, clock ^ 0x5555, 900, seq, b""),
        );
        assert_eq!(
            classify(51_000, 6881, &[syn, state]).protocol,
            Protocol::Bittorrent
        );

        // Mid-stream, one direction only: a burst stamped microseconds apart arrives paced by
        // the bottleneck, about a millisecond apart.
        let (mut ts, mut at) = (clock, T0);
        let data: Vec<Dgram> = (0..5u16)
            .map(|k| {
                ts += rng.random_range(2..40);
                at += rng.random_range(900..1300);
                let body = bytes(&mut rng, 1000);
                (at, false, utp(0, conn, ts, seq.wrapping_add(k), 77, &body))
            })
            .collect();
        assert_eq!(classify(51_001, 6881, &data).protocol, Protocol::Bittorrent);

        // Acknowledgements only: STATE packets a few milliseconds apart with path jitter.
        let mut at = T0;
        let acks: Vec<Dgram> = (0..5u16)
            .map(|k| {
                let ts = clock + u32::from(k) * 4000;
                at += 4000 + rng.random_range(0..3000);
                (at, true, utp(2, conn, ts, seq, 300 + 2 * k, b""))
            })
            .collect();
        assert_eq!(classify(51_002, 6881, &acks).protocol, Protocol::Bittorrent);
    }
}

/// The k-th header of a run.
type Header = dyn Fn(u16) -> Vec<u8>;

#[test]
fn utp_headers_with_impossible_fields_are_not_counted() {
    let run = |f: &Header| -> Vec<Dgram> {
        (0..6u16)
            .map(|k| (T0 + u64::from(k) * 16 * MS, true, f(k)))
            .collect()
    };
    let good = |k: u16| utp(0, 7, 1_000 + u32::from(k) * 16_000, 10 + k, 40, b"data");
    assert_eq!(
        classify(52_000, 6881, &run(&good)).protocol,
        Protocol::Bittorrent
    );
    let cases: [(&str, &Header); 5] = [
        ("connection id 0", &|k| {
            utp(0, 0, 1_000 + u32::from(k) * 16_000, 10 + k, 40, b"data")
        }),
        ("timestamp 0", &|k| utp(0, 7, 0, 10 + k, 40, b"data")),
        ("a counter for a clock", &|k| {
            utp(0, 7, 1_000 + u32::from(k), 10 + k, 40, b"data")
        }),
        ("DATA that repeats its sequence", &|k| {
            utp(0, 7, 1_000 + u32::from(k) * 16_000, 10, 40, b"data")
        }),
        ("DATA that skips", &|k| {
            utp(0, 7, 1_000 + u32::from(k) * 16_000, 10 + 2 * k, 40, b"data")
        }),
    ];
    for (what, f) in cases {
        assert_eq!(
            classify(52_001, 6881, &run(f)).protocol,
            Protocol::Unknown,
            "{what}"
        );
    }
    let mut huge_window = good(0);
    huge_window[12..16].copy_from_slice(&0x00fe_fefeu32.to_be_bytes());
    let flow: Vec<Dgram> = (0..6u16)
        .map(|k| {
            let mut p = good(k);
            p[12..16].copy_from_slice(&huge_window[12..16]);
            (T0 + u64::from(k) * 16 * MS, true, p)
        })
        .collect();
    assert_eq!(
        classify(52_002, 6881, &flow).protocol,
        Protocol::Unknown,
        "window"
    );
}
