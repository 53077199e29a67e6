//! systemd's notification socket: READY, STATUS, WATCHDOG, EXTEND_TIMEOUT_USEC and STOPPING.
//!
//! A datagram to a socket whose queue is full blocks the sender. The reconcile loop's WATCHDOG
//! and STATUS lines (`heartbeat`) therefore never wait: one that does not fit is dropped and the
//! next pass sends another. READY and STOPPING (`notify`) matter once each, so they wait a
//! little for room; call them off the async workers.
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub use sd_notify::NotifyState;

/// How long READY or STOPPING waits for room in the socket's queue.
const LIFECYCLE_WAIT: Duration = Duration::from_secs(2);

/// READY, STOPPING: waits up to two seconds for room. Blocks; not for async workers.
pub fn notify(states: &[NotifyState]) {
    send(states, Some(LIFECYCLE_WAIT));
}

/// WATCHDOG, STATUS: never waits.
pub fn heartbeat(states: &[NotifyState]) {
    send(states, None);
}

/// Runs `work` (the restore at start), telling systemd every `every` that the start goes on:
/// `EXTEND_TIMEOUT_USEC` of three periods and `status`, through `tell` (`heartbeat` in the
/// daemon). A start that restores every class of many limited peers after a reboot can take
/// longer than systemd's start timeout (the kernel's work grows with the square of the
/// classes: about 12 s at 10,000); it is not killed while it works, and a hung `tc` or `nft`
/// is still killed by its own deadline.
pub async fn extending_start<T>(
    status: &str,
    every: Duration,
    work: impl std::future::Future<Output = T>,
    tell: impl Fn(&[NotifyState]),
) -> T {
    let usec = u32::try_from(every.saturating_mul(3).as_micros()).unwrap_or(u32::MAX);
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => tell(&[
                NotifyState::ExtendTimeoutUsec(usec),
                NotifyState::Status(status),
            ]),
        }
    }
}

fn send(states: &[NotifyState], wait: Option<Duration>) {
    // Outside systemd there is no socket to tell; that is not an error.
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = send_to(&path, msg.as_bytes(), wait) {
        log::debug!("notify {:?}: {e}", msg.trim_end());
    }
}

fn send_to(path: &OsStr, msg: &[u8], wait: Option<Duration>) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match wait {
        Some(t) => sock.set_write_timeout(Some(t))?,
        None => sock.set_nonblocking(true)?,
    }
    // `@name` is a socket in the abstract namespace.
    let addr = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    sock.connect_addr(&addr)?;
    sock.send(msg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_long_start_extends_systemds_timeout_until_it_is_done() {
        let told = std::sync::Mutex::new(Vec::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // The work ends once it has seen two extensions: no timing in the test.
        let work = async move {
            rx.recv().await;
            rx.recv().await;
            "restored"
        };
        let out = extending_start("restoring 3 peers", Duration::from_millis(10), work, |s| {
            let line: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            told.lock().unwrap().push(line);
            let _ = tx.send(());
        })
        .await;
        assert_eq!(out, "restored");
        let told = told.into_inner().unwrap();
        assert_eq!(told.len(), 2, "{told:?}");
        assert_eq!(
            told[0],
            ["EXTEND_TIMEOUT_USEC=30000", "STATUS=restoring 3 peers"]
        );
    }

    #[tokio::test]
    async fn a_quick_start_tells_nothing() {
        let told = std::sync::Mutex::new(0);
        let out = extending_start("x", Duration::from_secs(10), async { 7 }, |_| {
            *told.lock().unwrap() += 1;
        })
        .await;
        assert_eq!((out, *told.lock().unwrap()), (7, 0));
    }

    #[test]
    fn a_full_queue_drops_a_heartbeat_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        // Fill the receiver's queue; nothing reads it.
        let mut sent = 0;
        while send_to(path.as_os_str(), b"WATCHDOG=1\n", None).is_ok() {
            sent += 1;
            assert!(sent < 100_000, "the queue never filled");
        }
        let full = send_to(path.as_os_str(), b"WATCHDOG=1\n", None).unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
        // Waiting is bounded too.
        let waited = send_to(
            path.as_os_str(),
            b"STOPPING=1\n",
            Some(Duration::from_millis(50)),
        );
        assert!(waited.is_err());
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }
}
