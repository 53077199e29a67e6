//! What to do with a flow once its protocol is known.
use serde::{Deserialize, Serialize};

use super::Protocol;

/// Per-protocol policy action; ordered from mildest to strictest.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Count it, nothing else.
    #[default]
    Report,
    /// Put the flow in a temporary low-rate class.
    Throttle,
    /// Drop the flow.
    Block,
}

/// One action per protocol; `report` unless configured otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    actions: [Action; Protocol::ALL.len()],
}

impl Policy {
    pub fn set(&mut self, protocol: Protocol, action: Action) {
        self.actions[protocol.index()] = action;
    }

    pub fn get(&self, protocol: Protocol) -> Action {
        self.actions[protocol.index()]
    }

    /// The action for a classified flow. A BitTorrent tracker request is HTTP on the wire but
    /// serves BitTorrent, so the stricter of the two actions applies.
    pub fn decide(&self, protocol: Protocol, tracker: bool) -> Action {
        let own = self.get(protocol);
        if tracker {
            own.max(self.get(Protocol::Bittorrent))
        } else {
            own
        }
    }
}

impl FromIterator<(Protocol, Action)> for Policy {
    /// From configuration entries such as `bittorrent = "block"`; later entries win.
    fn from_iter<I: IntoIterator<Item = (Protocol, Action)>>(iter: I) -> Self {
        let mut p = Policy::default();
        for (protocol, action) in iter {
            p.set(protocol, action);
        }
        p
    }
}
