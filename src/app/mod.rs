//! The composition root: builds the real adapters from the config, starts the tasks, talks to
//! systemd, and shuts down in order.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;

use crate::api::metrics::Metrics;
use crate::api::{self, Api};
use crate::config::{Config, Endpoint, check_subnet_overlap};
use crate::core::clientconf::ServerSide;
use crate::core::registry::Registry;
use crate::node::{Node, Seams};
use crate::store::{self, Store};
use crate::sys::clock::unix_now;
use crate::sys::link::Netlink;
use crate::sys::notify::{NotifyState, notify};
use crate::sys::wg::{InterfaceSpec, RealDevice, WireGuard};

mod control_feed;
mod inspection;

pub use control_feed::ControlSource;

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

/// The command runner for `nft`, `tc` and `ip`: with the configured deadline, watched by `commands`.
fn runner(
    cfg: &Config,
    commands: &Arc<crate::sys::runner::InFlight>,
) -> crate::sys::runner::SystemRunner {
    crate::sys::runner::SystemRunner::new()
        .with_timeout(cfg.dataplane.command_timeout)
        .with_in_flight(commands.clone())
}

/// The networks the fence leaves open: the tunnel's own and the operator's allow-list.
fn fence_holes(cfg: &Config) -> Vec<ipnet::IpNet> {
    let mut holes = vec![ipnet::IpNet::V4(cfg.wireguard.subnet)];
    holes.extend(cfg.wireguard.subnet_v6.map(ipnet::IpNet::V6));
    holes
}

/// Isolation, speed limits and caps through `nft` and `tc`.
/// Returns the policy and its settings, which the node checks each peer's policy against.
fn kernel_policy(
    cfg: &Config,
    outward: Option<&str>,
    commands: &Arc<crate::sys::runner::InFlight>,
) -> Result<(
    Arc<crate::sys::policy::KernelEnforcer>,
    crate::core::plan::PlanInput,
)> {
    let runner: Arc<dyn crate::sys::runner::Runner> = Arc::new(runner(cfg, commands));
    let wgc = &cfg.wireguard;
    let (blocked_v4, blocked_v6) = if cfg.dataplane.block_private_networks {
        crate::sys::dataplane::fenced_networks(
            runner.as_ref(),
            &fence_holes(cfg),
            &cfg.dataplane.allow_networks,
        )?
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
    let link = crate::sys::nft::NfSocket::open()?;
    let tc = crate::sys::tc::TcSocket::open()?;
    let dp =
        crate::sys::dataplane::Dataplane::new(runner, Arc::new(link)).with_tc_read(Arc::new(tc));
    Ok((
        Arc::new(crate::sys::policy::KernelEnforcer::new(dp, base.clone())),
        base,
    ))
}

/// Recomputes the fence whenever the host gains or loses an address, and has the reconcile
/// loop write it: a network on an interface added while running is fenced within a pass.
fn follow_host_addresses(
    cfg: &Config,
    commands: &Arc<crate::sys::runner::InFlight>,
    policy: Arc<crate::sys::policy::KernelEnforcer>,
    reconcile: Arc<tokio::sync::Notify>,
) {
    let holes = fence_holes(cfg);
    let allow = cfg.dataplane.allow_networks.clone();
    let changed = Arc::new(tokio::sync::Notify::new());
    let notify = changed.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::sys::link::watch_addresses(|| notify.notify_one()).await {
            log::error!("address changes are not followed: {e}");
        }
    });
    let runner = Arc::new(runner(cfg, commands));
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            let (holes, allow, runner) = (holes.clone(), allow.clone(), runner.clone());
            let fence = tokio::task::spawn_blocking(move || {
                crate::sys::dataplane::fenced_networks(runner.as_ref(), &holes, &allow)
            })
            .await;
            match fence {
                Ok(Ok((v4, v6))) => {
                    if policy.set_fence(v4, v6) {
                        log::info!(target: "dataplane", "host addresses changed: fence updated");
                        reconcile.notify_one();
                    }
                }
                Ok(Err(e)) => log::error!("cannot read the host's addresses: {e}"),
                Err(e) => log::error!("fence update failed: {e}"),
            }
        }
    });
}

