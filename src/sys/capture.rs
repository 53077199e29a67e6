//! Live capture: libpcap on the WireGuard interface, on its own thread, feeding the classifier.
//!
//! Only headers and the first bytes of payload are captured (a small snaplen); nothing of the
//! payload is kept once a packet has been classified. Per-peer counters and kernel drop counts
//! are published to a shared [`CaptureStats`] a few times a second; each newly classified flow
//! is handed to a callback with the policy's decision, for the caller to enforce.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::core::classify::link::{self, LinkType};
use crate::core::classify::{
    Action, Classifier, ClassifierConfig, Endpoint, FlowRecord, Policy, Protocol,
};
use crate::core::packet::{self, L4};

/// Enough for every signature the classifier reads: IPv6 and TCP headers with options, and
/// the first few hundred bytes of a hello or request.
pub const DEFAULT_SNAPLEN: i32 = 512;
/// How long a read waits before the thread publishes counters and looks at the stop flag.
const READ_TIMEOUT_MS: i32 = 100;
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("opening capture on {interface}: {source}")]
    Open {
        interface: String,
        source: pcap::Error,
    },
    #[error("capture on {interface}: unsupported link type {dlt}")]
    UnsupportedLink { interface: String, dlt: i32 },
    #[error("reading capture on {interface}: {source}")]
    Read {
        interface: String,
        source: pcap::Error,
    },
    #[error("spawning the capture thread: {0}")]
    Spawn(std::io::Error),
    #[error("the capture thread panicked")]
    Panicked,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub interface: String,
    pub snaplen: i32,
    /// The tunnel's address ranges: the endpoint inside them is the peer a flow belongs to.
    pub tunnel_nets: Vec<IpNet>,
    pub classifier: ClassifierConfig,
    pub policy: Policy,
}

/// Bytes and flows of one peer, per protocol (indexed by [`Protocol::index`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    pub bytes: [u64; Protocol::ALL.len()],
    pub flows: [u64; Protocol::ALL.len()],
}

impl PeerTraffic {
    pub fn bytes_of(&self, p: Protocol) -> u64 {
        self.bytes[p.index()]
    }
    pub fn flows_of(&self, p: Protocol) -> u64 {
        self.flows[p.index()]
    }
}

/// Counters the daemon reads; replaced wholesale a few times a second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// By the peer's tunnel address.
    pub peers: HashMap<IpAddr, PeerTraffic>,
    pub packets: u64,
    /// Packets the kernel dropped because the capture buffer was full.
    pub kernel_dropped: u64,
    /// Packets the interface or driver dropped.
    pub interface_dropped: u64,
    /// Packets of new flows that found the flow table full.
    pub untracked: u64,
}

pub type SharedStats = Arc<Mutex<CaptureStats>>;

/// A flow whose protocol just became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowDecision {
    pub peer: IpAddr,
    pub l4: L4,
    /// The flow's originator and its other end.
    pub a: Endpoint,
    pub b: Endpoint,
    pub protocol: Protocol,
    pub tracker: bool,
    pub action: Action,
}

/// A running capture; stop it with [`CaptureHandle::stop`].
#[derive(Debug)]
pub struct CaptureHandle {
    stop: Arc<AtomicBool>,
    stats: SharedStats,
    thread: JoinHandle<Result<(), CaptureError>>,
}

impl CaptureHandle {
    pub fn stats(&self) -> SharedStats {
        Arc::clone(&self.stats)
    }

    /// Asks the thread to finish (within one read timeout) and waits for it.
    pub fn stop(self) -> Result<(), CaptureError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| CaptureError::Panicked)?
    }
}

