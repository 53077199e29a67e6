//! Inspection against a hostile peer, through the daemon and the real capture: a second peer
//! (the attacker, in a namespace of its own) forges the victim's address inside IP-in-IP, and
//! floods the node with 100,000 new flows while the victim opens a BitTorrent connection under
//! a block policy; RakNet pings are not BitTorrent. Needs root: `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::harness::{INTERNET, NodeLab, client_up};
use crate::inspect::setup;
use common::netns::wait_for;

/// `python3 attack.py VICTIM ipip|sit|raknet|flood DEST [N]`: raw IP-in-IP (4in4, 6in4) to DEST
/// carrying a BitTorrent handshake "from" the victim, three RakNet pings, or N one-datagram UDP
/// flows to DEST.
const ATTACK: &str = r#"
import socket, struct, sys
victim, what, dest = sys.argv[1], sys.argv[2], sys.argv[3]
hs = b"\x13BitTorrent protocol" + bytes(8) + b"\x22" * 20 + b"-XX0001-forgedforged"
def tcp(sport, dport):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + hs
if what == "ipip":
    seg = tcp(40000, 6881)
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 1, 0, 64, 6, 0,
                        socket.inet_aton(victim), socket.inet_aton(dest)) + seg
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)
    for _ in range(3):
        s.sendto(inner, (dest, 0))
elif what == "sit":
    seg = tcp(40001, 6881)
    inner = struct.pack("!IHBB16s16s", 6 << 28, len(seg), 6, 64,
                        socket.inet_pton(socket.AF_INET6, "fd77::2"),
                        socket.inet_pton(socket.AF_INET6, "2001:db8::9")) + seg
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 41)
    for _ in range(3):
        s.sendto(inner, (dest, 0))
elif what == "raknet":
    # Minecraft Bedrock's server list: three unconnected pings (id, time, magic, client GUID).
    magic = bytes.fromhex("00ffff00fefefefefdfdfdfd12345678")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for t in (1000, 2000, 3000):
        s.sendto(b"\x01" + struct.pack("!Q", t) + magic + struct.pack("!Q", 0x1122334455667788), (dest, 19132))
