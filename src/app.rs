//! The composition root: builds the real adapters from the config, starts the tasks, talks to
//! systemd, and shuts down in order.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::api::{self, Api, ControlHealth};
use crate::config::{Config, Endpoint, check_subnet_overlap};
use crate::core::clientconf::ServerSide;
use crate::core::registry::Registry;
use crate::inspection::Inspection;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::store::{self, Store};
use crate::sys::link::Netlink;
use crate::sys::wg::{InterfaceSpec, RealDevice, WireGuard};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn notify(states: &[NotifyState]) {
    // Outside systemd there is no socket to tell; that is not an error.
    let _ = sd_notify::notify(states);
}

/// Reads the config the way `serve` and `check-config` both do.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let path = path
        .map(ToOwned::to_owned)
        .or_else(|| env.get("WAYLUME_CONFIG").map(Into::into));
    let text = match &path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("config: cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let read_secret = |p: &std::path::Path| std::fs::read_to_string(p);
    let src = crate::config::Sources {
        file: path.as_deref().zip(text.as_deref()),
        env: &env,
        read_secret: &read_secret,
        hostname: hostname.trim(),
    };
    Ok(Config::load(&src)?)
}

/// Checks against the host what the config alone cannot tell: the subnet against existing routes.
pub async fn check_host(cfg: &Config) -> Result<()> {
    let nl = Netlink::connect()?;
    let routes = nl.ipv4_routes().await?;
    check_subnet_overlap(
        cfg.wireguard.subnet,
        &routes,
        cfg.wireguard.interface.as_str(),
    )?;
    Ok(())
}

/// The endpoint for client configs and the outward (default-route) interface.
async fn endpoint(cfg: &Config) -> Result<(Endpoint, Option<String>)> {
    let nl = Netlink::connect()?;
    let route = nl.default_route().await?;
    let outward = route.as_ref().map(|(dev, _)| dev.clone());
    if let Some(e) = &cfg.wireguard.endpoint {
        return Ok((e.clone(), outward));
    }
    match route {
        Some((_, Some(addr))) => Ok((
            Endpoint::from_parts(&addr.to_string(), cfg.wireguard.listen_port),
            outward,
        )),
        _ => bail!(
            "wireguard.endpoint: not set, and the host has no default route with an IPv4 address to derive it from"
        ),
    }
}

/// The IFB that carries a WireGuard interface's upload traffic (named as the NixOS module expects).
pub fn ifb_name(iface: &str) -> String {
    crate::core::plan::ifb_name(iface)
}

/// Isolation, speed limits and caps through `nft` and `tc`.
fn kernel_policy(
    cfg: &Config,
    outward: Option<&str>,
) -> Result<Arc<dyn crate::sys::policy::Policy>> {
    use crate::sys::runner::SystemRunner;
    let runner: Arc<dyn crate::sys::runner::Runner> = Arc::new(SystemRunner::new());
    let wgc = &cfg.wireguard;
    let (blocked_v4, blocked_v6) = if cfg.dataplane.block_private_networks {
        crate::sys::dataplane::blocked_defaults(runner.as_ref(), wgc.subnet, wgc.subnet_v6)?
    } else {
        (Vec::new(), Vec::new())
    };
    let base = crate::core::plan::PlanInput {
        iface: wgc.interface.to_string(),
        ifb: ifb_name(wgc.interface.as_str()),
        subnet: wgc.subnet,
        subnet_v6: wgc.subnet_v6,
        server_addr: wgc.server_address(),
        outward: outward.map(str::to_string),
        isolate: cfg.dataplane.isolation,
        blocked_v4,
        blocked_v6,
        shaping: cfg.dataplane.shaping,
        peers: Vec::new(),
    };
    let dp = crate::sys::dataplane::Dataplane::new(runner);
    Ok(Arc::new(crate::sys::policy::KernelPolicy::new(dp, base)))
}

