use std::net::Ipv4Addr;
use std::sync::Arc;

use super::*;
use crate::core::plan::{NftOp, PeerPolicy, render_ops};
use crate::sys::nft::NftLink;
use crate::sys::runner::fake::FakeRunner;

/// The netlink seam played by the fake runner: operations become an `nft -f` script, reads
/// answer from the captured listings, so one log shows every write in order.
struct ToolLink(Arc<dyn Runner>);

fn netlink_err(e: RunError) -> NetlinkError {
    NetlinkError::Refused {
        op: e.to_string(),
        errno: 22,
        msg: None,
    }
}

impl NftLink for ToolLink {
    fn apply(&self, ops: &[NftOp]) -> std::result::Result<(), NetlinkError> {
        let cmd = Cmd::new(["nft", "-f", "-"]).stdin(render_ops(ops));
        self.0.run(&cmd).map(|_| ()).map_err(netlink_err)
    }
    fn quota(&self, name: &str) -> std::result::Result<Option<ObservedQuota>, NetlinkError> {
        let cmd = Cmd::new(["nft", "-j", "list", "quota", "inet", TABLE, name]);
        let out = self.0.run(&cmd).map_err(netlink_err)?;
        Ok(nft::parse_table(&out).unwrap().quotas.get(name).copied())
    }
    fn quotas(&self) -> std::result::Result<BTreeMap<String, ObservedQuota>, NetlinkError> {
        let cmd = Cmd::new(["nft", "-j", "list", "table", "inet", TABLE]);
        let out = self.0.run(&cmd).map_err(netlink_err)?;
        Ok(nft::parse_table(&out).unwrap().quotas)
    }
}

fn dp(runner: Arc<FakeRunner>) -> Dataplane {
    Dataplane::new(runner.clone(), Arc::new(ToolLink(runner)))
}

fn fx(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/dataplane/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

fn peer(
    last: u8,
    down: Option<u32>,
    up: Option<u32>,
    cap: Option<u64>,
    v6: Option<&str>,
) -> PeerPolicy {
    PeerPolicy {
        addr: Ipv4Addr::new(10, 77, 1, last),
        addr_v6: v6.map(|s| s.parse().unwrap()),
        download_kbps: down,
        upload_kbps: up,
        cap_bytes: cap,
        used_bytes: 1000,
    }
}

/// The input the fixtures were captured from.
pub(crate) fn captured_input() -> PlanInput {
    PlanInput {
        iface: "wl0".into(),
        ifb: "wl0-ifb".into(),
        subnet: "10.77.0.0/22".parse().unwrap(),
        subnet_v6: Some("fd77::/64".parse().unwrap()),
        server_addr: "10.77.0.1".parse().unwrap(),
        outward: Some("up0".into()),
        isolate: true,
        blocked_v4: vec![
            "169.254.0.0/16".parse().unwrap(),
            "192.168.5.0/24".parse().unwrap(),
        ],
        blocked_v6: vec!["fd00:1::/64".parse().unwrap()],
        shaping: true,
        peers: vec![
            peer(2, Some(2000), Some(1000), Some(50_000), Some("fd77::2")),
            peer(3, None, Some(1500), None, None),
            peer(4, Some(100_000_000), None, None, None),
        ],
    }
}

/// Answers reads from the captured kernel state; writes succeed.
pub(crate) fn kernel(cmd: &Cmd) -> std::result::Result<String, String> {
    let a: Vec<&str> = cmd.argv.iter().map(String::as_str).collect();
    let dev = |d: &str| if d == "wl0" { "wl0" } else { "ifb" };
    Ok(match a.as_slice() {
        ["nft", "-j", "list", "table", ..] => fx("nft-table.json"),
        ["nft", "-j", "list", "quota", ..] => fx("nft-quota.json"),
        ["tc", "-j", "qdisc", "show", "dev", d] => fx(&format!("tc-qdisc-{}.json", dev(d))),
        ["tc", "-j", "class", "show", "dev", d] => fx(&format!("tc-class-{}.txt", dev(d))),
        ["tc", "-j", "filter", "show", "dev", d, "parent", "1:"] => {
            fx(&format!("tc-filter-{}.json", dev(d)))
        }
        [
            "tc",
            "-j",
            "filter",
            "show",
            "dev",
            "wl0",
            "parent",
            "ffff:",
        ] => fx("tc-ingress-wl0.json"),
        _ => String::new(),
    })
}

#[test]
fn the_captured_state_matches_its_plan_and_nothing_is_written() {
    let fake = Arc::new(FakeRunner::new(|c, _| kernel(c)));
    let dp = dp(fake.clone());
    let applied = dp.apply(&captured_input()).unwrap();
    assert!(applied.is_empty(), "{:?}", applied.changes);
    assert!(fake.writes().is_empty());
    let argv: Vec<String> = fake
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.display())
        .collect();
    assert!(argv.contains(&"sysctl -qw net.ipv4.ip_forward=1".to_string()));
    assert!(argv.contains(&"sysctl -qw net.ipv6.conf.all.forwarding=1".to_string()));
}

