//! Live traffic inspection for the daemon: a capture on the WireGuard interface that is
//! restarted when the interface is re-created, with per-peer counters that survive the restart.
use std::collections::HashMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::api::metrics::family;
use crate::core::classify::{Action, ClassifierConfig};
use crate::sys::capture::{self, CaptureConfig, CaptureHandle, FlowDecision, PeerTraffic};

type OnDecision = Arc<dyn Fn(&FlowDecision) + Send + Sync>;

#[derive(Default)]
struct Totals {
    /// Counters of captures that have ended, added to the running one's.
    peers: HashMap<IpAddr, PeerTraffic>,
    kernel_dropped: u64,
    interface_dropped: u64,
}

pub struct Inspection {
    cfg: CaptureConfig,
    on_decision: OnDecision,
    running: Mutex<Option<CaptureHandle>>,
    ended: Mutex<Totals>,
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
    pub fn new(
        interface: &str,
        tunnel_nets: Vec<ipnet::IpNet>,
        policy: crate::core::classify::Policy,
        keep_hostnames: bool,
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
            on_decision: Arc::new(on_decision),
            running: Mutex::new(None),
            ended: Mutex::new(Totals::default()),
        }
    }

    /// (Re)starts the capture, e.g. after the interface was re-created. A failure is logged and
    /// leaves the node running without inspection until the next call.
    pub fn restart(&self) {
        let mut running = lock(&self.running);
        if let Some(old) = running.take() {
            let stats = lock(&old.stats()).clone();
            let mut ended = lock(&self.ended);
            for (ip, t) in &stats.peers {
                add(ended.peers.entry(*ip).or_default(), t);
            }
            ended.kernel_dropped += stats.kernel_dropped;
            ended.interface_dropped += stats.interface_dropped;
            // The interface it read from is usually gone already; its error says nothing new.
            let _ = old.stop();
        }
        let f = self.on_decision.clone();
        match capture::start(self.cfg.clone(), move |d| f(d)) {
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
    pub fn traffic(&self, peer: IpAddr) -> PeerTraffic {
        let mut t = lock(&self.ended)
            .peers
            .get(&peer)
            .copied()
            .unwrap_or_default();
        if let Some(h) = lock(&self.running).as_ref()
            && let Some(now) = lock(&h.stats()).peers.get(&peer)
        {
            add(&mut t, now);
        }
        t
    }

    /// Lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let ended = lock(&self.ended);
        let mut flows = ended
            .peers
            .values()
            .fold(PeerTraffic::default(), |mut a, t| {
                add(&mut a, t);
                a
            });
        let (mut kernel, mut iface, mut untracked) =
            (ended.kernel_dropped, ended.interface_dropped, 0);
        if let Some(h) = lock(&self.running).as_ref() {
            let s = lock(&h.stats()).clone();
            for t in s.peers.values() {
                add(&mut flows, t);
            }
            kernel += s.kernel_dropped;
            iface += s.interface_dropped;
            untracked = s.untracked;
        }
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
            "waylume_capture_dropped_packets_total{{where=\"kernel\"}} {kernel}"
        );
        let _ = writeln!(
            out,
            "waylume_capture_dropped_packets_total{{where=\"interface\"}} {iface}"
        );
        family(
            out,
            "waylume_capture_untracked_packets_total",
            "counter",
            "Packets of new flows that found the flow table full.",
        );
        let _ = writeln!(out, "waylume_capture_untracked_packets_total {untracked}");
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
    match d.action {
        Action::Report => log::debug!("{} flow of {} classified", d.protocol, d.peer),
        a => log::debug!("{} flow of {}: {a:?}", d.protocol, d.peer),
    }
}
