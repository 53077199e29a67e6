//! The classifier's configuration and what it reports: per packet (`Step`) and per flow
//! (`FlowRecord`).
use std::net::IpAddr;

use super::Protocol;
use super::flow::{Endpoint, FlowKey};
use crate::core::packet::L4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifierConfig {
    /// Hard bound on tracked flows; a new flow beyond it evicts one of the fullest owner's.
    pub max_flows: usize,
    /// Bound on one owner's flows; a new flow beyond it evicts one of the owner's own.
    pub max_flows_per_owner: usize,
    /// Payload packets inspected per direction before a flow is left `unknown`.
    pub budget: u8,
    pub tcp_idle_us: u64,
    pub udp_idle_us: u64,
    /// Idle timeout of a TCP flow that saw a FIN or RST.
    pub closed_idle_us: u64,
    /// Secret key of the table's hash, so colliding keys cannot be prepared in advance; the live
    /// capture draws a random one.
    pub hash_seed: u64,
    /// Keep the TLS server name or HTTP host of each flow (off: privacy by default).
    pub keep_hostnames: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            max_flows: 65_536,
            max_flows_per_owner: 4_096,
            budget: 8,
            tcp_idle_us: 300_000_000,
            udp_idle_us: 120_000_000,
            closed_idle_us: 10_000_000,
            hash_seed: 0x9e37_79b9_7f4a_7c15,
            keep_hostnames: false,
        }
    }
}

/// A finished (or still open, when drained) flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// Order of first appearance.
    pub id: u64,
    /// The peer the flow belongs to, as the caller named it when the flow began.
    pub owner: Option<IpAddr>,
    pub l4: L4,
    /// The endpoint that sent the flow's first packet.
    pub a: Endpoint,
    pub b: Endpoint,
    pub protocol: Protocol,
    /// An HTTP flow that is a BitTorrent tracker request.
    pub tracker: bool,
    pub packets_inspected: u32,
    pub packets: u64,
    pub bytes: u64,
    pub first_us: u64,
    pub last_us: u64,
}

/// What one packet did to its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub key: FlowKey,
    pub owner: Option<IpAddr>,
    /// The packet travels from `a`, the flow's originator.
    pub from_a: bool,
    pub protocol: Protocol,
    pub tracker: bool,
    /// This packet settled the flow's protocol.
    pub newly_classified: bool,
}