#[test]
fn one_changed_limit_is_one_class_change_and_verify_fails_if_it_did_not_stick() {
    let fake = Arc::new(FakeRunner::new(|c, _| kernel(c)));
    let dp = dp(fake.clone());
    let mut input = captured_input();
    input.peers[0].download_kbps = Some(3000);
    let err = dp.apply(&input).unwrap_err();
    assert!(matches!(err, DataplaneError::Verify(_)), "{err}");
    let writes = fake.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].argv, vec!["tc", "-batch", "-"]);
    let batch = writes[0].stdin.clone().unwrap();
    // The leaf's queue length (32 packets) is the same at 3 Mbit/s: only the class changes.
    assert_eq!(batch.lines().count(), 1, "{batch}");
    assert!(batch.starts_with("class change dev wl0 parent 1:1 classid 1:102 htb rate 3000kbit"));
}

#[test]
fn a_missing_table_is_created_with_restored_usage() {
    let fake = Arc::new(FakeRunner::new(|c, _| {
        if c.argv
            .starts_with(&["nft".into(), "-j".into(), "list".into()])
        {
            return Err("Error: No such file or directory".into());
        }
        kernel(c)
    }));
    let dp = dp(fake.clone());
    let mut input = captured_input();
    input.peers[0].used_bytes = 42_000;
    let _ = dp.apply(&input);
    let w = fake.writes();
    let script = w[0].stdin.clone().unwrap();
    assert_eq!(w[0].argv, vec!["nft", "-f", "-"]);
    assert!(
        script.contains("p10_77_1_2 { until 50000 bytes used 42000 bytes }"),
        "{script}"
    );
    assert!(!script.contains("delete table"));
}

#[test]
fn missing_tools_and_devices_are_clear_errors() {
    let fake = Arc::new(FakeRunner::new(|c, _| {
        if c.argv[0] == "tc" {
            return Err("Cannot find device \"wl0\"".into());
        }
        kernel(c)
    }));
    let err = dp(fake).apply(&captured_input()).unwrap_err();
    assert!(
        matches!(&err, DataplaneError::NoDevice(d) if d == "wl0"),
        "{err}"
    );

    let fake = Arc::new(FakeRunner::new(|c, _| {
        if c.argv[0] == "nft" {
            return Err("nft: command not found".into());
        }
        kernel(c)
    }));
    let err = dp(fake).apply(&captured_input()).unwrap_err();
    assert!(
        err.to_string().contains("nft -j list table inet waylume"),
        "{err}"
    );
}

#[test]
fn a_failed_fast_path_reports_and_leaves_the_rest_to_reconcile() {
    let fake = Arc::new(FakeRunner::new(|c, _| {
        match c.argv.first().map(String::as_str) {
            Some("tc") if c.stdin.is_some() => Err("RTNETLINK answers: File exists".into()),
            _ => kernel(c),
        }
    }));
    let dp = dp(fake.clone());
    let input = captured_input();
    // Adding a peer that the captured state already has: the class exists and tc refuses.
    // The error goes back to the caller (the API answers 503) and no full apply follows here:
    // the caller's input may hold only the node's settings, and the reconcile loop repairs.
    let change = PeerChange::Add(input.peers[2].clone());
    let err = dp.apply_change(&input, &change).unwrap_err();
    assert!(err.to_string().contains("File exists"), "{err}");
    assert_eq!(fake.writes().len(), 2, "fast nft + fast tc, nothing more");
}

