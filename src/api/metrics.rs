//! `/metrics`: the API's request counters, the node's peer and reconcile counts from its view,
//! and lines subsystems add through `add_source`, so this file does not need to know them.
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
    sources: Mutex<Vec<Source>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn observe_request(&self, route: &'static str, status: u16, secs: f64) {
        let mut r = lock(&self.requests);
        let e = r.entry((route, status)).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }

    pub fn add_source(&self, f: impl Fn(&mut String) + Send + Sync + 'static) {
        lock(&self.sources).push(Box::new(f));
    }

    pub fn render(&self, peers: PeerCounts, passes: PassCounts) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP waylume_peers Peers on this node by state.\n# TYPE waylume_peers gauge"
        );
        for (state, n) in [
            ("total", peers.total),
            ("active", peers.active),
            ("capped", peers.capped),
        ] {
            let _ = writeln!(s, "waylume_peers{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP waylume_api_requests_total API requests by route and status."
        );
        let _ = writeln!(s, "# TYPE waylume_api_requests_total counter");
        let reqs = lock(&self.requests).clone();
        for ((route, status), (n, _)) in &reqs {
            let _ = writeln!(
                s,
                "waylume_api_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP waylume_api_request_duration_seconds Time spent answering API requests."
        );
        let _ = writeln!(s, "# TYPE waylume_api_request_duration_seconds summary");
        let mut by_route: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
        for ((route, _), (n, t)) in &reqs {
            let e = by_route.entry(route).or_default();
            e.0 += n;
            e.1 += t;
        }
        for (route, (n, t)) in by_route {
            let _ = writeln!(
                s,
                "waylume_api_request_duration_seconds_sum{{route=\"{route}\"}} {t}"
            );
            let _ = writeln!(
                s,
                "waylume_api_request_duration_seconds_count{{route=\"{route}\"}} {n}"
            );
        }
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
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        for f in lock(&self.sources).iter() {
            f(&mut s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.observe_request("create_peer", 201, 0.5);
        m.observe_request("create_peer", 201, 0.25);
        m.observe_request("create_peer", 422, 0.1);
        m.add_source(|s| s.push_str("extra_metric 7\n"));
        let passes = PassCounts {
            runs: 3,
            repairs: 1,
            errors: 0,
        };
        let peers = PeerCounts {
            total: 4,
            active: 2,
            capped: 1,
        };
        let text = m.render(peers, passes);
        assert!(text.contains("waylume_peers{state=\"total\"} 4\n"));
        assert!(
            text.contains("waylume_api_requests_total{route=\"create_peer\",status=\"201\"} 2\n")
        );
        assert!(
            text.contains("waylume_api_request_duration_seconds_count{route=\"create_peer\"} 3\n")
        );
        assert!(text.contains("waylume_reconcile_runs_total 3\n"));
        assert!(text.ends_with("extra_metric 7\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
