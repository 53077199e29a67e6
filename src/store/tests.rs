use super::*;

fn peer(n: u8) -> Peer {
    Peer {
        id: PeerId::from_random([n; 16]),
        public_key: Key([n; 32]).get_public(),
        private_key: Some(Key([n; 32])),
        preshared_key: Key([n ^ 1; 32]),
        address: Ipv4Addr::new(10, 0, 0, n),
        address_v6: Some("fd00::5".parse().unwrap()),
        session_id: Some(format!("s{n}")),
        user_id: None,
        limit: SpeedLimit {
            download_kbps: Some(2000),
            upload_kbps: None,
        },
        data_cap: Some(1 << 40),
        created_at: 1_700_000_000,
        expires_at: None,
    }
}

#[test]
fn peers_and_usage_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (peer(2), peer(3));
    {
        let mut s = Store::open(dir.path()).unwrap();
        s.insert_peer(&a).unwrap();
        s.insert_peer(&b).unwrap();
        let acc = Accounting {
            total: Usage { rx: 10, tx: 20 },
            seen: Usage { rx: 1, tx: 2 },
        };
        s.save_usage(&[UsageRow {
            id: &a.id,
            accounting: acc,
            cap_used: 30,
            last_handshake: Some(5),
        }])
        .unwrap();
        s.set_limit(&b.id, SpeedLimit::default()).unwrap();
        s.set_cap(&b.id, None).unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let all = s.load_peers().unwrap();
    assert_eq!(all.len(), 2);
    let la = all.iter().find(|p| p.peer.id == a.id).unwrap();
    assert_eq!(la.peer, a);
    assert_eq!(la.accounting.total, Usage { rx: 10, tx: 20 });
    assert_eq!(la.cap_used, 30);
    assert_eq!(la.last_handshake, Some(5));
    let lb = all.iter().find(|p| p.peer.id == b.id).unwrap();
    assert!(lb.peer.limit.is_unlimited());
    assert_eq!(lb.peer.data_cap, None);
}

#[test]
fn duplicates_are_refused_and_delete_reports_presence() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let a = peer(2);
    s.insert_peer(&a).unwrap();
    let mut dup = peer(3);
    dup.address = a.address;
    assert!(s.insert_peer(&dup).is_err());
    assert!(s.delete_peer(&a.id).unwrap());
    assert!(!s.delete_peer(&a.id).unwrap());
    assert!(s.load_peers().unwrap().is_empty());
}

#[test]
fn corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.db"),
        b"this is not a database, just text that is long enough",
    )
    .unwrap();
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("state.db"), "{err}");
    assert!(err.contains("not a database"), "{err}");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let c = Connection::open(dir.path().join("state.db")).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}

