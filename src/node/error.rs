//! The node's errors by what they mean to a caller: no such peer, a clash with another peer,
//! no room, a policy the data plane refuses, or a part of the node that cannot act now. What
//! failed underneath stays attached as the source, for the log.
use crate::core::plan::PlanError;
use crate::core::pool::PoolError;
use crate::core::registry::CreateError;
use crate::store::StoreError;
use crate::sys::dataplane::DataplaneError;
use crate::sys::wg::WgError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("peer not found")]
    NotFound,
    /// The public key or `session_id` belongs to another peer.
    #[error(transparent)]
    Conflict(CreateError),
    /// At capacity, or no address left.
    #[error(transparent)]
    Full(CreateError),
    /// The data plane's rules refuse the peer's policy; nothing was changed.
    #[error("{0}")]
    Rejected(#[from] PlanError),
    /// The store, WireGuard or the data plane failed, or the node is not taking changes; the
    /// change was undone.
    #[error(transparent)]
    Unavailable(#[from] Fault),
}

/// What could not act.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    WireGuard(#[from] WgError),
    #[error(transparent)]
    Dataplane(DataplaneError),
    /// The registry and the address pool disagree (a bug, not the caller's doing).
    #[error(transparent)]
    Pool(PoolError),
    #[error("the node is busy: {0} changes are waiting")]
    Busy(usize),
    #[error("the node has stopped")]
    Stopped,
}

impl From<CreateError> for NodeError {
    fn from(e: CreateError) -> NodeError {
        match e {
            CreateError::KeyInUse | CreateError::SessionMismatch => NodeError::Conflict(e),
            CreateError::AtCapacity(_) | CreateError::Pool(PoolError::Exhausted) => {
                NodeError::Full(e)
            }
            CreateError::Pool(p) => NodeError::Unavailable(Fault::Pool(p)),
        }
    }
}

impl From<DataplaneError> for NodeError {
    fn from(e: DataplaneError) -> NodeError {
        match e {
            DataplaneError::Plan(p) => NodeError::Rejected(p),
            e => NodeError::Unavailable(Fault::Dataplane(e)),
        }
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> NodeError {
        NodeError::Unavailable(Fault::Store(e))
    }
}

impl From<WgError> for NodeError {
    fn from(e: WgError) -> NodeError {
        NodeError::Unavailable(Fault::WireGuard(e))
    }
}
