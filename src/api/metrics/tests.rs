use super::*;

fn counts() -> NodeFigures {
    NodeFigures {
        counts: PeerCounts {
            total: 4,
            active: 2,
            capped: 1,
        },
        max: 250,
        dataplane_up: true,
        passes: PassCounts {
            runs: 3,
            repairs: 1,
            errors: 0,
        },
    }
}

fn sample(id: &str) -> PeerSample {
    PeerSample {
        peer_id: id.into(),
        rx_bytes: 10,
        tx_bytes: 20,
        cap_used_bytes: 30,
        last_handshake: Some(1_700_000_000),
    }
}

/// Every sample belongs to a family announced with HELP and TYPE before it; counters and only
/// counters end in `_total`; every value is a number.
fn assert_conventions(text: &str) {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
            assert!(helped.contains(&name.to_string()), "no HELP before {line}");
            types.insert(name.into(), kind.into());
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| types.get(*f).is_some_and(|k| k == "summary"))
                .unwrap_or(name);
            assert!(types.contains_key(family), "no TYPE for {line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}

#[test]
fn renders_prometheus_text() {
    let m = Metrics::default();
    m.observe_request("create_peer", 201, 0.5);
    m.observe_request("create_peer", 201, 0.25);
    m.observe_request("create_peer", 422, 0.1);
    m.add_source(|s| {
        family(s, "extra_metric", "gauge", "A source's line.");
        s.push_str("extra_metric 7\n");
    });
    let text = m.render(counts(), &[sample("a")]);
    assert!(text.contains("waylume_peers 4\n"));
    assert!(text.contains("waylume_peers_active 2\n"));
    assert!(text.contains("waylume_peers_max 250\n"));
    assert!(text.contains("waylume_dataplane_up 1\n"));
    assert!(text.contains("waylume_api_requests_total{route=\"create_peer\",code=\"201\"} 2\n"));
    assert!(text.contains("waylume_api_request_duration_seconds_count{route=\"create_peer\"} 3\n"));
    assert!(text.contains("waylume_reconcile_runs_total 3\n"));
    assert!(text.ends_with("extra_metric 7\n"));
    // Peer ids are unbounded: without the option there is no per-peer series.
    assert!(!text.contains("peer_id"), "{text}");
    assert_conventions(&text);
}

#[test]
fn per_peer_series_only_when_asked_for() {
    let m = Metrics::with_per_peer(true);
    let mut idle = sample("b\"\\");
    idle.last_handshake = None;
    let text = m.render(counts(), &[sample("a"), idle]);
    assert!(text.contains("waylume_peer_receive_bytes_total{peer_id=\"a\"} 10\n"));
    assert!(text.contains("waylume_peer_transmit_bytes_total{peer_id=\"a\"} 20\n"));
    assert!(text.contains("waylume_peer_data_cap_used_bytes{peer_id=\"a\"} 30\n"));
    assert!(
        text.contains("waylume_peer_last_handshake_timestamp_seconds{peer_id=\"a\"} 1700000000\n")
    );
    // Escaped label; a peer that never shook hands has no handshake sample.
    assert!(text.contains("waylume_peer_receive_bytes_total{peer_id=\"b\\\"\\\\\"} 10\n"));
    assert!(!text.contains("waylume_peer_last_handshake_timestamp_seconds{peer_id=\"b"));
    assert_conventions(&text);
}