pub async fn serve(cfg: Config) -> Result<()> {
    let store = Store::open(&cfg.state_dir)?;
    let private_key =
        store::load_or_create_key(&cfg.state_dir, wireguard_control::Key::generate_private)?;
    check_host(&cfg).await?;
    let (endpoint, outward) = endpoint(&cfg).await?;
    let wgc = &cfg.wireguard;
    let mut addresses = vec![(IpAddr::V4(wgc.server_address()), wgc.subnet.prefix_len())];
    if let Some(v6) = wgc.subnet_v6 {
        let server6 = std::net::Ipv6Addr::from(u128::from(v6.network()) + 1);
        addresses.push((IpAddr::V6(server6), v6.prefix_len()));
    }
    let device = RealDevice::new(InterfaceSpec {
        name: wgc.interface.clone(),
        backend: wgc.backend,
        private_key: private_key.clone(),
        listen_port: wgc.listen_port,
        addresses,
        mtu: wgc.mtu,
    })?;
    let wg: Arc<dyn WireGuard> = Arc::new(device);
    let server = ServerSide {
        public_key: private_key.get_public(),
        endpoint: endpoint.as_str().to_string(),
        dns: wgc.dns.clone(),
        mtu: wgc.mtu,
        persistent_keepalive: wgc.persistent_keepalive,
    };
    let registry = Registry::new(wgc.subnet, wgc.subnet_v6, cfg.node.max_capacity);
    let policy = kernel_policy(&cfg, outward.as_deref())?;
    let node = Arc::new(Node::open(
        registry,
        store,
        server,
        wg,
        policy,
        cfg.peers.clone(),
    )?);
    let metrics = Arc::new(Metrics::default());

    let n = node.clone();
    let repairs = tokio::task::spawn_blocking(move || n.reconcile(true)).await??;
    let (peers, _) = node.count();
    log::info!(
        "{}: up ({} backend), {peers} peers restored{}",
        wgc.interface,
        node.backend_name(),
        if repairs.interface_created {
            ", interface created"
        } else {
            ""
        }
    );
    metrics.dataplane_ok.store(true, Ordering::Relaxed);
    let inspection = start_inspection(&cfg, &metrics);

    let secret = cfg
        .api
        .secret
        .as_ref()
        .map(|s| s.expose().as_bytes().to_vec());
    if secret.is_none() {
        log::warn!(
            "no API secret set: the API accepts unsigned requests and listens on {} only",
            cfg.api.bind
        );
    }
    // The control plane: None in standalone mode, and then nothing is sent anywhere.
    let control = crate::control::ControlPlane::from_config(&cfg)?;
    let control_health = control.as_ref().map(|cp| cp.health());
    let source = crate::control_source::ControlSource::new(
        node.clone(),
        metrics.clone(),
        cfg.node.max_capacity,
    );
    let source = Arc::new(match &inspection {
        Some(i) => source.with_inspection(i.clone()),
        None => source,
    });
    let weak = Arc::downgrade(&source);
    node.on_removed(move |status, why| {
        if let Some(src) = weak.upgrade() {
            src.removed(status, crate::control_source::session_status(why));
        }
    });
    if let Some(h) = control_health.clone() {
        metrics.add_source(move |out| {
            let h = h.get();
            out.push_str(&format!(
                "# TYPE waylume_heartbeat_failures_total counter\nwaylume_heartbeat_failures_total {}\n",
                h.heartbeat_failures_total
            ));
        });
    }
    let api = Api::new(
        node.clone(),
        metrics.clone(),
        cfg.node.max_capacity,
        secret.as_deref().map(|s| (s, cfg.server_id.as_str())),
        unix_now,
        move || match &control_health {
            None => ControlHealth {
                state: "standalone".into(),
                ok: true,
            },
            Some(h) => {
                let h = h.get();
                ControlHealth {
                    state: h.summary(),
                    ok: h.is_healthy(),
                }
            }
        },
    );
    let api = Arc::new(match &inspection {
        Some(i) => api.with_inspection(i.clone()),
        None => api,
    });
    let addr = SocketAddr::new(cfg.api.bind, cfg.api.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("api: cannot listen on {addr}"))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        warp::serve(api::routes(api))
            .incoming(listener)
            .graceful(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .run(),
    );
    log::info!("api listening on {addr}");
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("{peers} peers; api on {addr}")),
    ]);

    // Registers in the background: READY above never waits for Supabase.
    let (control_stop, control_rx) = watch::channel(false);
    let control_task = control.map(|cp| tokio::spawn(cp.run(source.clone(), control_rx)));

    let reconciler = tokio::spawn(crate::reconcile::run(
        node.clone(),
        metrics.clone(),
        inspection.clone(),
        cfg.dataplane.reconcile_interval,
        node.trigger(),
        stop_rx.clone(),
    ));

    shutdown_signal().await;
    log::info!("stopping");
    notify(&[NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = stop_rx.changed().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let _ = reconciler.await;
    if let Some(i) = &inspection {
        i.stop();
    }
    let n = node.clone();
    let teardown = cfg.teardown_on_stop;
    tokio::task::spawn_blocking(move || {
        if let Err(e) = n.flush() {
            log::error!("saving usage on exit failed: {e}");
        }
        if teardown {
            match n.teardown() {
                Ok(()) => log::info!("data plane removed (teardown_on_stop)"),
                Err(e) => log::error!("teardown failed: {e}"),
            }
        }
    })
    .await?;
    // Final usage to Supabase and `offline`, bounded by the control plane's own budget (5 s).
    control_stop.send_replace(true);
    if let Some(t) = control_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    Ok(())
}

/// Starts the capture on the WireGuard interface when inspection is on.
fn start_inspection(cfg: &Config, metrics: &Arc<Metrics>) -> Option<Arc<Inspection>> {
    if !cfg.inspection.enabled {
        return None;
    }
    let wgc = &cfg.wireguard;
    let mut nets = vec![ipnet::IpNet::V4(wgc.subnet)];
    nets.extend(wgc.subnet_v6.map(ipnet::IpNet::V6));
    // Block and throttle need the flow table; a report-only policy writes nothing.
    use crate::core::classify::{Action, Protocol};
    let policy = &cfg.inspection.policy;
    let enforcing = Protocol::ALL
        .iter()
        .any(|p| policy.get(*p) != Action::Report);
    let enforcer = if enforcing {
        let runner = Arc::new(crate::sys::runner::SystemRunner::new());
        match crate::sys::flows::FlowEnforcer::start(runner) {
            Ok(e) => Some(e),
            Err(e) => {
                log::error!("flow policy disabled: cannot start its thread: {e}");
                None
            }
        }
    } else {
        None
    };
    let enforcer = std::sync::Mutex::new(enforcer);
    let i = Arc::new(Inspection::new(
        wgc.interface.as_str(),
        nets,
        policy.clone(),
        cfg.inspection.log_hostnames,
        move |d| {
            crate::inspection::log_decision(d);
            if let Some(e) = enforcer.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                e.submit(d);
            }
        },
    ));
    i.restart();
    let m = i.clone();
    metrics.add_source(move |out| m.render_metrics(out));
    Some(i)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
