//! Privileged lab test of the nf_tables netlink path against the real kernel, in a namespace
//! created here: what it writes is what `nft` lists, large batches split, errors are clear and
//! leave the table as it was. Run with `cargo test --test lab netlink -- --ignored`.
#![allow(clippy::unwrap_used)]
use std::net::Ipv4Addr;
use std::sync::Arc;

use common::netns::{Lab, sh};
use common::tunnels::nf_socket;
use waylume::core::plan::{
    Batch, NftOp, PeerChange, PeerPolicy, PlanInput, peer_batch, quota_name,
};
use waylume::sys::dataplane::Dataplane;
use waylume::sys::nft;
use waylume::sys::runner::SystemRunner;

fn input(peers: Vec<PeerPolicy>) -> PlanInput {
    PlanInput {
        iface: "wlnl0".into(),
        ifb: "wlnl0-ifb".into(),
        subnet: "10.78.0.0/16".parse().unwrap(),
        subnet_v6: Some("fd78::/64".parse().unwrap()),
        server_addr: "10.78.0.1".parse().unwrap(),
        outward: None,
        isolate: true,
        blocked_v4: vec![],
        blocked_v6: vec![],
        shaping: false,
        peers,
    }
}

fn peer(i: u32) -> PeerPolicy {
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 78, 0, 1)) + i);
    PeerPolicy {
        addr,
        addr_v6: i
            .is_multiple_of(2)
            .then(|| format!("fd78::{i:x}").parse().unwrap()),
        download_kbps: None,
        upload_kbps: None,
        cap_bytes: i.is_multiple_of(3).then_some(1_000_000 + u64::from(i)),
        used_bytes: u64::from(i) * 10,
    }
}

#[test]
#[ignore = "needs root"]
fn netlink_batches_are_what_nft_lists() {
    let mut lab = Lab::new("znl");
    let ns = lab.netns("k");
    let link = Arc::new(nf_socket(&ns));
    let dp = Dataplane::new(Arc::new(SystemRunner::in_netns(&ns)), link.clone());
    dp.apply(&input(vec![])).unwrap();

    // 1,500 peers in one pass: ~3,750 operations, more than one 64 KiB transaction.
    let peers: Vec<_> = (1..=1500).map(peer).collect();
    let mut batch = Batch::default();
    for p in &peers {
        batch.extend(peer_batch(&input(vec![]), &PeerChange::Add(p.clone()), None).unwrap());
    }
    assert!(batch.nft.len() > 3000);
    link.apply(&batch.nft).unwrap();
    let listed = nft::parse_table(&sh(&[
        "ip", "netns", "exec", &ns, "nft", "-j", "list", "table", "inet", "waylume",
    ]))
    .unwrap();
    assert_eq!(listed.quotas.len(), 1500);
    assert_eq!(listed.maps4["peers4"].len(), 1500);
    assert_eq!(listed.maps6["peers6"].len(), 750);
    // The whole-table diff sees exactly the plan: limits, counts and map entries all match.
    assert!(dp.apply(&input(peers.clone())).unwrap().is_empty());

    let read = link.quotas().unwrap();
    assert_eq!(read, listed.quotas);
    let q = link.quota(&quota_name(peers[2].addr)).unwrap().unwrap();
    assert_eq!((q.bytes, q.used), (1_000_003, 30));
    assert_eq!(link.quota("p10_78_255_255").unwrap(), None);

    // A refused operation names itself and undoes its whole transaction.
    let fresh = NftOp::AddQuota {
        name: "p10_78_200_1".into(),
        limit: 5,
        used: 0,
    };
    let missing = NftOp::DelQuota {
        name: "p10_78_200_2".into(),
    };
    let err = link.apply(&[fresh, missing]).unwrap_err();
    assert_eq!(err.errno(), Some(2), "{err}");
    assert!(
        err.to_string()
            .contains("delete quota inet waylume p10_78_200_2"),
        "{err}"
    );
    assert_eq!(link.quota("p10_78_200_1").unwrap(), None, "rolled back");

    // A used quota cannot go before its map entries: refused, nothing changes.
    let in_use = NftOp::DelQuota {
        name: quota_name(peers[0].addr),
    };
    assert!(link.apply(&[in_use]).is_err());
    assert_eq!(link.quotas().unwrap().len(), 1500);

    let mut rm = Batch::default();
    for p in &peers {
        rm.extend(peer_batch(&input(vec![]), &PeerChange::Remove(p.clone()), None).unwrap());
    }
    link.apply(&rm.nft).unwrap();
    assert!(link.quotas().unwrap().is_empty());
    assert!(dp.apply(&input(vec![])).unwrap().is_empty());
}
