//! The WireGuard interface: the seam the node talks to, and the real device behind it (kernel
//! module through netlink, or `wireguard-go` started and supervised by the daemon).
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use wireguard_control::{
    Backend as WgBackend, Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder,
};

use super::link::{LinkError, Netlink};
use crate::config::{Backend, IfName};
use crate::core::peer::LiveStats;

#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error(
        "{iface}: no WireGuard kernel module ({cause}) and no wireguard-go on PATH; install one of them"
    )]
    NoImplementation { iface: String, cause: String },
    #[error("{iface}: cannot start wireguard-go: {source}")]
    Spawn {
        iface: String,
        source: std::io::Error,
    },
    #[error("{iface}: wireguard-go did not bring the interface up within {secs} s")]
    SpawnTimeout { iface: String, secs: u64 },
    #[error("{iface}: {what}: {source}")]
    Device {
        iface: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// One peer as WireGuard needs it.
#[derive(Clone)]
pub struct PeerSpec {
    pub public_key: Key,
    pub preshared_key: Key,
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Set when restoring a peer onto a re-created interface: with an endpoint and a keepalive
    /// the node starts the handshake itself, so the client need not wait out its own timers.
    pub resume: Option<(std::net::SocketAddr, u16)>,
}

/// One reading of the device: its identity and every peer with its counters.
#[derive(Debug, Default, Clone)]
pub struct DeviceView {
    /// Private key and listen port are what the node wants.
    pub identity_ok: bool,
    pub peers: Vec<(Key, LiveStats)>,
}

/// What the node needs from a WireGuard implementation. Each call is O(1) in the number of peers
/// except `device`, which reads them all.
pub trait WireGuard: Send + Sync + 'static {
    /// Creates the interface if it is missing (then also setting its key and port) and brings
    /// addresses, MTU and link state to what they should be. Returns true when it was created.
    fn ensure_interface(&self) -> Result<bool, WgError>;
    /// Sets the private key and listen port.
    fn set_identity(&self) -> Result<(), WgError>;
    /// Adds a peer or replaces its settings.
    fn upsert_peer(&self, peer: &PeerSpec) -> Result<(), WgError>;
    fn remove_peer(&self, public_key: &Key) -> Result<(), WgError>;
    /// Removes many peers in one update.
    fn remove_peers(&self, keys: &[Key]) -> Result<(), WgError> {
        keys.iter().try_for_each(|k| self.remove_peer(k))
    }
    /// The device as it is now, every peer with its counters.
    fn device(&self) -> Result<DeviceView, WgError>;
    /// Removes the interface (and stops wireguard-go).
    fn teardown(&self) -> Result<(), WgError>;
    /// `kernel`, `userspace` or `fake`, for health and logs.
    fn backend_name(&self) -> &'static str;
}

/// The interface's wanted shape.
pub struct InterfaceSpec {
    pub name: IfName,
    pub backend: Backend,
    pub private_key: Key,
    pub listen_port: u16,
    pub addresses: Vec<(IpAddr, u8)>,
    pub mtu: u16,
}

pub struct RealDevice {
    spec: InterfaceSpec,
    iface: InterfaceName,
    /// Drives the netlink requests (rtnetlink is async only). Its own single-threaded runtime,
    /// entered only from the node's thread, never from the daemon's: a blocking call never
    /// re-enters the runtime that serves the API.
    rt: Option<tokio::runtime::Runtime>,
    active: Mutex<Option<WgBackend>>,
    child: Mutex<Option<Child>>,
}

