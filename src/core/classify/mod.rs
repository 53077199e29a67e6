//! Traffic classification: per-flow state over the first packets of each direction.
//!
//! Detectors are written from the protocols' specifications and are strict on purpose: a false
//! BitTorrent match can get a user blocked, so a flow stays `unknown` rather than guessed.
mod bencode;
mod bittorrent;
mod dns;
mod engine;
mod evict;
mod flow;
pub mod link;
mod policy;
mod quic;
mod record;
mod table;
mod text;
mod tls;
mod utp;

use serde::{Deserialize, Serialize};

pub use flow::{Endpoint, FlowKey};
pub use policy::{Action, Policy};
pub use record::{ClassifierConfig, FlowRecord, Step};
pub use table::Classifier;

/// A protocol the classifier can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Bittorrent,
    Http,
    Tls,
    Ssh,
    Quic,
    Dns,
    Unknown,
}

impl Protocol {
    pub const ALL: [Protocol; 7] = [
        Protocol::Bittorrent,
        Protocol::Http,
        Protocol::Tls,
        Protocol::Ssh,
        Protocol::Quic,
        Protocol::Dns,
        Protocol::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Bittorrent => "bittorrent",
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Ssh => "ssh",
            Protocol::Quic => "quic",
            Protocol::Dns => "dns",
            Protocol::Unknown => "unknown",
        }
    }

    /// Dense index into per-protocol arrays, in the order of [`Protocol::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a detector concluded from the bytes it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Certainly not this protocol.
    No,
    /// A valid prefix that ended early: show me the next segment of this direction.
    NeedMore,
    /// Plausible on its own; confirmed by a matching hint from the other direction.
    Hint,
    /// This protocol.
    Match(Protocol),
    /// An HTTP request that is a BitTorrent tracker announce or scrape (BEP 3, BEP 48).
    Tracker,
}
