//! Live capture: libpcap on the WireGuard interface, on its own thread, feeding the classifier.
//!
//! Only headers and the first bytes of payload are captured (a small snaplen); nothing of the
//! payload is kept once a packet has been classified. Per-peer counters live in a shared
//! [`CaptureStats`] (kernel drop counts refreshed a few times a second); each newly classified
//! flow is handed to a callback with the policy's decision, for the caller to enforce.
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
/// How long a read waits for packets before the thread looks at the stop flag again.
const READ_TIMEOUT_MS: i32 = 100;
/// How often the kernel's drop counters are read.
const DROPS_EVERY: Duration = Duration::from_millis(250);

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

    /// `(protocol, bytes, flows)` for every protocol, in [`Protocol::ALL`] order.
    pub fn by_protocol(&self) -> impl Iterator<Item = (Protocol, u64, u64)> + '_ {
        Protocol::ALL
            .into_iter()
            .map(|p| (p, self.bytes_of(p), self.flows_of(p)))
    }
}

/// Counters the daemon reads.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDecision {
    pub peer: IpAddr,
    pub l4: L4,
    /// The flow's originator and its other end.
    pub a: Endpoint,
    pub b: Endpoint,
    pub protocol: Protocol,
    pub tracker: bool,
    pub action: Action,
    /// TLS server name or HTTP host; only with `keep_hostnames` in the classifier config.
    pub hostname: Option<String>,
}

/// A running capture; stop it with [`CaptureHandle::stop`].
pub struct CaptureHandle {
    stop: Arc<AtomicBool>,
    breaker: pcap::BreakLoop,
    stats: SharedStats,
    thread: JoinHandle<Result<(), CaptureError>>,
}

impl CaptureHandle {
    pub fn stats(&self) -> SharedStats {
        Arc::clone(&self.stats)
    }

    /// Wakes the thread out of its read, waits for it to finish.
    pub fn stop(self) -> Result<(), CaptureError> {
        self.stop.store(true, Ordering::Relaxed);
        self.breaker.breakloop();
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
    let mut cap = pcap::Capture::from_device(cfg.interface.as_str())
        .map_err(open_err)?
        .snaplen(cfg.snaplen)
        .timeout(READ_TIMEOUT_MS)
        .open()
        .map_err(open_err)?;
    let dlt = cap.get_datalink().0;
    let link = LinkType::from_dlt(dlt).ok_or_else(|| CaptureError::UnsupportedLink {
        interface: cfg.interface.clone(),
        dlt,
    })?;
    let breaker = cap.breakloop_handle();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = SharedStats::default();
    let (stop2, stats2) = (Arc::clone(&stop), Arc::clone(&stats));
    let thread = std::thread::Builder::new()
        .name(format!("capture-{}", cfg.interface))
        .spawn(move || run(cap, link, cfg, &stop2, &stats2, on_decision))
        .map_err(CaptureError::Spawn)?;
    Ok(CaptureHandle {
        stop,
        breaker,
        stats,
        thread,
    })
}

fn lock(m: &Mutex<CaptureStats>) -> std::sync::MutexGuard<'_, CaptureStats> {
    // The counters stay meaningful even if a reader panicked while holding the lock.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(
    mut cap: pcap::Capture<pcap::Active>,
    link: LinkType,
    cfg: CaptureConfig,
    stop: &AtomicBool,
    shared: &Mutex<CaptureStats>,
    mut on_decision: impl FnMut(&FlowDecision),
) -> Result<(), CaptureError> {
    let nets = Peers(cfg.tunnel_nets);
    // Peers choose their own 5-tuples: a fresh hash seed per capture keeps them from
    // preparing keys that collide in the flow table.
    let mut classifier = Classifier::new(ClassifierConfig {
        hash_seed: rand::random(),
        ..cfg.classifier
    });
    let mut last_drops = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match cap.next_packet() {
            Ok(frame) => {
                let ts = frame.header.ts;
                let now_us = (ts.tv_sec as u64)
                    .wrapping_mul(1_000_000)
                    .wrapping_add(ts.tv_usec as u64);
                // Counters are updated under the lock per packet (uncontended, tens of
                // nanoseconds) so readers never see stale figures when traffic pauses.
                let mut g = lock(shared);
                g.packets += 1;
                let Some(p) =
                    link::ip_payload(link, frame.data).and_then(|ip| packet::parse_ip(ip).ok())
                else {
                    continue;
                };
                let Some(step) =
                    classifier.observe(now_us, &p, &mut |r| nets.flow_ended(&mut g, &r))
                else {
                    continue;
                };
                let Some(rec) = classifier.get(&step.key) else {
                    continue;
                };
                if step.newly_classified {
                    let decision = nets.classified(&mut g, &rec, p.ip_len as u64, &cfg.policy);
                    drop(g);
                    if let Some(mut d) = decision {
                        d.hostname = classifier.hostname(&step.key).map(str::to_owned);
                        on_decision(&d);
                    }
                } else {
                    nets.add_bytes(&mut g, &rec, p.ip_len as u64);
                }
            }
            Err(pcap::Error::TimeoutExpired) => {}
            // pcap_breakloop from `stop`.
            Err(pcap::Error::NoMorePackets) => break,
            Err(source) => {
                return Err(CaptureError::Read {
                    interface: cfg.interface,
                    source,
                });
            }
        }
        if last_drops.elapsed() >= DROPS_EVERY {
            last_drops = Instant::now();
            let kernel = cap.stats().ok();
            let mut g = lock(shared);
            if let Some(s) = kernel {
                g.kernel_dropped = u64::from(s.dropped);
                g.interface_dropped = u64::from(s.if_dropped);
            }
            g.untracked = classifier.untracked();
        }
    }
    Ok(())
}

/// Attributes flows to peers by their tunnel address.
struct Peers(Vec<IpNet>);

impl Peers {
    fn peer_of(&self, r: &FlowRecord) -> Option<IpAddr> {
        [r.a.ip, r.b.ip]
            .into_iter()
            .find(|ip| self.0.iter().any(|n| n.contains(ip)))
    }

    fn add_bytes(&self, s: &mut CaptureStats, r: &FlowRecord, bytes: u64) {
        if let Some(peer) = self.peer_of(r) {
            s.peers.entry(peer).or_default().bytes[r.protocol.index()] += bytes;
        }
    }

    /// Moves the bytes counted as unknown so far to the flow's protocol and counts the flow.
    fn classified(
        &self,
        s: &mut CaptureStats,
        r: &FlowRecord,
        bytes: u64,
        policy: &Policy,
    ) -> Option<FlowDecision> {
        let peer = self.peer_of(r)?;
        let t = s.peers.entry(peer).or_default();
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
            hostname: None,
        })
    }

    /// A flow that ends without a protocol is counted as an unknown flow.
    fn flow_ended(&self, s: &mut CaptureStats, r: &FlowRecord) {
        if r.protocol == Protocol::Unknown
            && let Some(peer) = self.peer_of(r)
        {
            s.peers.entry(peer).or_default().flows[Protocol::Unknown.index()] += 1;
        }
    }
}
