//! Live traffic inspection for the daemon: a capture on the WireGuard interface that is
//! restarted when the interface is re-created, with per-peer counters that survive the restart
//! and go when the peer goes.
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::api::metrics::family;
use crate::core::classify::{Action, ClassifierConfig};
use crate::core::peer::PeerId;
use crate::sys::capture::{
    self, CaptureConfig, CaptureHandle, FlowDecision, PeerTraffic, Resolve, SharedStats,
};

type OnDecision = Arc<dyn Fn(&FlowDecision) + Send + Sync>;

pub struct Inspection {
    cfg: CaptureConfig,
    resolve: Resolve,
    on_decision: OnDecision,
    running: Mutex<Option<CaptureHandle>>,
    stats: SharedStats,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn add(into: &mut PeerTraffic, t: &PeerTraffic) {
    for i in 0..into.bytes.len() {
        into.bytes[i] += t.bytes[i];
        into.flows[i] += t.flows[i];
    }
}

impl Inspection {
    /// `resolve` names the peer that holds a tunnel address now.
    pub fn new(
        interface: &str,
        tunnel_nets: Vec<ipnet::IpNet>,
        policy: crate::core::classify::Policy,
        keep_hostnames: bool,
        resolve: impl Fn(IpAddr) -> Option<PeerId> + Send + Sync + 'static,
        on_decision: impl Fn(&FlowDecision) + Send + Sync + 'static,
    ) -> Inspection {
        Inspection {
            cfg: CaptureConfig {
                interface: interface.to_string(),
                snaplen: capture::DEFAULT_SNAPLEN,
                tunnel_nets,
                classifier: ClassifierConfig {
                    keep_hostnames,
                    ..ClassifierConfig::default()
                },
                policy,
            },
            resolve: Arc::new(resolve),
            on_decision: Arc::new(on_decision),
            running: Mutex::new(None),
            stats: SharedStats::default(),
        }
    }

    /// (Re)starts the capture, e.g. after the interface was re-created. A failure is logged and
    /// leaves the node running without inspection until the next call.
    pub fn restart(&self) {
        let mut running = lock(&self.running);
        if let Some(old) = running.take() {
            // The interface it read from is usually gone already; its error says nothing new.
            let _ = old.stop();
        }
        let f = self.on_decision.clone();
        match capture::start(
            self.cfg.clone(),
            self.stats.clone(),
            self.resolve.clone(),
            move |d| f(d),
        ) {
            Ok(h) => {
                log::info!("inspection: capturing on {}", self.cfg.interface);
                *running = Some(h);
            }
            Err(e) => log::error!("inspection disabled: {e}"),
        }
    }

    pub fn stop(&self) {
        if let Some(h) = lock(&self.running).take()
            && let Err(e) = h.stop()
        {
            log::warn!("inspection: {e}");
        }
    }

    /// A peer's bytes and flows per protocol, across capture restarts.
    pub fn traffic(&self, peer: &PeerId) -> PeerTraffic {
        lock(&self.stats)
            .peers
            .get(peer)
            .copied()
            .unwrap_or_default()
    }

    /// Forgets a removed peer: its counters, and its flows in the capture's table, so that a
    /// peer given the same address later starts clean.
    pub fn peer_removed(&self, peer: &PeerId) {
        lock(&self.stats).remove_peer(peer);
    }

    /// Lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let s = lock(&self.stats).clone();
        let flows = s.peers.values().fold(PeerTraffic::default(), |mut a, t| {
            add(&mut a, t);
            a
        });
        family(
            out,
            "waylume_inspected_flows_total",
            "counter",
            "Classified peer flows by protocol.",
        );
        for (p, _, n) in flows.by_protocol() {
            let _ = writeln!(out, "waylume_inspected_flows_total{{protocol=\"{p}\"}} {n}");
        }
        family(
            out,
            "waylume_inspected_bytes_total",
            "counter",
            "Bytes of classified peer flows by protocol.",
        );
        for (p, b, _) in flows.by_protocol() {
            let _ = writeln!(out, "waylume_inspected_bytes_total{{protocol=\"{p}\"}} {b}");
        }
        family(
            out,
            "waylume_capture_dropped_packets_total",
            "counter",
            "Packets the capture lost.",
        );
        let _ = writeln!(
            out,
            "waylume_capture_dropped_packets_total{{where=\"kernel\"}} {}",
            s.kernel_dropped
        );
        let _ = writeln!(
            out,
            "waylume_capture_dropped_packets_total{{where=\"interface\"}} {}",
            s.interface_dropped
        );
        family(
            out,
            "waylume_capture_evicted_flows_total",
            "counter",
            "Flows that made room for newer ones in the full flow table.",
        );
        let _ = writeln!(out, "waylume_capture_evicted_flows_total {}", s.evicted);
    }
}

/// The per-protocol breakdown as the API shows it: `{protocol: {bytes, flows}}` for protocols seen.
pub fn protocols_json(t: &PeerTraffic) -> serde_json::Map<String, serde_json::Value> {
    t.by_protocol()
        .filter(|(_, b, f)| *b > 0 || *f > 0)
        .map(|(p, b, f)| (p.to_string(), serde_json::json!({"bytes": b, "flows": f})))
        .collect()
}

/// Logs what the policy decided for a flow: the peer's tunnel address only at debug; the
/// host name (present only with `log_hostnames = true`) at info.
pub fn log_decision(d: &FlowDecision) {
    if let Some(host) = &d.hostname {
        log::info!("{} flow to {host}: {:?}", d.protocol, d.action);
    }
    let via = if d.tunnel.is_some() {
        " (in IP-in-IP)"
    } else {
        ""
    };
    match d.action {
        Action::Report => log::debug!("{} flow of {}{via} classified", d.protocol, d.peer),
        a => log::debug!("{} flow of {}{via}: {a:?}", d.protocol, d.peer),
    }
}
