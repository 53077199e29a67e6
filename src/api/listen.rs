//! The API's listener: the connection discipline an internet-facing port needs.
//!
//! - At most `max_connections` open at once, and `max_per_address` from one source address;
//!   a connection past either is accepted and closed at once (left in the backlog it would hold
//!   up everyone behind it).
//! - A request's headers must arrive within `header_timeout`, which also closes idle keep-alive
//!   connections; its body within `body_timeout` after that; a TLS handshake within
//!   `header_timeout`.
//! - The file limit is raised to its hard limit at start, and the default connection cap leaves
//!   room under it for the node's own netlink sockets, pipes and database.
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConnLimits, TlsFiles};

mod body;

/// File descriptors kept for the node itself, below the connection cap.
const RESERVED_FDS: u64 = 512;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenStats {
    pub open: AtomicUsize,
    pub refused_full: AtomicU64,
    pub refused_per_address: AtomicU64,
}

/// The listener's counters in Prometheus text.
pub fn render_metrics(stats: &ListenStats, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# HELP waylume_api_connections Open API connections.\n\
         # TYPE waylume_api_connections gauge\nwaylume_api_connections {}\n\
         # HELP waylume_api_connections_refused_total API connections closed at accept: the \
         listener was full, or their address had its share.\n\
         # TYPE waylume_api_connections_refused_total counter\n\
         waylume_api_connections_refused_total{{reason=\"full\"}} {}\n\
         waylume_api_connections_refused_total{{reason=\"per_address\"}} {}\n",
        stats.open.load(Ordering::Relaxed),
        stats.refused_full.load(Ordering::Relaxed),
        stats.refused_per_address.load(Ordering::Relaxed),
    );
}

/// Raises the soft file limit to the hard one, as servers do; returns the limit now in force.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                log::warn!("cannot raise the file limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            log::warn!("cannot read the file limit: {e}");
            1024
        }
    }
}

/// The connection cap for a file limit: three quarters of what the node does not keep for itself.
pub fn default_max_connections(file_limit: u64) -> usize {
    let room = file_limit.saturating_sub(RESERVED_FDS) / 4 * 3;
    usize::try_from(room.clamp(16, 65_536)).unwrap_or(65_536)
}

/// Builds the TLS acceptor from the operator's PEM files (checked once already by the config).
pub fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs =
        CertificateDer::pem_slice_iter(files.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(files.key_pem.expose().as_bytes())?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Open connections per source address; a slot is given back when its guard drops.
#[derive(Default)]
struct PerAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct Slot(Arc<PerAddress>, IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.0.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What `serve` needs besides the socket and the service.
pub struct Listen {
    pub limits: ConnLimits,
    /// The resolved cap (`limits.max_connections` or the default for the file limit).
    pub max_connections: usize,
    pub tls: Option<TlsAcceptor>,
    pub stats: Arc<ListenStats>,
}

/// Accepts and serves connections until `stop` turns true, then lets open ones finish.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    how: Listen,
    mut stop: watch::Receiver<bool>,
) where
    S: tower_service::Service<
            http::Request<body::Timed<Incoming>>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let how = Arc::new(how);
    let conns = Arc::new(Semaphore::new(how.max_connections));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: the next
                    // accept may work; do not spin on the error meanwhile.
                    log::warn!("api: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            how.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(slot) = per_address.take(peer.ip(), how.limits.max_per_address) else {
            how.stats
                .refused_per_address
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (how, service, stop) = (how.clone(), service.clone(), stop.clone());
        tokio::spawn(async move {
            how.stats.open.fetch_add(1, Ordering::Relaxed);
            connection(stream, peer, service, &how, stop).await;
            how.stats.open.fetch_sub(1, Ordering::Relaxed);
            drop((permit, slot));
        });
    }
}

async fn connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    how: &Listen,
    mut stop: watch::Receiver<bool>,
) where
    S: tower_service::Service<
            http::Request<body::Timed<Incoming>>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = match &how.tls {
        None => Box::new(stream),
        Some(acceptor) => {
            match tokio::time::timeout(how.limits.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    log::debug!("api: TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let body_timeout = how.limits.body_timeout;
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let mut service = service.clone();
        service.call(req.map(|b| body::Timed::new(b, body_timeout)))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(how.limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                log::debug!("api: connection from {peer}: {e}");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(how.limits.body_timeout, conn).await;
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A closed channel means the owner is gone: stop too.
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests;
