use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

const TABLE_JSON: &str = include_str!("../../../tests/fixtures/dataplane/nft-table.json");
const QUOTA_JSON: &str = include_str!("../../../tests/fixtures/dataplane/nft-quota.json");

#[test]
fn parses_the_captured_table() {
    let o = parse_table(TABLE_JSON).unwrap();
    assert_eq!(o.quotas.len(), 3);
    let q = o.quotas["p10_77_1_2"];
    assert_eq!((q.bytes, q.used, q.inv), (50_000, 1000, false));
    assert_eq!(
        o.maps4["peers4"][&Ipv4Addr::new(10, 77, 1, 3)],
        "p10_77_1_3"
    );
    let v6: Ipv6Addr = "fd77::2".parse().unwrap();
    assert_eq!(o.maps6["peers6"][&v6], "p10_77_1_2");
    assert!(o.other_maps.is_empty());
    assert_eq!(
        set_elems(&o, "blocked4").into_iter().collect::<Vec<_>>(),
        vec!["169.254.0.0/16", "192.168.5.0/24"]
    );
    let fwd = &o.chains["forward"];
    assert_eq!(fwd.hook.as_deref(), Some("forward"));
    assert_eq!(fwd.prio, Some(0));
    assert!(
        fwd.comments
            .iter()
            .all(|c| c.as_deref().is_some_and(|c| c.starts_with("wl:")))
    );
    assert_eq!(o.chains["postrouting"].prio, Some(100));
    assert_eq!(o.chains["postrouting"].kind.as_deref(), Some("nat"));
}

#[test]
fn parses_a_single_quota_listing() {
    let o = parse_table(QUOTA_JSON).unwrap();
    assert_eq!(o.quotas["p10_77_1_2"].bytes, 50_000);
    assert!(o.chains.is_empty());
}

#[test]
fn ignores_other_tables_and_reads_comment_less_rules() {
    let json = r#"{"nftables": [
        {"table": {"family": "ip", "name": "filter", "handle": 1}},
        {"chain": {"family": "ip", "table": "filter", "name": "forward", "handle": 1}},
        {"chain": {"family": "inet", "table": "waylume", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "waylume", "chain": "forward", "handle": 4, "expr": []}},
        {"map": {"family": "inet", "name": "peers4", "table": "waylume", "type": "ipv4_addr", "handle": 6, "map": "verdict"}}
    ]}"#;
    let o = parse_table(json).unwrap();
    assert_eq!(o.chains.len(), 1);
    assert_eq!(o.chains["forward"].comments, vec![None]);
    assert!(
        o.other_maps.contains("peers4"),
        "a map of the wrong type is noticed"
    );
}

#[test]
fn rejects_what_is_not_a_listing() {
    assert!(matches!(parse_table("{}"), Err(ParseError::Shape)));
    assert!(matches!(parse_table("Error: x"), Err(ParseError::Json(_))));
    assert!(is_missing_table(
        "Error: No such file or directory\nlist table inet waylume"
    ));
}
