//! `GET /api/peers?limit=&after=`: pages that cover every peer once, and clear errors.
use std::collections::BTreeSet;

use common::node::TestNode;
use warp::http::StatusCode;

#[tokio::test]
async fn pages_cover_every_peer_once_in_id_order() {
    let t = TestNode::new("10.0.0.0/24", 100);
    for _ in 0..25 {
        t.create("{}").await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/peers?limit=10".to_string();
    let mut pages = 0;
    loop {
        let (s, v) = t.call("GET", &path, "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        pages += 1;
        let ids: Vec<String> = v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap().to_string())
            .collect();
        assert!(ids.len() <= 10);
        assert!(
            v["peers"][0]["private_key"].is_null(),
            "no secrets in a list"
        );
        seen.extend(ids);
        match v["next"].as_str() {
            Some(next) => path = format!("/api/peers?limit=10&after={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 25, "every peer once");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in id order");
    // Without parameters: the whole list, as before.
    let (_, all) = t.call("GET", "/api/peers", "").await;
    assert_eq!(all["peers"].as_array().unwrap().len(), 25);
}

#[tokio::test]
async fn bad_page_parameters_are_refused() {
    let t = TestNode::new("10.0.0.0/24", 100);
    for q in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "after=zz",
        "offset=5",
        "limit=5&sort=name",
    ] {
        let (s, v) = t.call("GET", &format!("/api/peers?{q}"), "").await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {v}");
    }
}