#[test]
fn usage_maps_quotas_to_peers() {
    let dp = dp(Arc::new(FakeRunner::new(|c, _| kernel(c))));
    let u = dp.usage().unwrap();
    assert_eq!(u.len(), 3);
    assert_eq!(u[&Ipv4Addr::new(10, 77, 1, 2)], 1000);
    assert_eq!(
        dp.peer_usage(Ipv4Addr::new(10, 77, 1, 2)).unwrap(),
        Some(1000)
    );
}

#[test]
fn host_facts_from_captured_ip_output() {
    assert_eq!(
        host::parse_default_route(&fx("ip-route-default.json"))
            .unwrap()
            .as_deref(),
        Some("up0")
    );
    let host = host::parse_host_networks(&fx("ip-addr.json")).unwrap();
    let host: Vec<String> = host.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        host,
        vec![
            "192.168.5.0/24",
            "198.18.7.0/24",
            "fd00:1::/64",
            "fe80::/64",
            "10.77.0.0/22",
            "fe80::/64",
            "fe80::/64"
        ]
    );
    let runner = FakeRunner::new(|c, _| match c.argv.as_slice() {
        [ip, ..] if ip == "ip" => Ok(fx("ip-addr.json")),
        _ => Err("unexpected".into()),
    });
    let tunnel = [
        "10.77.0.0/22".parse().unwrap(),
        "fd77::/64".parse().unwrap(),
    ];
    let (v4, _) = fenced_networks(&runner, &tunnel, &[]).unwrap();
    // A public network the host is in is fenced too; the tunnel's own subnet is not.
    let has = |a: &str| {
        v4.iter()
            .any(|n| n.contains(&a.parse::<Ipv4Addr>().unwrap()))
    };
    assert!(has("198.18.7.20") && has("192.168.5.9") && has("10.77.4.1"));
    assert!(!has("10.77.0.9") && !has("198.18.8.1"));
}

fn observed_fixture() -> (Dataplane, Plan, Observed) {
    let dp = dp(Arc::new(FakeRunner::new(|c, _| kernel(c))));
    let plan = Plan::build(&captured_input()).unwrap();
    let obs = dp.observe(&plan).unwrap();
    (dp, plan, obs)
}

#[test]
fn repairs_touch_only_what_is_missing() {
    let (dp, plan, mut obs) = observed_fixture();
    let wl0 = obs.devs[0].1.as_mut().unwrap();
    wl0.classes.remove(&0x104);
    wl0.leaves.remove(&0x104);
    wl0.prios
        .get_mut(&1)
        .unwrap()
        .filters
        .remove(&(0x101, 4, 1));
    // A class left by a removed peer stays; one hung elsewhere is not ours and goes.
    wl0.classes.insert(0x1ff, wl0.classes[&0x102].clone());
    let mut foreign = wl0.classes[&0x102].clone();
    foreign.parent = Some("1:".into());
    wl0.classes.insert(0x1fe, foreign);
    let ifb = obs.devs[1].1.as_mut().unwrap();
    ifb.prios
        .get_mut(&1)
        .unwrap()
        .filters
        .remove(&(0x800, 0, 1));
    let (nft, tc, missing) = dp.diff(&plan, &obs);
    assert!(nft.is_empty() && missing.is_empty());
    assert_eq!(
        tc,
        vec![
            "class del dev wl0 classid 1:1fe".to_string(),
            "class add dev wl0 parent 1:1 classid 1:104 htb rate 100000000kbit ceil 100000000kbit burst 125000000 cburst 125000000 quantum 200000".into(),
            "qdisc replace dev wl0 parent 1:104 handle 104: pfifo limit 1000".into(),
            "filter replace dev wl0 parent 1: prio 1 handle 101:4:1 protocol ip u32 ht 101:4: match ip dst 10.77.1.4/32 flowid 1:104".into(),
            "filter replace dev wl0-ifb parent 1: prio 1 handle 800:0:1 protocol ip u32 ht 800:0: match ip src 10.77.0.0/22 hashkey mask 0x0000ff00 at 12 link 10:".into(),
        ]
    );
}