fn userspace_socket(name: &str) -> PathBuf {
    Path::new("/run/wireguard").join(format!("{name}.sock"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

impl RealDevice {
    /// Its methods block and must be called outside any async runtime (the node's thread).
    pub fn new(spec: InterfaceSpec) -> Result<RealDevice, WgError> {
        let iface = spec
            .name
            .as_str()
            .parse::<InterfaceName>()
            .map_err(|e| WgError::Device {
                iface: spec.name.to_string(),
                what: "interface name",
                source: std::io::Error::other(e.to_string()),
            })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| WgError::Device {
                iface: spec.name.to_string(),
                what: "netlink runtime",
                source,
            })?;
        Ok(RealDevice {
            spec,
            iface,
            rt: Some(rt),
            active: Mutex::new(None),
            child: Mutex::new(None),
        })
    }

    fn name(&self) -> String {
        self.spec.name.to_string()
    }

    /// Runs one netlink request to completion on the device's own runtime.
    fn netlink<T>(
        &self,
        f: impl AsyncFnOnce(&Netlink) -> Result<T, LinkError>,
    ) -> Result<T, WgError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking here would stall an async worker; the node calls from its own thread.
            return Err(WgError::Device {
                iface: self.name(),
                what: "netlink",
                source: std::io::Error::other("called from inside the async runtime"),
            });
        }
        let rt = self.rt.as_ref().ok_or_else(|| WgError::Device {
            iface: self.name(),
            what: "netlink",
            source: std::io::Error::other("runtime gone"),
        })?;
        let nl = {
            let _guard = rt.enter();
            Netlink::connect()?
        };
        Ok(rt.block_on(f(&nl))?)
    }

    fn err(&self, what: &'static str) -> impl Fn(std::io::Error) -> WgError + '_ {
        move |source| WgError::Device {
            iface: self.name(),
            what,
            source,
        }
    }

    fn backend(&self) -> WgBackend {
        let found = *self.active.lock().unwrap_or_else(|e| e.into_inner());
        found.unwrap_or(if userspace_socket(self.spec.name.as_str()).exists() {
            WgBackend::Userspace
        } else {
            WgBackend::Kernel
        })
    }

    fn set_backend(&self, b: WgBackend) {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
    }

    /// Creates the link with the configured backend; returns which one carries it.
    fn create(&self) -> Result<WgBackend, WgError> {
        let name = self.spec.name.as_str();
        let kernel = || self.netlink(async |nl| nl.create_wireguard(name).await);
        match self.spec.backend {
            Backend::Kernel => kernel().map(|()| WgBackend::Kernel),
            Backend::Userspace => self.spawn_userspace().map(|()| WgBackend::Userspace),
            Backend::Auto => match kernel() {
                Ok(()) => Ok(WgBackend::Kernel),
                Err(e) if on_path("wireguard-go") => {
                    log::info!("{name}: kernel WireGuard unavailable ({e}); using wireguard-go");
                    self.spawn_userspace().map(|()| WgBackend::Userspace)
                }
                Err(e) => Err(WgError::NoImplementation {
                    iface: name.into(),
                    cause: e.to_string(),
                }),
            },
        }
    }

    fn spawn_userspace(&self) -> Result<(), WgError> {
        let name = self.spec.name.as_str();
        // Taken out of the lock: nothing below (a process start, netlink, waiting) holds it.
        let old = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut old) = old {
            // Reap the one that died (or stop a stuck one) before starting another.
            if !matches!(old.try_wait(), Ok(Some(_))) {
                let _ = old.kill();
                let _ = old.wait();
            }
        }
        // Its own process group: a Ctrl-C in the operator's terminal is for the daemon only.
        let mut child = Command::new("wireguard-go")
            .args(["-f", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("WG_PROCESS_FOREGROUND", "1")
            .process_group(0)
            .spawn()
            .map_err(|source| WgError::Spawn {
                iface: name.into(),
                source,
            })?;
        log::info!("{name}: started wireguard-go (pid {})", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let up = loop {
            if self.netlink(async |nl| nl.index(name).await)?.is_some()
                && userspace_socket(name).exists()
            {
                break Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let source = std::io::Error::other(format!("exited with {status}"));
                break Err(WgError::Spawn {
                    iface: name.into(),
                    source,
                });
            }
            if Instant::now() >= deadline {
                break Err(WgError::SpawnTimeout {
                    iface: name.into(),
                    secs: 10,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Kept either way, so that the next attempt or teardown reaps it.
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        up
    }
}

use std::os::unix::process::CommandExt;

impl Drop for RealDevice {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks; this one may be dropped on an async thread.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl WireGuard for RealDevice {
    fn ensure_interface(&self) -> Result<bool, WgError> {
        let name = self.spec.name.as_str();
        let exists = self.netlink(async |nl| nl.index(name).await)?.is_some();
        // A userspace link whose process died leaves a stale socket; the link goes with it.
        let created = if exists {
            false
        } else {
            let b = self.create()?;
            self.set_backend(b);
            true
        };
        if created {
            self.set_identity()?;
        }
        let (addresses, mtu) = (&self.spec.addresses, self.spec.mtu);
        self.netlink(async |nl| nl.configure(name, addresses, mtu).await)?;
        Ok(created)
    }

    fn set_identity(&self) -> Result<(), WgError> {
        DeviceUpdate::new()
            .set_private_key(self.spec.private_key.clone())
            .set_listen_port(self.spec.listen_port)
            .apply(&self.iface, self.backend())
            .map_err(self.err("set key and port"))
    }

    fn upsert_peer(&self, p: &PeerSpec) -> Result<(), WgError> {
        let mut b = PeerConfigBuilder::new(&p.public_key)
            .set_preshared_key(p.preshared_key.clone())
            .replace_allowed_ips();
        for (ip, len) in &p.allowed_ips {
            b = b.add_allowed_ip(*ip, *len);
        }
        if let Some((endpoint, keepalive)) = p.resume {
            b = b
                .set_endpoint(endpoint)
                .set_persistent_keepalive_interval(keepalive);
        }
        DeviceUpdate::new()
            .add_peer(b)
            .apply(&self.iface, self.backend())
            .map_err(self.err("add peer"))
    }

    fn remove_peer(&self, key: &Key) -> Result<(), WgError> {
        DeviceUpdate::new()
            .remove_peer_by_key(key)
            .apply(&self.iface, self.backend())
            .map_err(self.err("remove peer"))
    }

    fn remove_peers(&self, keys: &[Key]) -> Result<(), WgError> {
        let update = keys
            .iter()
            .fold(DeviceUpdate::new(), |u, k| u.remove_peer_by_key(k));
        update
            .apply(&self.iface, self.backend())
            .map_err(self.err("remove peers"))
    }

    fn device(&self) -> Result<DeviceView, WgError> {
        let dev = Device::get(&self.iface, self.backend()).map_err(self.err("read device"))?;
        let identity_ok = dev.private_key.as_ref() == Some(&self.spec.private_key)
            && dev.listen_port == Some(self.spec.listen_port);
        let peers = dev
            .peers
            .into_iter()
            .map(|p| {
                let hs = p
                    .stats
                    .last_handshake_time
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                let stats = LiveStats {
                    rx: p.stats.rx_bytes,
                    tx: p.stats.tx_bytes,
                    last_handshake: hs.map(|d| d.as_secs()).filter(|s| *s > 0),
                    endpoint: p.config.endpoint,
                };
                (p.config.public_key, stats)
            })
            .collect();
        Ok(DeviceView { identity_ok, peers })
    }

    fn teardown(&self) -> Result<(), WgError> {
        let name = self.spec.name.as_str();
        self.netlink(async |nl| nl.delete(name).await)?;
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = child {
            // Deleting the link makes wireguard-go exit; reap it, or stop it if it lingers.
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        match self.backend() {
            WgBackend::Userspace => "userspace",
            _ => "kernel",
        }
    }
}
