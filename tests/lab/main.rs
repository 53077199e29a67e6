//! Privileged lab tests in network namespaces the tests create: the data plane with real
//! nftables, tc and wireguard-go, and the daemon end to end. Each test is `#[ignore]`d; run them
//! as root with `cargo test --test lab -- --ignored --test-threads=1`.
mod daemon;
mod dataplane;
mod expiry;
mod fleet;
mod harness;
mod hostile;
mod inspect;
mod inspect_hostile;
mod inspect_tunnel;
mod netlink;
mod node_dataplane;
mod node_shaping6;
mod prometheus;
mod reconcile;
mod shaping6;
