//! Live inspection, when the config turns it on: the capture on the WireGuard interface, and
//! the flow enforcer for `block` and `throttle` policies.
use std::sync::Arc;

use crate::api::metrics::Metrics;
use crate::config::Config;
use crate::sys::inspection::Inspection;

/// Starts the capture on the WireGuard interface when inspection is on.
pub(super) fn start(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    node: &crate::node::NodeHandle,
    commands: &Arc<crate::sys::runner::InFlight>,
) -> Option<Arc<Inspection>> {
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
        let runner = Arc::new(super::runner(cfg, commands));
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
    let enforcer = enforcer.map(Arc::new);
    if let Some(e) = enforcer.clone() {
        metrics.add_source(move |out| {
            crate::api::metrics::family(
                out,
                "waylume_flow_decisions_dropped_total",
                "counter",
                "Block and throttle decisions dropped because the enforcement queue was full.",
            );
            out.push_str(&format!(
                "waylume_flow_decisions_dropped_total {}\n",
                e.dropped()
            ));
        });
    }
    let i = Arc::new(Inspection::new(
        wgc.interface.as_str(),
        nets,
        policy.clone(),
        cfg.inspection.log_hostnames,
        {
            let node = node.clone();
            move |ip| node.view().holder(ip).cloned()
        },
        move |d| {
            crate::sys::inspection::log_decision(d);
            if let Some(e) = &enforcer {
                e.submit(d);
            }
        },
    ));
    i.restart();
    let m = i.clone();
    metrics.add_source(move |out| m.render_metrics(out));
    Some(i)
}