#[test]
fn ipv6_filters_deleted_from_outside_are_put_back_under_the_kernels_root() {
    let (dp, plan, mut obs) = observed_fixture();
    let ifb = obs.devs[1].1.as_mut().unwrap();
    let v6 = ifb.prios.get_mut(&2).unwrap();
    assert_eq!(v6.root, Some(0x801));
    v6.filters.remove(&(0x801, 0, 1));
    v6.filters.remove(&(0x20, 3, 1));
    v6.tables.remove(&0x203);
    let (_, tc, _) = dp.diff(&plan, &obs);
    assert_eq!(
        tc,
        vec![
            "filter add dev wl0-ifb parent 1: prio 2 handle 203: protocol ipv6 u32 divisor 256".to_string(),
            "filter replace dev wl0-ifb parent 1: prio 2 handle 20:3:1 protocol ipv6 u32 ht 20:3: match ip6 src fd77::300/120 hashkey mask 0x000000ff at 20 link 203:".into(),
            "filter replace dev wl0-ifb parent 1: prio 2 handle 801:0:1 protocol ipv6 u32 ht 801:0: match ip6 src fd77::/64 hashkey mask 0x0000ff00 at 20 link 20:".into(),
        ]
    );

    // The IPv6 priority taken by another protocol, or gone: every filter of the device goes
    // (tables outlive their priority) and both families are built again, the classes stay.
    let (_, _, mut obs) = observed_fixture();
    obs.devs[0]
        .1
        .as_mut()
        .unwrap()
        .prios
        .get_mut(&2)
        .unwrap()
        .protocol = "ip".into();
    obs.devs[1].1.as_mut().unwrap().prios.remove(&2);
    let (_, tc, _) = dp.diff(&plan, &obs);
    for dev in ["wl0", "wl0-ifb"] {
        let lines: Vec<_> = tc
            .iter()
            .filter(|l| l.contains(&format!("dev {dev} ")))
            .collect();
        assert_eq!(*lines[0], format!("filter del dev {dev} parent 1:"));
        // 10 tables, 5 + 5 root and link filters, 2 peer filters; no class touched.
        assert_eq!(lines.len(), 1 + 10 + 10 + 2, "{lines:#?}");
        assert!(lines.iter().all(|l| l.starts_with("filter")));
        assert!(lines.iter().any(|l| l.contains("prio 1 handle ::1")));
        assert!(lines.iter().any(|l| l.contains("prio 2 handle ::1")));
    }
    assert_eq!(tc.len(), 2 * 23);

    // Without an IPv6 prefix the IPv6 filters go the same way.
    let mut input = captured_input();
    input.subnet_v6 = None;
    let plan = Plan::build(&input).unwrap();
    let (_, _, obs) = observed_fixture();
    let (_, tc, _) = dp.diff(&plan, &obs);
    assert_eq!(tc[0], "filter del dev wl0 parent 1:");
    assert!(tc.iter().all(|l| !l.contains("ipv6")));
}

#[test]
fn a_lost_root_or_redirect_rebuilds_that_device_only() {
    let (dp, plan, mut obs) = observed_fixture();
    obs.devs[1].1 = Some(ObservedDev::default());
    let wl0 = obs.devs[0].1.as_mut().unwrap();
    wl0.redirects = vec!["elsewhere".into()];
    let (_, tc, _) = dp.diff(&plan, &obs);
    assert_eq!(tc[0], "qdisc del dev wl0 ingress");
    assert!(tc[1].starts_with("qdisc add dev wl0 handle ffff: ingress"));
    assert!(tc[2].ends_with("action mirred egress redirect dev wl0-ifb"));
    assert_eq!(
        tc[3],
        "qdisc replace dev wl0-ifb root handle 1: htb default 0 r2q 10"
    );
    assert!(tc.iter().skip(3).all(|l| l.contains("dev wl0-ifb")));
    // Root, parent, 5 + 5 tables, 5 + 5 links (IPv4, IPv6), 2 classes + 2 leaves + 2 filters
    // (peer 2's IPv6 address is not the prefix's host at its offset: no IPv6 filter).
    assert_eq!(tc.len() - 3, 1 + 1 + 10 + 10 + 6);
    // The roots' ids are the kernel's to choose: the root filters are added without one.
    assert!(tc.contains(&"filter replace dev wl0-ifb parent 1: prio 2 handle ::1 protocol ipv6 u32 match ip6 src fd77::/64 hashkey mask 0x0000ff00 at 20 link 20:".to_string()));
}