#[test]
fn private_key_is_made_once_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = load_or_create_key(dir.path(), || Key([7; 32])).unwrap();
    let k2 = load_or_create_key(dir.path(), || Key([8; 32])).unwrap();
    assert_eq!(k1, k2);
    let mode = std::fs::metadata(dir.path().join("private.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(dir.path().join("private.key"), "garbage").unwrap();
    assert!(matches!(
        load_or_create_key(dir.path(), || Key([9; 32])),
        Err(StoreError::Corrupt { .. })
    ));
}

mod outbox {
    use super::*;
    use serde_json::json;

    fn row(peer: &str, rx: u64) -> serde_json::Value {
        json!({"peer_id": peer, "rx_bytes": rx, "tx_bytes": 1})
    }

    #[test]
    fn a_removal_and_its_final_row_are_one_transaction_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = peer(4);
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.insert_peer(&p).unwrap();
            assert!(s.delete_peer_owing(&p.id, Some(&row("a", 5)), 100).unwrap());
            // A removal of a peer that is gone still records what was handed in.
            assert!(!s.delete_peer_owing(&p.id, None, 101).unwrap());
        }
        let mut s = Store::open(dir.path()).unwrap();
        assert!(s.load_peers().unwrap().is_empty());
        let owed = s.owed(0, 10).unwrap();
        assert_eq!(owed.len(), 1);
        assert_eq!(
            (owed[0].kind.as_str(), &owed[0].body, owed[0].created_at),
            ("session", &row("a", 5), 100)
        );
        assert_eq!(s.ack_owed(&[(owed[0].id, owed[0].rev)]).unwrap(), 1);
        assert!(s.owed(0, 10).unwrap().is_empty());
    }

    #[test]
    fn a_failed_removal_writes_no_final_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let p = peer(5);
        s.insert_peer(&p).unwrap();
        // The store refuses the write (read-only): neither the delete nor the row happens.
        s.conn.execute_batch("PRAGMA query_only = ON").unwrap();
        assert!(s.delete_peer_owing(&p.id, Some(&row("a", 5)), 1).is_err());
        s.conn.execute_batch("PRAGMA query_only = OFF").unwrap();
        assert_eq!(s.load_peers().unwrap().len(), 1);
        assert!(s.owed(0, 10).unwrap().is_empty());
    }

    #[test]
    fn a_batch_removal_keeps_every_final_row_in_its_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.set_outbox_limit(3);
        let peers: Vec<Peer> = (40..50).map(peer).collect();
        for p in &peers {
            s.insert_peer(p).unwrap();
        }
        let rows: Vec<serde_json::Value> = (0..10).map(|i| row(&format!("b{i}"), i)).collect();
        // The last peer owes nothing (no control plane was told about it).
        let gone: Vec<_> = peers
            .iter()
            .zip(&rows)
            .enumerate()
            .map(|(i, (p, r))| (&p.id, (i < 9).then_some(r)))
            .collect();
        // Refused as a whole: every peer stays, no row is kept.
        s.conn.execute_batch("PRAGMA query_only = ON").unwrap();
        assert!(s.delete_peers_owing(&gone, 7).is_err());
        s.conn.execute_batch("PRAGMA query_only = OFF").unwrap();
        assert_eq!(s.load_peers().unwrap().len(), 10);
        assert_eq!(s.owed_count().unwrap(), (0, 0));
        // Taken: all gone; the newest three rows kept, the six before them summarised.
        assert_eq!(s.delete_peers_owing(&gone, 7).unwrap(), 10);
        assert!(s.load_peers().unwrap().is_empty());
        assert_eq!(s.owed_count().unwrap(), (3, 1));
        let owed = s.owed(0, 100).unwrap();
        let summary = owed.iter().find(|o| o.kind == "summary").unwrap();
        assert_eq!(summary.body["sessions"], 6);
        assert_eq!(summary.body["rx_bytes"], 15);
    }

    #[test]
    fn the_oldest_rows_beyond_the_limit_are_summarised_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.set_outbox_limit(3);
        for i in 0..10u8 {
            let p = peer(10 + i);
            s.insert_peer(&p).unwrap();
            let owed = row(&format!("p{i}"), 100 + u64::from(i));
            s.delete_peer_owing(&p.id, Some(&owed), 1000 + u64::from(i))
                .unwrap();
        }
        assert_eq!(s.owed_count().unwrap(), (3, 1));
        let owed = s.owed(0, 100).unwrap();
        let sessions: Vec<&str> = owed
            .iter()
            .filter(|o| o.kind == "session")
            .map(|o| o.body["peer_id"].as_str().unwrap())
            .collect();
        assert_eq!(sessions, ["p7", "p8", "p9"]);
        let summary = owed.iter().find(|o| o.kind == "summary").unwrap();
        // p0..p6: seven sessions, 100+…+106 bytes received, 7 sent.
        assert_eq!(summary.body["sessions"], 7);
        assert_eq!(summary.body["rx_bytes"], 721);
        assert_eq!(summary.body["tx_bytes"], 7);
        assert_eq!(summary.body["first_removed_at"], "1970-01-01T00:16:40.000Z");
        assert_eq!(summary.body["last_removed_at"], "1970-01-01T00:16:46.000Z");
        // It grew while "in flight": the stale acknowledgement deletes nothing.
        assert!(summary.rev > 0);
        assert_eq!(s.ack_owed(&[(summary.id, summary.rev - 1)]).unwrap(), 0);
        assert_eq!(s.ack_owed(&[(summary.id, summary.rev)]).unwrap(), 1);
        // Once acknowledged, the next overflow opens a new summary with its own id.
        let p = peer(30);
        s.insert_peer(&p).unwrap();
        s.delete_peer_owing(&p.id, Some(&row("q", 1)), 2000)
            .unwrap();
        let again = s.owed(0, 100).unwrap();
        let next = again.iter().find(|o| o.kind == "summary").unwrap();
        assert_eq!(next.body["sessions"], 1);
        assert_ne!(next.body["id"], summary.body["id"]);
    }
}