/// Opens the interface and starts the capture thread.
pub fn start(
    cfg: CaptureConfig,
    on_decision: impl FnMut(&FlowDecision) + Send + 'static,
) -> Result<CaptureHandle, CaptureError> {
    let open_err = |source| CaptureError::Open {
        interface: cfg.interface.clone(),
        source,
    };
    let cap = pcap::Capture::from_device(cfg.interface.as_str())
        .map_err(open_err)?
        .snaplen(cfg.snaplen)
        .timeout(READ_TIMEOUT_MS)
        .immediate_mode(true)
        .open()
        .map_err(open_err)?;
    let dlt = cap.get_datalink().0;
    let link = LinkType::from_dlt(dlt).ok_or_else(|| CaptureError::UnsupportedLink {
        interface: cfg.interface.clone(),
        dlt,
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = SharedStats::default();
    let (stop2, stats2) = (Arc::clone(&stop), Arc::clone(&stats));
    let thread = std::thread::Builder::new()
        .name(format!("capture-{}", cfg.interface))
        .spawn(move || run(cap, link, cfg, &stop2, &stats2, on_decision))
        .map_err(CaptureError::Spawn)?;
    Ok(CaptureHandle {
        stop,
        stats,
        thread,
    })
}

fn run(
    mut cap: pcap::Capture<pcap::Active>,
    link: LinkType,
    cfg: CaptureConfig,
    stop: &AtomicBool,
    shared: &Mutex<CaptureStats>,
    mut on_decision: impl FnMut(&FlowDecision),
) -> Result<(), CaptureError> {
    let mut counter = Counter {
        nets: cfg.tunnel_nets,
        stats: CaptureStats::default(),
    };
    let mut classifier = Classifier::new(cfg.classifier);
    let mut last_publish = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match cap.next_packet() {
            Ok(frame) => {
                let ts = frame.header.ts;
                let now_us = (ts.tv_sec as u64)
                    .wrapping_mul(1_000_000)
                    .wrapping_add(ts.tv_usec as u64);
                counter.stats.packets += 1;
                let Some(p) =
                    link::ip_payload(link, frame.data).and_then(|ip| packet::parse_ip(ip).ok())
                else {
                    continue;
                };
                let Some(step) = classifier.observe(now_us, &p, &mut |r| counter.flow_ended(&r))
                else {
                    continue;
                };
                let Some(rec) = classifier.get(&step.key) else {
                    continue;
                };
                if step.newly_classified {
                    if let Some(d) = counter.classified(&rec, p.ip_len as u64, &cfg.policy) {
                        on_decision(&d);
                    }
                } else {
                    counter.add_bytes(&rec, p.ip_len as u64);
                }
            }
            Err(pcap::Error::TimeoutExpired) => {}
            Err(source) => {
                return Err(CaptureError::Read {
                    interface: cfg.interface,
                    source,
                });
            }
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            if let Ok(s) = cap.stats() {
                counter.stats.kernel_dropped = u64::from(s.dropped);
                counter.stats.interface_dropped = u64::from(s.if_dropped);
            }
            counter.stats.untracked = classifier.untracked();
            if let Ok(mut g) = shared.lock() {
                g.clone_from(&counter.stats);
            }
        }
    }
    Ok(())
}

/// Per-peer accounting, kept on the capture thread and copied out when published.
struct Counter {
    nets: Vec<IpNet>,
    stats: CaptureStats,
}

impl Counter {
    fn peer_of(&self, r: &FlowRecord) -> Option<IpAddr> {
        [r.a.ip, r.b.ip]
            .into_iter()
            .find(|ip| self.nets.iter().any(|n| n.contains(ip)))
    }

    fn add_bytes(&mut self, r: &FlowRecord, bytes: u64) {
        if let Some(peer) = self.peer_of(r) {
            self.stats.peers.entry(peer).or_default().bytes[r.protocol.index()] += bytes;
        }
    }

    /// Moves the bytes counted as unknown so far to the flow's protocol and counts the flow.
    fn classified(&mut self, r: &FlowRecord, bytes: u64, policy: &Policy) -> Option<FlowDecision> {
        let peer = self.peer_of(r)?;
        let t = self.stats.peers.entry(peer).or_default();
        let earlier = r.bytes.saturating_sub(bytes);
        let unknown = &mut t.bytes[Protocol::Unknown.index()];
        *unknown = unknown.saturating_sub(earlier);
        t.bytes[r.protocol.index()] += r.bytes;
        t.flows[r.protocol.index()] += 1;
        Some(FlowDecision {
            peer,
            l4: r.l4,
            a: r.a,
            b: r.b,
            protocol: r.protocol,
            tracker: r.tracker,
            action: policy.decide(r.protocol, r.tracker),
        })
    }

    /// A flow that ends without a protocol is counted as an unknown flow.
    fn flow_ended(&mut self, r: &FlowRecord) {
        if r.protocol == Protocol::Unknown {
            if let Some(peer) = self.peer_of(r) {
                self.stats.peers.entry(peer).or_default().flows[Protocol::Unknown.index()] += 1;
            }
        }
    }
}