elif what == "flood":
    n = int(sys.argv[4])
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n // 60000 + 1)]
    for i in range(n):
        socks[i // 60000].sendto(struct.pack("!I", i), (dest, 1024 + i % 60000))
print("sent", flush=True)
"#;

/// A second peer with its client in a namespace of its own, reaching the node over its own link.
pub(crate) fn attacker(
    nl: &mut NodeLab,
    d: &crate::harness::Daemon<'_>,
) -> (String, serde_json::Value) {
    let att = nl.lab.netns("att");
    nl.lab.link(&att, "100.64.2.2/24", &nl.srv, "100.64.2.1/24");
    let (ok, peer) = d.cli(&["create"]);
    assert!(ok, "{peer}");
    let config = peer["config"]
        .as_str()
        .unwrap()
        .replace(peer["endpoint"].as_str().unwrap(), "100.64.2.1:51820");
    let ifname = nl.lab.ifname("a");
    let addr = peer["address"].as_str().unwrap();
    client_up(&nl.lab, &att, &ifname, &config, addr, "198.18.0.0/15");
    wait_for("the attacker's tunnel", Duration::from_secs(15), || {
        nl.lab.ping(&att, INTERNET)
    });
    (att, peer)
}

pub(crate) fn protocols(
    d: &crate::harness::Daemon<'_>,
    peer: &serde_json::Value,
) -> serde_json::Value {
    let (_, p) = d.cli(&["get", peer["peer_id"].as_str().unwrap()]);
    p["stats"]["protocols"].clone()
}

pub(crate) fn bare(address: &serde_json::Value) -> String {
    let a = address.as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

#[test]
#[ignore = "needs root"]
fn forged_inner_addresses_and_raknet_pings_never_flag_a_peer() {
    let config = "[inspection]\npolicy = { bittorrent = \"block\" }\n";
    let (mut nl, d, victim) = setup("f", Some(config));
    let (att, attacker) = attacker(&mut nl, &d);
    let dir = nl.lab.dir.path().to_path_buf();
    std::fs::write(dir.join("attack.py"), ATTACK).unwrap();
    let script = dir.join("attack.py").display().to_string();
    for kind in ["ipip", "sit"] {
        let out = nl.lab.exec(
            &att,
            &[
                "python3",
                &script,
                &bare(&victim["address"]),
                kind,
                INTERNET,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The capture has read the forged packets once the attacker's own flows show them.
    wait_for(
        "the attacker's tunnelled flows",
        Duration::from_secs(10),
        || protocols(&d, &attacker)["bittorrent"]["flows"].as_u64() >= Some(2),
    );
    let v = protocols(&d, &victim);
    assert!(v.get("bittorrent").is_none(), "victim flagged: {v}");

    // The victim's own RakNet pings are no BitTorrent either; an HTTP request sent after them
    // shows when the capture has read them.
    let out = nl
        .lab
        .exec(&nl.cli, &["python3", &script, "-", "raknet", INTERNET]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = dir.join("client.py").display().to_string();
    let out = nl
        .lab
        .exec(&nl.cli, &["python3", &client, INTERNET, "http"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    wait_for("the victim's HTTP flow", Duration::from_secs(10), || {
        protocols(&d, &victim)["http"]["flows"].as_u64() >= Some(1)
    });
    let v = protocols(&d, &victim);
    assert!(
        v.get("bittorrent").is_none(),
        "RakNet named BitTorrent: {v}"
    );
    // The victim's own connections are not in the block set.
    let set = nl.lab.exec(
        &nl.srv,
        &["nft", "list", "set", "inet", "waylume_flows", "block4"],
    );
    let text = String::from_utf8_lossy(&set.stdout);
    assert!(!text.contains(&bare(&victim["address"])), "{text}");
    // What the block cuts is the attacker's own tunnels (4in4 and 6in4) to that destination.
    let tunnels = || {
        let out = nl.lab.exec(
            &nl.srv,
            &[
                "nft",
                "list",
                "set",
                "inet",
                "waylume_flows",
                "tunnel_block4",
            ],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let a = bare(&attacker["address"]);
    wait_for(
        "the attacker's tunnels blocked",
        Duration::from_secs(10),
        || {
            let t = tunnels();
            t.contains(&format!("{a} . ipencap . {INTERNET}"))
                && t.contains(&format!("{a} . ipv6 . {INTERNET}"))
        },
    );
    let t = tunnels();
    assert!(!t.contains(&bare(&victim["address"])), "{t}");
}

/// The table-full behaviour: 100,000 one-datagram flows from one peer, then the victim's
/// BitTorrent connection under a block policy is still named and cut.
#[test]
#[ignore = "needs root"]
fn a_flood_of_flows_from_one_peer_leaves_the_victims_bittorrent_blocked() {
    let config = "[inspection]\npolicy = { bittorrent = \"block\" }\n";
    let (mut nl, d, _victim) = setup("q", Some(config));
    let (att, attacker) = attacker(&mut nl, &d);
    let dir = nl.lab.dir.path().to_path_buf();
    std::fs::write(dir.join("attack.py"), ATTACK).unwrap();
    let script = dir.join("attack.py").display().to_string();
    let start = Instant::now();
    let out = nl.lab.exec(
        &att,
        &["python3", &script, "-", "flood", INTERNET, "100000"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flood_secs = start.elapsed().as_secs_f64();
    let metrics = || {
        let m = nl
            .lab
            .exec(&nl.srv, &["curl", "-s", "http://127.0.0.1:3000/metrics"]);
        String::from_utf8_lossy(&m.stdout).to_string()
    };
    let value = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Wait until the capture has caught up with the flood: evictions stop growing.
    let (mut seen, mut steady) = (0, 0);
    wait_for("the flood in the capture", Duration::from_secs(60), || {
        let now = value(&metrics(), "waylume_capture_evicted_flows_total");
        steady = if now == seen { steady + 1 } else { 0 };
        seen = now;
        seen > 0 && steady >= 10
    });
    let client = dir.join("client.py").display().to_string();
    let out = nl.lab.exec(
        &nl.cli,
        &["python3", &client, INTERNET, "bittorrent-session"],
    );
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let m = metrics();
    eprintln!(
        "flood: 100000 flows in {flood_secs:.1} s; evicted {}, kernel drops {}; victim's BitTorrent: {got}",
        value(&m, "waylume_capture_evicted_flows_total"),
        value(
            &m,
            "waylume_capture_dropped_packets_total{where=\"kernel\"}"
        ),
    );
    assert_eq!(
        got, "cut",
        "the victim's BitTorrent connection is blocked\n{m}"
    );
    assert!(seen > 0, "the flood evicted the flooder's own flows\n{m}");
    let a = protocols(&d, &attacker);
    assert!(a.get("bittorrent").is_none(), "{a}");
}