pub async fn serve(cfg: Config) -> Result<()> {
    let started = unix_now();
    let file_limit = api::listen::raise_file_limit();
    let store = Store::open(&cfg.state_dir)?;
    let (floor, previous_floor) = api::replay::ReplayFloor::open(&cfg.state_dir)?;
    let tls = cfg
        .api
        .tls
        .as_ref()
        .map(api::listen::tls_acceptor)
        .transpose()
        .context("api: TLS certificate and key")?;
    // Every nft/tc/ip call of the node, watched so the API can refuse policy changes while one hangs.
    let commands = Arc::new(crate::sys::runner::InFlight::default());
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
    let (policy, rules) = kernel_policy(&cfg, outward.as_deref(), &commands)?;
    let seams = Seams {
        wg,
        policy: policy.clone(),
        rules,
    };
    // The node's own thread: every kernel call happens there, outside the async runtime.
    let node = Node::open(registry, store, server, seams, cfg.peers.clone())?.spawn()?;
    if cfg.dataplane.block_private_networks {
        follow_host_addresses(&cfg, &commands, policy, node.trigger());
    }
    let metrics = Arc::new(Metrics::with_per_peer(cfg.api.metrics_per_peer));

    let label = format!("restoring {} peers", node.view().peers.len());
    let restore = node.call(|n| n.reconcile(true));
    let restore = crate::sys::notify::extending_start(
        &label,
        std::time::Duration::from_secs(10),
        restore,
        crate::sys::notify::heartbeat,
    );
    let repairs = crate::progress::while_running(&label, restore).await??;
    let peers = node.view().peers.len();
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
    let inspection = inspection::start(&cfg, &metrics, &node, &commands);

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
    let source = ControlSource::new(node.clone(), cfg.node.max_capacity);
    let source = Arc::new(match &inspection {
        Some(i) => source.with_inspection(i.clone()),
        None => source,
    });
    if let Some(i) = inspection.clone() {
        node.on_removed(move |status, _why| i.peer_removed(&status.peer.id));
    }
    if control.is_some() {
        control_feed::ControlSource::owe_removals(&source);
    }
    if let Some(h) = control_health.clone() {
        metrics.add_source(move |out| h.get().render_metrics(out));
    }
    let api = Api::new(
        node.clone(),
        metrics.clone(),
        cfg.node.max_capacity,
        secret.as_deref().map(|s| (s, cfg.server_id.as_str())),
        unix_now,
        control_health,
    );
    let api = api
        .with_replay_floor(floor, previous_floor, started)
        .with_commands(commands.clone(), api::STUCK_AFTER);
    // Secrets travel in clear only where nobody else can listen, or when the operator says so.
    let api = if cfg.api.seal && !cfg.api.bind.is_loopback() {
        api
    } else {
        api.without_sealing()
    };
    let api = Arc::new(match &inspection {
        Some(i) => api.with_inspection(i.clone()),
        None => api,
    });
    let addr = SocketAddr::new(cfg.api.bind, cfg.api.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("api: cannot listen on {addr}"))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let max_connections = cfg
        .api
        .limits
        .max_connections
        .unwrap_or_else(|| api::listen::default_max_connections(file_limit));
    let listen_stats = Arc::new(api::listen::ListenStats::default());
    let how = api::listen::Listen {
        limits: cfg.api.limits.clone(),
        max_connections,
        tls,
        stats: listen_stats.clone(),
    };
    metrics.add_source(move |out| api::listen::render_metrics(&listen_stats, out));
    let c = commands.clone();
    metrics.add_source(move |out| {
        out.push_str(&format!(
            "# HELP waylume_command_timeouts_total nft/tc/ip calls killed at their deadline.\n\
             # TYPE waylume_command_timeouts_total counter\nwaylume_command_timeouts_total {}\n\
             # HELP waylume_commands_stuck nft/tc/ip calls that change the kernel, running for more than 3 s.\n\
             # TYPE waylume_commands_stuck gauge\nwaylume_commands_stuck {}\n",
            c.timeouts(),
            c.stuck_count(api::STUCK_AFTER),
        ));
    });
    let server = tokio::spawn(api::listen::serve(
        listener,
        warp::service(api::routes(api)),
        how,
        stop_rx.clone(),
    ));
    log::info!(
        "api listening on {addr}{} (at most {max_connections} connections, file limit {file_limit})",
        if cfg.api.tls.is_some() {
            " with TLS"
        } else {
            ""
        }
    );
    // May wait briefly for room on systemd's socket: not on an async worker's time.
    tokio::task::block_in_place(|| {
        notify(&[
            NotifyState::Ready,
            NotifyState::Status(&format!("{peers} peers; api on {addr}")),
        ])
    });

    // Registers in the background: READY above never waits for Supabase.
    let (control_stop, control_rx) = watch::channel(false);
    let control_task = control.map(|cp| tokio::spawn(cp.run(source.clone(), control_rx)));

    let reconciler = tokio::spawn(crate::node::reconcile::run(
        node.clone(),
        inspection.clone(),
        cfg.dataplane.reconcile_interval,
        stop_rx.clone(),
    ));

    shutdown_signal().await;
    // `offline` first, so the fleet stops sending sessions here while the API drains; the
    // control plane then reports usage with what is left of its budget.
    control_stop.send_replace(true);
    log::info!("stopping");
    tokio::task::block_in_place(|| notify(&[NotifyState::Stopping]));
    let _ = stop_tx.send(true);
    let _ = stop_rx.changed().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let _ = reconciler.await;
    if let Some(i) = &inspection {
        i.stop();
    }
    let teardown = cfg.teardown_on_stop;
    node.call(move |n| {
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
    // Bounded by the control plane's own budget (5 s); what it could not send stays owed.
    if let Some(t) = control_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    Ok(())
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
