//! Live capture: libpcap on the WireGuard interface, on its own thread, feeding the classifier.
//!
//! Only headers and the first bytes of payload are captured (a small snaplen); nothing of the
//! payload is kept once a packet has been classified. Per-peer counters live in a shared
//! [`CaptureStats`] (kernel drop counts refreshed a few times a second); each newly classified
//! flow is handed to a callback with the policy's decision, for the caller to enforce.
//!
//! A flow belongs to the peer that holds one of its addresses as the tunnel carried them (the
//! outermost header, which WireGuard checked against the peer's allowed IPs): addresses inside
//! an encapsulated packet are the sender's to choose and never name another peer.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::core::classify::link::{self, LinkType};
use crate::core::classify::{Action, Classifier, ClassifierConfig, Endpoint, Policy, Protocol};
use crate::core::packet::{self, L4};

/// Enough for every signature the classifier reads: IPv6 and TCP headers with options, and
/// the first few hundred bytes of a hello or request.
pub const DEFAULT_SNAPLEN: i32 = 512;
/// How long a read waits for packets before the thread looks at the stop flag again.
const READ_TIMEOUT_MS: i32 = 100;
/// How often the kernel's drop counters are read.
const DROPS_EVERY: Duration = Duration::from_millis(250);

mod peers;
mod tunnels;

pub use peers::{CaptureStats, PeerTraffic, Resolve, SharedStats};
use peers::{Peers, classified, forget};

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
    /// The tunnel's address ranges: only addresses inside them are looked up as peers.
    pub tunnel_nets: Vec<IpNet>,
    pub classifier: ClassifierConfig,
    pub policy: Policy,
}

/// A flow whose protocol just became known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDecision {
    /// The peer's tunnel address.
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
    /// The outer protocol (4 or 41) when the flow was found inside IP-in-IP: `a` and `b` are
    /// then the tunnel's ends, and the kernel sees the tunnel, not the flow's ports.
    pub tunnel: Option<u8>,
}

/// A running capture; stop it with [`CaptureHandle::stop`].
pub struct CaptureHandle {
    stop: Arc<AtomicBool>,
    breaker: pcap::BreakLoop,
    thread: JoinHandle<Result<(), CaptureError>>,
}

impl CaptureHandle {
    /// Wakes the thread out of its read, waits for it to finish.
    pub fn stop(self) -> Result<(), CaptureError> {
        self.stop.store(true, Ordering::Relaxed);
        self.breaker.breakloop();
        self.thread.join().map_err(|_| CaptureError::Panicked)?
    }
}

/// Opens the interface and starts the capture thread, which counts into `stats` and asks
/// `resolve` which peer holds an address.
pub fn start(
    cfg: CaptureConfig,
    stats: SharedStats,
    resolve: Resolve,
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
    // A new capture starts with nothing to forget: its table and peers are empty.
    lock(&stats).released.clear();
    let (stop2, stats2) = (Arc::clone(&stop), Arc::clone(&stats));
    let thread = std::thread::Builder::new()
        .name(format!("capture-{}", cfg.interface))
        .spawn(move || run(cap, link, cfg, &stop2, &stats2, resolve, on_decision))
        .map_err(CaptureError::Spawn)?;
    Ok(CaptureHandle {
        stop,
        breaker,
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
    resolve: Resolve,
    mut on_decision: impl FnMut(&FlowDecision),
) -> Result<(), CaptureError> {
    let mut peers = Peers {
        nets: cfg.tunnel_nets,
        known: HashMap::new(),
        resolve,
    };
    // Peers choose their own 5-tuples: a fresh secret hash key per capture keeps them from
    // preparing keys that collide in the flow table.
    let mut classifier = Classifier::new(ClassifierConfig {
        hash_seed: rand::random(),
        ..cfg.classifier
    });
    let mut tunnels = tunnels::Tunnels::default();
    let mut last_drops = Instant::now();
    // This handle's drop counters so far: the shared ones add what each reading adds.
    let (mut kernel_seen, mut iface_seen, mut evicted_seen) = (0u32, 0u32, 0u64);
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
                if !g.released.is_empty() {
                    forget(&mut g, &mut peers, &mut classifier);
                }
                let Some(p) =
                    link::ip_payload(link, frame.data).and_then(|ip| packet::parse_ip(ip).ok())
                else {
                    continue;
                };
                let p = p.as_tunnel_sees_it();
                let mut unknown_ended = Vec::new();
                let step = classifier.observe_owned(now_us, &p, || peers.owner(&p), &mut |r| {
                    if r.protocol == Protocol::Unknown {
                        unknown_ended.extend(r.owner);
                    }
                });
                // A flow that ends without a protocol is counted as an unknown flow.
                for owner in unknown_ended {
                    if let Some(id) = peers.known.get(&owner) {
                        g.peers.entry(id.clone()).or_default().flows[Protocol::Unknown.index()] +=
                            1;
                    }
                }
                let Some(id) = step.owner.and_then(|o| peers.known.get(&o)) else {
                    continue;
                };
                if step.newly_classified
                    && let Some(rec) = classifier.get(&step.key)
                {
                    let mut d = classified(&mut g, id, &rec, p.ip_len as u64, &cfg.policy);
                    drop(g);
                    d.hostname = classifier.hostname(&step.key).map(str::to_owned);
                    // The packet that named the flow says whether it came through a tunnel.
                    d.tunnel = p.tunnel;
                    if d.action != Action::Report {
                        tunnels.sent(&p, now_us);
                    }
                    on_decision(&d);
                } else {
                    if let Some(t) = g.peers.get_mut(id) {
                        t.bytes[step.protocol.index()] += p.ip_len as u64;
                    } else {
                        g.peers.entry(id.clone()).or_default().bytes[step.protocol.index()] +=
                            p.ip_len as u64;
                    }
                    drop(g);
                    // A flow named earlier may go on inside a tunnel, and a tunnel's decision
                    // is renewed while it keeps sending.
                    if let Some(d) = tunnels.again(&p, &step, &cfg.policy, now_us) {
                        on_decision(&d);
                    }
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
            // Removals are also handled when no traffic comes, so the list stays short.
            forget(&mut g, &mut peers, &mut classifier);
            if let Some(s) = kernel {
                g.kernel_dropped += u64::from(s.dropped.wrapping_sub(kernel_seen));
                g.interface_dropped += u64::from(s.if_dropped.wrapping_sub(iface_seen));
                (kernel_seen, iface_seen) = (s.dropped, s.if_dropped);
            }
            g.evicted += classifier.evicted() - evicted_seen;
            evicted_seen = classifier.evicted();
        }
    }
    Ok(())
}
