//! `/metrics`: the API's request counters, the node's peer and reconcile counts from its view,
//! and lines subsystems add through `add_source`, so this file does not need to know them.
//!
//! The exposition follows Prometheus' conventions: base units (seconds, bytes), `_total` on
//! counters only, `# HELP` and `# TYPE` on every family, and no unbounded label unless asked
//! for: per-peer series (one per peer id) only with `api.metrics_per_peer`.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::node::{PassCounts, PeerCounts};

type Source = Box<dyn Fn(&mut String) + Send + Sync>;
/// (route, status) → (count, seconds spent).
type RequestTable = BTreeMap<(&'static str, u16), (u64, f64)>;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<RequestTable>,
    /// Export one series per peer (`api.metrics_per_peer`).
    pub per_peer: bool,
    sources: Mutex<Vec<Source>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes the `# HELP` and `# TYPE` lines of one metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value escaped as the text format wants (backslash, quote, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn with_per_peer(per_peer: bool) -> Metrics {
        Metrics {
            per_peer,
            ..Metrics::default()
        }
    }

    pub fn observe_request(&self, route: &'static str, status: u16, secs: f64) {
        let mut r = lock(&self.requests);
        let e = r.entry((route, status)).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }

    pub fn add_source(&self, f: impl Fn(&mut String) + Send + Sync + 'static) {
        lock(&self.sources).push(Box::new(f));
    }

    /// The whole exposition; `per_peer` is only read when per-peer series are on.
    pub fn render(&self, node: NodeFigures, per_peer: &[PeerSample]) -> String {
        let peers = node.counts;
        let mut s = String::new();
        family(
            &mut s,
            "waylume_build_info",
            "gauge",
            "Version of the running node.",
        );
        let _ = writeln!(
            s,
            "waylume_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        for (name, help, v) in [
            ("waylume_peers", "Peers on this node.", peers.total),
            (
                "waylume_peers_active",
                "Peers with a handshake in the last 180 seconds.",
                peers.active,
            ),
            (
                "waylume_peers_capped",
                "Peers that used up their data cap.",
                peers.capped,
            ),
            (
                "waylume_peers_max",
                "Most peers this node takes (node.max_capacity).",
                node.max,
            ),
        ] {
            family(&mut s, name, "gauge", help);
            let _ = writeln!(s, "{name} {v}");
        }
        family(
            &mut s,
            "waylume_dataplane_up",
            "gauge",
            "1 when the last reconcile pass left interface, peers, firewall and shaping in place.",
        );
        let up = u8::from(node.dataplane_up);
        let _ = writeln!(s, "waylume_dataplane_up {up}");
        self.render_requests(&mut s);
        let passes = node.passes;
        for (name, help, v) in [
            (
                "waylume_reconcile_runs_total",
                "Reconcile passes.",
                passes.runs,
            ),
            (
                "waylume_reconcile_repairs_total",
                "Reconcile passes that had to repair something.",
                passes.repairs,
            ),
            (
                "waylume_reconcile_errors_total",
                "Reconcile passes that failed.",
                passes.errors,
            ),
        ] {
            family(&mut s, name, "counter", help);
            let _ = writeln!(s, "{name} {v}");
        }
        if self.per_peer {
            render_peers(&mut s, per_peer);
        }
        for f in lock(&self.sources).iter() {
            f(&mut s);
        }
        s
    }

    fn render_requests(&self, s: &mut String) {
        let reqs = lock(&self.requests).clone();
        family(
            s,
            "waylume_api_requests_total",
            "counter",
            "API requests by route and HTTP status code.",
        );
        for ((route, code), (n, _)) in &reqs {
            let _ = writeln!(
                s,
                "waylume_api_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
            );
        }
        family(
            s,
            "waylume_api_request_duration_seconds",
            "summary",
            "Time spent answering API requests.",
        );
        let mut by_route: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
        for ((route, _), (n, t)) in &reqs {
            let e = by_route.entry(route).or_default();
            e.0 += n;
            e.1 += t;
        }
        for (route, (n, t)) in by_route {
            let _ = writeln!(
                s,
                "waylume_api_request_duration_seconds_sum{{route=\"{route}\"}} {t}\n\
                 waylume_api_request_duration_seconds_count{{route=\"{route}\"}} {n}"
            );
        }
    }
}

fn render_peers(s: &mut String, peers: &[PeerSample]) {
    type Field = fn(&PeerSample) -> Option<u64>;
    let families: [(&str, &str, &str, Field); 4] = [
        (
            "waylume_peer_receive_bytes_total",
            "counter",
            "Bytes the node received from the peer.",
            |p| Some(p.rx_bytes),
        ),
        (
            "waylume_peer_transmit_bytes_total",
            "counter",
            "Bytes the node sent to the peer.",
            |p| Some(p.tx_bytes),
        ),
        (
            "waylume_peer_data_cap_used_bytes",
            "gauge",
            "Bytes counted against the peer's data cap.",
            |p| Some(p.cap_used_bytes),
        ),
        (
            "waylume_peer_last_handshake_timestamp_seconds",
            "gauge",
            "Unix time of the peer's last WireGuard handshake.",
            |p| p.last_handshake,
        ),
    ];
    for (name, kind, help, field) in families {
        family(s, name, kind, help);
        for p in peers {
            if let Some(v) = field(p) {
                let _ = writeln!(s, "{name}{{peer_id=\"{}\"}} {v}", label(&p.peer_id));
            }
        }
    }
}

/// What `/metrics` shows of the node as a whole, from its published view.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeFigures {
    pub counts: PeerCounts,
    /// `node.max_capacity`.
    pub max: usize,
    /// The last reconcile pass left the data plane in place.
    pub dataplane_up: bool,
    pub passes: PassCounts,
}

/// One peer's numbers for the per-peer series.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSample {
    pub peer_id: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub cap_used_bytes: u64,
    pub last_handshake: Option<u64>,
}

#[cfg(test)]
mod tests;
