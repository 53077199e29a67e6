//! The way in to the node from everywhere else. Changes are jobs run one at a time on the
//! node's own thread; reads come from the view it publishes and never wait for a job.
//!
//! The queue is bounded: with `QUEUE` jobs waiting, a new change is refused as busy (503)
//! rather than piling up behind a stuck kernel call.
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, oneshot, watch};

use super::reading::{DeviceReader, Reading};
use super::{Fault, Node, NodeError, NodeView, OwingHook, PeerStatus, Removal, RemovalHook};
use crate::core::clientconf::{self, ServerSide};
use crate::core::peer::Peer;
use crate::core::registry::Selector;
use crate::sys::policy::PeerEnforcer;

/// Changes waiting for the node's thread before new ones are refused.
pub const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce(&mut Node) + Send>;

#[derive(Clone)]
pub struct NodeHandle {
    jobs: SyncSender<Job>,
    view: watch::Receiver<Arc<NodeView>>,
    server: Arc<ServerSide>,
    policy: Arc<dyn PeerEnforcer>,
    reader: Arc<DeviceReader>,
    trigger: Arc<Notify>,
    removal_hook: Arc<OnceLock<RemovalHook>>,
    owing_hook: Arc<OnceLock<OwingHook>>,
}

impl Node {
    /// Starts the node's thread; the node lives until the last handle is dropped.
    pub fn spawn(self) -> std::io::Result<NodeHandle> {
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let handle = NodeHandle {
            jobs,
            view: self.view.subscribe(),
            server: self.server.clone(),
            policy: self.policy.clone(),
            reader: self.reader.clone(),
            trigger: self.trigger.clone(),
            removal_hook: self.removal_hook.clone(),
            owing_hook: self.owing_hook.clone(),
        };
        std::thread::Builder::new()
            .name("waylume-node".into())
            .spawn(move || {
                let mut node = self;
                for job in rx {
                    // A panic leaves the state as the job left it, as a poisoned lock would;
                    // the caller gets an error and the reconcile loop repairs the kernel.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut node))).is_err() {
                        log::error!("a change to the node panicked; the next reconcile repairs");
                    }
                }
            })?;
        Ok(handle)
    }
}

impl NodeHandle {
    /// Runs `f` on the node's thread and returns its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node) -> T + Send + 'static,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |n| {
            let _ = tx.send(f(n));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Fault::Busy(QUEUE),
            TrySendError::Disconnected(_) => Fault::Stopped,
        })?;
        rx.await.map_err(|_| NodeError::Unavailable(Fault::Stopped))
    }

    /// The node as of its last change or reconcile pass.
    pub fn view(&self) -> Arc<NodeView> {
        self.view.borrow().clone()
    }

    /// Notified after every change to a peer; the reconcile loop waits on it.
    pub fn trigger(&self) -> Arc<Notify> {
        self.trigger.clone()
    }

    pub fn server(&self) -> &ServerSide {
        &self.server
    }

    /// `kernel` or `userspace`, as of the last change or pass.
    pub fn backend_name(&self) -> &'static str {
        self.view.borrow().backend
    }

    pub fn client_config(&self, peer: &Peer) -> String {
        clientconf::render(peer, &self.server)
    }

    /// Tells `f` about every peer removed, with its final counters, after the removal. Runs on
    /// the node's thread: `f` must not wait.
    pub fn on_removed(&self, f: impl Fn(&PeerStatus, Removal) + Send + Sync + 'static) {
        if self.removal_hook.set(Box::new(f)).is_err() {
            log::warn!("a removal hook was already set");
        }
    }

    /// Makes every removal write `f`'s row into the store's outbox in the removal's own
    /// transaction (only with a control plane: nothing else would ever drain it). Runs on the
    /// node's thread: `f` must not wait.
    pub fn owe_on_removal(
        &self,
        f: impl Fn(&PeerStatus, Removal) -> serde_json::Value + Send + Sync + 'static,
    ) {
        if self.owing_hook.set(Box::new(f)).is_err() {
            log::warn!("an owing hook was already set");
        }
    }

    /// The data plane, for the reconcile's check made off the node's thread (reads only).
    pub(super) fn policy(&self) -> Arc<dyn PeerEnforcer> {
        self.policy.clone()
    }

    /// WireGuard's reads, for the reconcile's read made off the node's thread.
    pub(super) fn reader(&self) -> Arc<DeviceReader> {
        self.reader.clone()
    }

    /// A read of the device made after this call, off the node's thread.
    pub async fn read_device(&self) -> Result<Arc<Reading>, NodeError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || reader.read())
            .await
            .map_err(|_| NodeError::Unavailable(Fault::Stopped))?
            .map_err(NodeError::from)
    }

    /// Removes a peer with its final counters. The device (every peer: WireGuard reads no
    /// other way) is read off the node's thread, so changes queued behind the delete do not
    /// wait for it; deletes asked for together share one read.
    pub async fn delete(&self, sel: Selector, why: Removal) -> Result<PeerStatus, NodeError> {
        let reading = self.read_device().await?;
        self.call(move |n| n.delete_after(&sel, why, &reading))
            .await?
    }
}