#[test]
fn nft_repairs_are_per_object() {
    let (dp, plan, mut obs) = observed_fixture();
    let n = obs.nft.as_mut().unwrap();
    n.chains.get_mut("forward").unwrap().comments.pop();
    n.quotas.insert("p10_77_1_9".into(), n.quotas["p10_77_1_3"]);
    n.maps4
        .get_mut("peers4")
        .unwrap()
        .insert(Ipv4Addr::new(10, 77, 1, 9), "p10_77_1_9".into());
    n.maps4
        .get_mut("peers4")
        .unwrap()
        .remove(&Ipv4Addr::new(10, 77, 1, 3));
    let (nft, tc, _) = dp.diff(&plan, &obs);
    assert!(tc.is_empty());
    let lines: Vec<&str> = nft.script.lines().collect();
    assert_eq!(lines[0], "delete element inet waylume peers4 { 10.77.1.9 }");
    assert_eq!(lines[1], "delete quota inet waylume p10_77_1_9");
    assert_eq!(
        lines[2],
        "add element inet waylume peers4 { 10.77.1.3 : \"p10_77_1_3\" }"
    );
    assert_eq!(lines[3], "flush chain inet waylume forward");
    assert!(
        lines[4..]
            .iter()
            .all(|l| l.starts_with("add rule inet waylume forward"))
    );
    assert_eq!(lines.len(), 4 + plan.nft.chains[0].rules.len());
}

#[test]
fn a_depleted_quota_is_recreated_when_its_cap_changes() {
    let (dp, mut plan, mut obs) = observed_fixture();
    let q = obs
        .nft
        .as_mut()
        .unwrap()
        .quotas
        .get_mut("p10_77_1_2")
        .unwrap();
    q.used = q.bytes;
    plan.nft.quotas.get_mut("p10_77_1_2").unwrap().limit = 80_000;
    let (nft, _, _) = dp.diff(&plan, &obs);
    let lines: Vec<&str> = nft.script.lines().collect();
    assert_eq!(
        lines,
        vec![
            "delete element inet waylume peers4 { 10.77.1.2 }",
            "delete element inet waylume peers6 { fd77::2 }",
            "delete quota inet waylume p10_77_1_2",
            "add quota inet waylume p10_77_1_2 { until 80000 bytes used 50000 bytes }",
            "add element inet waylume peers4 { 10.77.1.2 : \"p10_77_1_2\" }",
            "add element inet waylume peers6 { fd77::2 : \"p10_77_1_2\" }",
        ]
    );
}

#[test]
fn shaping_off_removes_our_qdiscs() {
    let (dp, _, obs) = observed_fixture();
    let mut input = captured_input();
    input.shaping = false;
    let plan = Plan::build(&input).unwrap();
    let (_, tc, _) = dp.diff(&plan, &obs);
    assert_eq!(
        tc,
        vec![
            "qdisc del dev wl0 root",
            "qdisc del dev wl0 ingress",
            "qdisc del dev wl0-ifb root"
        ]
    );
}

#[test]
fn spare_classes_are_made_once_where_the_last_check_saw_none() {
    use crate::sys::policy::{KernelEnforcer, PeerEnforcer};
    let fake = Arc::new(FakeRunner::new(|c, _| kernel(c)));
    let input = captured_input();
    let enforcer = KernelEnforcer::new(
        dp(fake.clone()),
        PlanInput {
            peers: vec![],
            ..input.clone()
        },
    );
    let next = [Ipv4Addr::new(10, 77, 1, 4), Ipv4Addr::new(10, 77, 1, 5)];
    // Nothing is known before a check, so nothing is made.
    assert_eq!(enforcer.make_spares(&next).unwrap(), 0);
    assert!(enforcer.check(input.peers.clone()).unwrap().is_none());
    // wl0 holds 1:104 already: a class and its queue for .5 there, for both on the IFB.
    assert_eq!(enforcer.make_spares(&next).unwrap(), 6);
    let writes = fake.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].argv, ["tc", "-force", "-batch", "-"]);
    let batch = writes[0].stdin.clone().unwrap();
    let lines: Vec<&str> = batch.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "class add dev wl0 parent 1:1 classid 1:105 htb rate 100000000kbit ceil 100000000kbit burst 125000000 cburst 125000000 quantum 200000",
            "qdisc add dev wl0 parent 1:105 handle 105: pfifo limit 1000",
        ]
    );
    assert!(lines[2..].iter().all(|l| l.contains("dev wl0-ifb")));
    assert!(!batch.contains("dev wl0 parent 1:1 classid 1:104"));
    // Made once: the next pass writes nothing for them.
    assert_eq!(enforcer.make_spares(&next).unwrap(), 0);
    assert_eq!(fake.writes().len(), 1);
}
